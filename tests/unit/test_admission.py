"""Admission returns a new plan: rate-limited and unaffordable models leave it, the planned one is untouched."""

from __future__ import annotations

import pytest

from routemesh.common.errors import BudgetExhausted, RateLimited
from routemesh.common.policy import parse_policy
from routemesh.router.admission.budget import InMemoryBudgetLedger
from routemesh.router.admission.guard import SpendGuard
from routemesh.router.admission.ratelimit import InMemoryRateLimiter
from routemesh.router.decision.compiled import RoutingPolicy
from routemesh.router.decision.planner import RoutingFeatures, plan_request

# Also the pipeline tests' policy (tests/unit/test_pipeline.py).
POLICY_DOCUMENT = parse_policy("""
providers:
  p: {base_url: http://127.0.0.1:1/v1}
models:
  cheap:  {provider: p, upstream_model: c, context_window: 8000, limits: {rpm: 1},
           pricing: {input_per_mtok: 1, output_per_mtok: 1}}
  pricey: {provider: p, upstream_model: x, context_window: 8000,
           pricing: {input_per_mtok: 1000, output_per_mtok: 1000}}
budgets:
  - {name: small, tenant: "*", limit_usd: 0.05}
routes:
  auto: {strategy: cost, models: [cheap, pricey]}
""")
POLICY = RoutingPolicy(POLICY_DOCUMENT)


def _plan(tenant: str = ""):
    return plan_request(POLICY, RoutingFeatures(input_tokens=10), "auto", 100, {"tenant": tenant} if tenant else {}, {})


async def test_a_rate_limited_model_leaves_a_new_plan_and_the_planned_one_is_unchanged():
    guard = SpendGuard(InMemoryBudgetLedger(), InMemoryRateLimiter())
    plan = _plan()
    first = await guard.admit(POLICY, plan, 10, {})
    assert first.plan is plan and first.admission.dropped == {}
    second = await guard.admit(POLICY, plan, 10, {})  # cheap's one request per minute is taken
    assert second.plan is not plan
    assert second.plan.models == ["pricey"] and plan.models == ["cheap", "pricey"]
    assert "skipped cheap (rate limit:" in second.plan.reason and "skipped" not in plan.reason


async def test_a_budget_keeps_only_the_models_it_can_afford():
    guard = SpendGuard(InMemoryBudgetLedger(), InMemoryRateLimiter())
    plan = _plan("acme")
    admitted = await guard.admit(POLICY, plan, 10, {"tenant": "acme"})
    assert admitted.plan.models == ["cheap"] and set(admitted.admission.dropped) == {"pricey"}
    assert admitted.admission.reservation is not None
    await guard.settle(admitted.admission, 0.0001, 20)


async def test_nothing_left_raises_with_the_reason():
    guard = SpendGuard(InMemoryBudgetLedger(), InMemoryRateLimiter())
    plan = _plan("acme")
    await guard.admit(POLICY, plan, 10, {"tenant": "acme"})
    with pytest.raises((RateLimited, BudgetExhausted)):
        await guard.admit(POLICY, plan, 10, {"tenant": "acme"})


async def test_an_api_keys_own_rate_limit_and_budget_apply_on_top_of_its_tenants():
    from routemesh.router.admission.guard import KeyQuota

    guard = SpendGuard(InMemoryBudgetLedger(), InMemoryRateLimiter())
    plan = plan_request(POLICY, RoutingFeatures(input_tokens=10), "auto", 100, {}, {})
    limited = KeyQuota("k1", rpm=1)
    assert SpendGuard.applies(POLICY, plan, {}, limited)
    await guard.admit(POLICY, plan, 10, {}, limited)
    with pytest.raises(RateLimited) as raised:
        await guard.admit(POLICY, plan, 10, {}, limited)
    assert raised.value.message.startswith("the API key is over its rate limit")
    assert raised.value.metadata == {"limit": "key:k1"}
    # A key's budget is an account of its own: nothing affordable under $0.000001 a month.
    poor = KeyQuota("k2", budget_usd=0.000001)
    with pytest.raises(BudgetExhausted) as raised:
        await guard.admit(POLICY, plan_request(POLICY, RoutingFeatures(input_tokens=10), "auto", 100, {}, {}), 10, {},
                          poor)
    assert raised.value.metadata["budget"] == "api-key" and raised.value.metadata["account"] == "key=k2"
