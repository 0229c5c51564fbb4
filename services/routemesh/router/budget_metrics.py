"""routemesh_budget_limit_usd and routemesh_budget_remaining_usd: the policy's budgets as the ledger has them.

The ledger is read by a loop task every few seconds (common.metrics.LoopReadings: one status call over every
account, a single Lua script with Redis), never by a scrape and never per request. A budget names one tenant
(and maybe one project) or "*" for each: its accounts are the fixed one and those of the tenants and projects
requests drew on (RouterMetrics.accounts). `remaining` is the least any of its accounts has left this period,
the one an alert wants; a budget no request has drawn on yet shows its whole limit.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import GaugeMetricFamily

from routemesh.common.policy_watch import PolicyHolder
from routemesh.router.admission.budget import BudgetLedger, BudgetScope, BudgetStatus
from routemesh.router.admission.guard import budget_scopes
from routemesh.router.decision.compiled import RoutingPolicy


class BudgetReadings:
    """Reads the budgets' accounts from the ledger (`read`, on the loop) and reports the last reading (`collect`)."""

    def __init__(self, holder: PolicyHolder[RoutingPolicy], ledger: BudgetLedger, accounts: set[tuple[str, str]]):
        self.holder = holder
        self.ledger = ledger
        self.accounts = accounts
        # budget name -> (limit, least remaining) at the last reading
        self.last: dict[str, tuple[float, float]] = {}

    def scopes(self, policy: RoutingPolicy) -> list[BudgetScope]:
        """Every account of the policy's budgets that is known: fixed ones, and those requests drew on."""
        keys = policy.request_keys
        pairs = {(b.tenant, b.project or "") for b in policy.budgets if b.tenant != "*" and b.project != "*"}
        pairs.update(list(self.accounts))
        found: dict[str, BudgetScope] = {}
        for tenant, project in pairs:
            metadata = {keys.tenant: tenant, keys.project: project} if project else {keys.tenant: tenant}
            for scope in budget_scopes(policy, metadata):
                found.setdefault(scope.account, scope)
        return list(found.values())

    async def read(self) -> dict[str, tuple[float, float]] | None:
        """Each budget's (limit, least remaining); None before the router holds a policy."""
        policy = self.holder.current
        if policy is None:
            return None
        scopes = self.scopes(policy)
        statuses = await self.ledger.status(scopes) if scopes else {}
        self.last = remaining_by_budget(policy.budgets, scopes, statuses)
        return self.last

    def collect(self) -> list[GaugeMetricFamily]:
        limit = GaugeMetricFamily("routemesh_budget_limit_usd", "A budget's limit per period, USD", labels=["budget"])
        left = GaugeMetricFamily("routemesh_budget_remaining_usd", "What a budget has left this period, USD (per "
                                 "tenant budgets: its account with the least left)", labels=["budget"])
        for name, (cap, remaining) in list(self.last.items()):
            limit.add_metric([name], cap)
            left.add_metric([name], remaining)
        return [limit, left]


def remaining_by_budget(budgets: Iterable, scopes: Iterable[BudgetScope],
                        statuses: dict[str, BudgetStatus]) -> dict[str, tuple[float, float]]:
    """Per budget name: (its limit, the least remaining among its accounts with a status; else the limit)."""
    out = {b.name: (b.limit_usd, b.limit_usd) for b in budgets}
    for scope in scopes:
        status = statuses.get(scope.account)
        if status is not None and scope.budget in out:
            cap, least = out[scope.budget]
            out[scope.budget] = (cap, min(least, status.remaining_usd))
    return out
