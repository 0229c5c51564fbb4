"""Budgets and rate limits around one request: soft state before planning, admit before the call, settle after."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from routemesh.common.errors import BudgetExhausted, RateLimited
from routemesh.common.policy_schema import Budget
from routemesh.router.admission.budget import BudgetExceeded, BudgetLedger, BudgetScope, BudgetUnavailable, Reservation
from routemesh.router.admission.ratelimit import RateLimit, RateLimiter
from routemesh.router.decision.compiled import RoutingPolicy
from routemesh.router.decision.planner import Plan

log = logging.getLogger(__name__)
# Reservations assume the input estimate may be this much too low, so actual cost never exceeds them.
INPUT_ESTIMATE_MARGIN = 1.5


@dataclass(frozen=True, slots=True)
class KeyQuota:
    """The limits of the API key a request was made with (0: none of its own), on top of its tenant's."""

    key_id: str
    rpm: int = 0
    tpm: int = 0
    budget_usd: float = 0.0
    period: Literal["day", "month"] = "month"

    @property
    def limit(self) -> RateLimit | None:
        return RateLimit(key=f"key:{self.key_id}", rpm=self.rpm, tpm=self.tpm) if self.rpm or self.tpm else None

    @property
    def scope(self) -> BudgetScope | None:
        if not self.budget_usd:
            return None
        return BudgetScope(budget="api-key", key=f"key={self.key_id}", period=self.period, limit_usd=self.budget_usd)


def budget_scopes(policy: RoutingPolicy, metadata: Mapping[str, str], quota: KeyQuota | None = None) -> list[BudgetScope]:
    """The budget accounts a request draws on: its tenant's (none when it names no tenant) and its key's."""
    keys = policy.request_keys
    tenant = metadata.get(keys.tenant, "")
    project = metadata.get(keys.project, "")
    scopes = [quota.scope] if quota is not None and quota.scope is not None else []
    for budget in policy.budgets:
        key = _account_key(budget, tenant, project)
        if key:
            scopes.append(BudgetScope(budget=budget.name, key=key, period=budget.period,
                                      limit_usd=budget.limit_usd, soft_limit_fraction=budget.soft_limit_fraction))
    return scopes


def _account_key(budget: Budget, tenant: str, project: str) -> str:
    if not tenant or budget.tenant not in ("*", tenant):
        return ""
    if budget.project is None:
        return f"tenant={tenant}"
    if not project or budget.project not in ("*", project):
        return ""
    return f"tenant={tenant}/project={project}"


@dataclass
class Admission:
    """What admit() took: a budget reservation and rate-limit counts, to settle after the call."""

    @property
    def took(self) -> bool:
        """Whether there is anything to settle."""
        return self.reservation is not None or bool(self.limits)

    reservation: Reservation | None = None
    limits: list[RateLimit] = field(default_factory=list)
    estimated_tokens: int = 0
    dropped: dict[str, str] = field(default_factory=dict)  # model -> why it was skipped
    unchecked: list[str] = field(default_factory=list)  # "rate_limits", "budgets": failed open


@dataclass(frozen=True)
class Admitted:
    """The plan that passed admission (models skipped for limits or budgets removed) and what it took."""

    plan: Plan
    admission: Admission


def without(plan: Plan, dropped: Mapping[str, str]) -> Plan:
    """The plan minus the dropped models, its reason saying why each was skipped."""
    if not dropped:
        return plan
    return dataclasses.replace(
        plan, models=[m for m in plan.models if m not in dropped],
        reason=plan.reason + "; skipped " + ", ".join(f"{m} ({why})" for m, why in dropped.items()))


class SpendGuard:
    """Budgets fail closed (by the ledger's setting); rate limits fail open; both are shared through Redis."""

    def __init__(self, ledger: BudgetLedger, limiter: RateLimiter):
        self.ledger = ledger
        self.limiter = limiter

    @staticmethod
    def applies(policy: RoutingPolicy, plan: Plan, metadata: Mapping[str, str], quota: KeyQuota | None = None) -> bool:
        """Whether admission has anything to check for this plan: a rate limit or a budget it draws on."""
        tenant = policy.tenants.get(metadata.get(policy.request_keys.tenant, ""))
        if tenant is not None and (tenant.limits.rpm or tenant.limits.tpm):
            return True
        if quota is not None and (quota.limit is not None or quota.scope is not None):
            return True
        models = policy.models
        return any(models[m].rpm or models[m].tpm for m in plan.models) or bool(budget_scopes(policy, metadata))

    async def soft_limited(self, policy: RoutingPolicy, metadata: Mapping[str, str],
                           quota: KeyQuota | None = None) -> bool:
        scopes = budget_scopes(policy, metadata, quota)
        if not scopes:
            return False
        statuses = await self.ledger.status(scopes)
        return any(s.soft_limited for s in statuses.values())

    async def admit(self, policy: RoutingPolicy, plan: Plan, input_tokens: int,
                    metadata: Mapping[str, str], quota: KeyQuota | None = None) -> Admitted:
        """Take rate-limit slots and reserve budget; skip rate-limited or unaffordable models; raise when none is left."""
        admission = Admission(estimated_tokens=input_tokens + plan.max_tokens)
        models = await self._take_rate_limits(policy, plan, metadata, admission, quota)
        scopes = budget_scopes(policy, metadata, quota)
        if scopes:
            models = await self._reserve(policy, plan.max_tokens, models, input_tokens, scopes, admission)
        return Admitted(without(plan, admission.dropped), admission)

    async def _take_rate_limits(self, policy: RoutingPolicy, plan: Plan, metadata: Mapping[str, str],
                                admission: Admission, quota: KeyQuota | None = None) -> list[str]:
        """The first model (in plan order) with headroom takes its slots; the ones before it are skipped."""
        tenant_name = metadata.get(policy.request_keys.tenant, "")
        tenant = policy.tenants.get(tenant_name)
        # The caller's own limits (its tenant's, its API key's) go with every model's; hitting one refuses the request.
        caller_limits = []
        if tenant and (tenant.limits.rpm or tenant.limits.tpm):
            caller_limits = [RateLimit(key=f"tenant:{tenant_name}", rpm=tenant.limits.rpm, tpm=tenant.limits.tpm)]
        if quota is not None and quota.limit is not None:
            caller_limits.append(quota.limit)
        last_retry: float | None = None
        for i, model in enumerate(plan.models):
            spec = policy.models[model]
            model_limit = [RateLimit(key=f"model:{model}", rpm=spec.rpm, tpm=spec.tpm)] if spec.rpm or spec.tpm else []
            wanted = caller_limits + model_limit
            if not wanted:
                return plan.models[i:]
            decision = await self.limiter.acquire(wanted, admission.estimated_tokens)
            if decision.allowed:
                admission.limits = wanted
                if decision.unchecked:
                    admission.unchecked.append("rate_limits")
                return plan.models[i:]
            if decision.key.startswith(("tenant:", "key:")):
                who = f"tenant {tenant_name!r}" if decision.key.startswith("tenant:") else "the API key"
                raise RateLimited(f"{who} is over its rate limit: {decision.reason}",
                                  metadata={"limit": decision.key}, retry_after_s=decision.retry_after_s)
            admission.dropped[model] = f"rate limit: {decision.reason}"
            last_retry = decision.retry_after_s
        raise RateLimited("every candidate model is over its rate limit: "
                          + "; ".join(f"{m}: {why}" for m, why in admission.dropped.items()),
                          metadata=dict(admission.dropped), retry_after_s=last_retry)

    async def _reserve(self, policy: RoutingPolicy, max_tokens: int, models: list[str], input_tokens: int,
                       scopes: list[BudgetScope], admission: Admission) -> list[str]:
        """Reserve the worst case of the models left; when that does not fit, keep only the models that do."""
        worst = {m: policy.models[m].estimated_cost(int(input_tokens * INPUT_ESTIMATE_MARGIN) + 1, max_tokens)
                 for m in models}
        for attempt in range(2):
            try:
                admission.reservation = await self.ledger.reserve(scopes, max(worst[m] for m in models))
                if admission.reservation.unchecked:
                    admission.unchecked.append("budgets")
                return models
            except BudgetUnavailable as exc:
                await self._give_back(admission)
                raise BudgetExhausted(f"budgets cannot be checked right now ({exc}); refusing (fail closed)",
                                      reason="BUDGET_UNAVAILABLE") from None
            except BudgetExceeded as exc:
                affordable = [m for m in models if worst[m] <= exc.status.remaining_usd]
                if attempt == 1 or not affordable:
                    await self._give_back(admission)
                    raise BudgetExhausted(str(exc), metadata={"budget": exc.scope.budget,
                                                              "account": exc.scope.key}) from None
                # Pricier models leave the plan so the cheaper ones can still be served within the budget.
                for m in models:
                    if m not in affordable:
                        admission.dropped[m] = f"budget {exc.scope.budget!r}: worst case ${worst[m]:.6f} " \
                                               f"> ${exc.status.remaining_usd:.6f} left"
                models = affordable
        return models

    async def _give_back(self, admission: Admission) -> None:
        for limit in admission.limits:
            await self.limiter.adjust_tokens(limit, -admission.estimated_tokens)

    async def settle(self, admission: Admission, cost_usd: float, tokens_used: int) -> None:
        """Charge the actual cost and correct the token estimate."""
        if admission.reservation is not None:
            await self.ledger.settle(admission.reservation, cost_usd)
        delta = tokens_used - admission.estimated_tokens
        if delta:
            for limit in admission.limits:
                if limit.tpm:
                    await self.limiter.adjust_tokens(limit, delta)

    async def close(self) -> None:
        await self.ledger.close()
        await self.limiter.close()
