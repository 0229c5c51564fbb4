"""The routing decision, on the shipped default policy and on small hand-made ones."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routemesh.common.errors import InvalidRequest, NoEligibleModel, NotFound
from routemesh.common.policy import load_default_policy_text, parse_policy
from routemesh.router.planner import ModelHealthView, RoutingFeatures, plan_request

POLICY = parse_policy(load_default_policy_text())


def plan(features: RoutingFeatures, model: str = "auto", max_tokens: int = 0, metadata=None, health=None):
    return plan_request(POLICY, features, model, max_tokens, metadata or {}, health or {})


@pytest.mark.parametrize(
    ("features", "metadata", "primary", "rule"),
    [
        (RoutingFeatures(input_tokens=20, task_type="question_answering"), {}, "fast-cheap", ""),
        (RoutingFeatures(input_tokens=20, task_type="chat"), {}, "fast-cheap", ""),
        (RoutingFeatures(input_tokens=80, task_type="code", has_code=True), {}, "balanced", "code-and-math"),
        (RoutingFeatures(input_tokens=40, task_type="math"), {}, "balanced", "code-and-math"),
        (RoutingFeatures(input_tokens=900, task_type="summarization"), {}, "long-context", "long-form"),
        (RoutingFeatures(input_tokens=50_000, task_type="summarization"), {}, "long-context", "long-input"),
        (RoutingFeatures(input_tokens=30, task_type="chat", complexity=0.9), {}, "strong", "hard-problems"),
        (RoutingFeatures(input_tokens=30, task_type="chat"), {"tier": "premium"}, "strong", "premium-tier"),
    ],
)
def test_rules_then_cheapest(features, metadata, primary, rule):
    result = plan(features, metadata=metadata)
    assert result.primary == primary
    assert result.rule == rule
    assert result.route == "auto"
    expected = next((r.strategy for r in POLICY.routes["auto"].rules if r.name == rule), None) or "cheapest"
    assert result.strategy == f"rules+{expected}"


def test_plan_always_carries_fallbacks_for_auto():
    result = plan(RoutingFeatures(input_tokens=20))
    assert result.fallbacks, "auto routes must carry fallbacks"
    assert len(set(result.models)) == len(result.models)


def test_pinned_model_is_the_whole_plan_even_when_unhealthy():
    sick = {"strong": ModelHealthView(samples=100, error_rate=0.9)}
    result = plan(RoutingFeatures(input_tokens=20), model="strong", health=sick)
    assert result.models == ["strong"]
    assert result.strategy == "pinned"


def test_route_by_name():
    result = plan(RoutingFeatures(input_tokens=20), model="premium")
    assert result.models == ["strong", "balanced"]
    assert result.strategy == "rules+ordered"


def test_unhealthy_model_is_skipped_with_reason():
    sick = {"fast-cheap": ModelHealthView(samples=50, error_rate=0.8)}
    result = plan(RoutingFeatures(input_tokens=20), health=sick)
    assert "fast-cheap" not in result.models
    rejected = {c.model: c.rejection_reason for c in result.candidates if not c.eligible}
    assert "unhealthy" in rejected["fast-cheap"]


def test_few_samples_do_not_trip_the_health_gate():
    result = plan(RoutingFeatures(input_tokens=20), health={"fast-cheap": ModelHealthView(samples=3, error_rate=1.0)})
    assert result.primary == "fast-cheap"


def test_context_window_filters_and_explains():
    result = plan(RoutingFeatures(input_tokens=70_000, task_type="chat"))
    rejected = {c.model: c.rejection_reason for c in result.candidates if not c.eligible}
    assert "context window" in rejected["balanced"]
    assert all(POLICY.models[m].context_window >= 70_000 + 512 for m in result.models)


def test_nothing_fits_is_a_clear_error():
    with pytest.raises(NoEligibleModel) as err:
        plan(RoutingFeatures(input_tokens=5_000_000))
    assert "context window" in str(err.value)


def test_pinned_model_too_small_fails_rather_than_moving():
    with pytest.raises(NoEligibleModel):
        plan(RoutingFeatures(input_tokens=20_000), model="fast-cheap")


def test_unknown_model_names_what_exists():
    with pytest.raises(NotFound) as err:
        plan(RoutingFeatures(input_tokens=20), model="gpt-9")
    assert err.value.field_violations[0][0] == "model"
    assert "auto" in err.value.metadata["routes"]


def test_negative_max_tokens_is_invalid():
    with pytest.raises(InvalidRequest):
        plan(RoutingFeatures(input_tokens=20), max_tokens=-1)


def test_default_max_tokens_from_policy():
    assert plan(RoutingFeatures(input_tokens=20)).max_tokens == POLICY.defaults.max_tokens


@given(
    tokens=st.integers(min_value=1, max_value=150_000),
    task=st.sampled_from(["chat", "code", "math", "summarization", "translation", "extraction",
                          "creative_writing", "question_answering"]),
    complexity=st.floats(min_value=0, max_value=1),
    max_tokens=st.integers(min_value=1, max_value=4096),
)
def test_cheapest_route_orders_pool_by_cost_and_every_choice_fits(tokens, task, complexity, max_tokens):
    features = RoutingFeatures(input_tokens=tokens, task_type=task, complexity=complexity)
    try:
        result = plan(features, max_tokens=max_tokens)
    except NoEligibleModel:
        return
    for name in result.models:
        model = POLICY.models[name]
        assert model.context_window >= tokens + max_tokens
        assert model.max_output_tokens >= max_tokens
    route = POLICY.routes["auto"]
    rule = next((r for r in route.rules if r.name == result.rule), None)
    pool = set(rule.models if rule else route.models)
    costs = {c.model: c.estimated_cost_usd for c in result.candidates}
    eligible_pool = [m for m in result.models if m in pool]
    if eligible_pool:
        assert result.primary == eligible_pool[0]
        if result.strategy == "rules+cheapest":
            assert costs[result.primary] == min(costs[m] for m in eligible_pool)
        else:
            order = list(rule.models if rule else route.models)
            assert eligible_pool == sorted(eligible_pool, key=order.index)
