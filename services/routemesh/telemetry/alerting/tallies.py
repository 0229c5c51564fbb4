"""What alerting keeps of request summaries: requests and failovers per route, spend per budget account."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime

from routemesh.common.policy_schema import Policy
from routemesh.router.admission.budget import BudgetScope
from routemesh.router.admission.guard import budget_scopes

# The longest failover window a rule may ask for (FailoverRateRule.window_s).
MAX_WINDOW_S = 3600
# Tenant/project pairs remembered for "*" budgets; past it new pairs are not tracked (a bound on memory).
MAX_ACCOUNTS = 10_000


class FailoverTally:
    """Per route, per second: requests and those that needed more than one attempt (a failover)."""

    def __init__(self, horizon_s: int = MAX_WINDOW_S):
        self.horizon_s = horizon_s
        # route -> [second, requests, failovers] oldest first
        self._seconds: dict[str, deque[list[int]]] = {}

    def add(self, route: str, failover: bool, now_s: int) -> None:
        seconds = self._seconds.get(route)
        if seconds is None:
            seconds = self._seconds[route] = deque()
        if seconds and seconds[-1][0] == now_s:
            seconds[-1][1] += 1
            seconds[-1][2] += failover
        else:
            seconds.append([now_s, 1, int(failover)])
            while seconds[0][0] <= now_s - self.horizon_s:
                seconds.popleft()

    def counts(self, route: str, window_s: float, now_s: int) -> tuple[int, int]:
        """(requests, failovers) of the last `window_s` seconds."""
        requests = failovers = 0
        for second, n, failed in reversed(self._seconds.get(route, ())):
            if second <= now_s - window_s:
                break
            requests += n
            failovers += failed
        return requests, failovers

    def routes(self) -> list[str]:
        return list(self._seconds)


class SpendTally:
    """Spend per budget account in its current period, summed from the request summaries this replica received.

    Every tenant/project pair seen is remembered, so budgets for "*" know which accounts exist.
    """

    def __init__(self, max_accounts: int = MAX_ACCOUNTS):
        self.max_accounts = max_accounts
        self.pairs: set[tuple[str, str]] = set()
        # (account, period id) -> USD
        self._spent: dict[tuple[str, str], float] = {}

    def add(self, policy: Policy, tenant: str, project: str, cost_usd: float, now: datetime) -> None:
        if not tenant or not policy.budgets:
            return
        pair = (tenant, project)
        if pair not in self.pairs and len(self.pairs) < self.max_accounts:
            self.pairs.add(pair)
        if cost_usd <= 0:
            return
        for scope in scopes_for(policy, tenant, project):
            key = (scope.account, scope.period_id(now))
            self._spent[key] = self._spent.get(key, 0.0) + cost_usd

    def spent(self, scope: BudgetScope, now: datetime) -> float:
        return self._spent.get((scope.account, scope.period_id(now)), 0.0)

    def prune(self, scopes: Sequence[BudgetScope], now: datetime) -> None:
        """Forget the sums of past periods and of accounts no longer in the policy."""
        current = {(scope.account, scope.period_id(now)) for scope in scopes}
        self._spent = {key: usd for key, usd in self._spent.items() if key in current}


def scopes_for(policy: Policy, tenant: str, project: str) -> list[BudgetScope]:
    """The policy's budget accounts a request of `tenant` and `project` draws on (the router's own rule)."""
    keys = policy.request_keys
    metadata = {keys.tenant: tenant, keys.project: project} if project else {keys.tenant: tenant}
    # budget_scopes reads the policy's request_keys and budgets only, which the schema's Policy has too.
    return budget_scopes(policy, metadata)  # type: ignore[arg-type]


def known_scopes(policy: Policy, pairs: set[tuple[str, str]]) -> list[BudgetScope]:
    """Every account of the policy's budgets that is known: the fixed ones, and those of the pairs seen."""
    fixed = {(b.tenant, b.project or "") for b in policy.budgets if b.tenant != "*" and b.project != "*"}
    found: dict[str, BudgetScope] = {}
    for tenant, project in fixed | pairs:
        for scope in scopes_for(policy, tenant, project):
            found.setdefault(scope.account, scope)
    return list(found.values())


def utc(now_ms: int) -> datetime:
    return datetime.fromtimestamp(now_ms / 1000, UTC)
