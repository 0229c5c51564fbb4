"""The routing engine: every strategy and filter, table-driven, plus invariants as properties."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routemesh.common.errors import InvalidRequest, NoEligibleModel, NotFound
from routemesh.common.policy import load_default_policy_text, parse_policy
from routemesh.router.decision.compiled import RoutingPolicy
from routemesh.router.decision.planner import (
    DecisionState,
    ModelHealthView,
    RoutingFeatures,
    RoutingOptionsView,
    assign_variant,
    plan_request,
)

NOW = 1_800_000_000_000
DEFAULT = parse_policy(load_default_policy_text())

# Four models: cheap/fast/weak to pricey/slow/strong, plus one with a long context and a data class.
TEST_POLICY = parse_policy("""
providers:
  p1: {base_url: http://127.0.0.1:1/v1}
  p2: {base_url: http://127.0.0.1:2/v1}
models:
  tiny:   {provider: p1, upstream_model: t, pricing: {input_per_mtok: 0.1, output_per_mtok: 0.2},
           context_window: 8000, quality: {default: 0.4, code: 0.2}, weight: 3,
           latency_prior: {ttft_ms: 50, tpot_ms: 5}}
  mid:    {provider: p1, upstream_model: m, pricing: {input_per_mtok: 1.0, output_per_mtok: 2.0},
           context_window: 32000, quality: {default: 0.7, code: 0.8}, capabilities: [streaming, tools],
           weight: 1, latency_prior: {ttft_ms: 150, tpot_ms: 10}}
  big:    {provider: p2, upstream_model: b, pricing: {input_per_mtok: 10.0, output_per_mtok: 30.0},
           context_window: 128000, quality: {default: 0.9, code: 0.95}, capabilities: [streaming, tools, vision],
           data_classes: [confidential], limits: {rpm: 100}, latency_prior: {ttft_ms: 600, tpot_ms: 30}}
  long:   {provider: p2, upstream_model: l, pricing: {input_per_mtok: 0.5, output_per_mtok: 1.0},
           context_window: 1000000, quality: 0.6, latency_prior: {ttft_ms: 300, tpot_ms: 15}}
tenants:
  small-co: {allowed_models: [tiny, mid]}
routes:
  auto:
    strategy: hybrid
    models: [tiny, mid, big, long]
    fallbacks: [mid, big]
    weights: {cost: 1, latency: 0, quality: 0, load: 0}
    rules:
      - {name: vip, when: {metadata: {tier: vip}}, model: big}
      - {name: refactor, when: {keywords: [refactor]}, models: [mid, big], strategy: quality}
      - {name: sql, when: {regex: "\\\\bSELECT\\\\b.+\\\\bFROM\\\\b"}, models: [mid]}
  latency-route:
    strategy: latency
    latency: {percentile: p90, tolerance: 0.2, explore_rate: 0}
    models: [tiny, mid, big]
  quality-route: {strategy: quality, quality: {threshold: 0.15}, models: [tiny, mid, big, long]}
  ordered-route: {strategy: ordered, models: [big, mid, tiny]}
  wr-route: {strategy: weighted_random, models: [tiny, mid]}
  rr-route: {strategy: round_robin, models: [tiny, mid, long]}
  lif-route: {strategy: least_in_flight, models: [tiny, mid, long]}
  lr-route: {strategy: least_recent, models: [tiny, mid, long]}
  ab:
    models: [tiny, mid]
    strategy: cost
    experiment:
      name: exp
      sticky_key: user
      variants: [{name: a, weight: 70}, {name: b, weight: 30, models: [mid]}]
""")

SMALL = RoutingFeatures(input_tokens=100)


def plan(route="auto", features=SMALL, *, policy=TEST_POLICY, max_tokens=100, metadata=None, health=None,
         options=None, text="", state=None, **kw):
    return plan_request(RoutingPolicy(policy), features, route, max_tokens, metadata or {}, health or {},
                        options=options or RoutingOptionsView(),
                        text=text, state=state or DecisionState(seed=1), now_ms=NOW, **kw)


def fresh(ttft, tpot=1.0, samples=50, **kw):
    return ModelHealthView(samples=samples, ttft_p50_ms=ttft, ttft_p90_ms=ttft, ttft_p99_ms=ttft,
                           tpot_p50_ms=tpot, tpot_p99_ms=tpot, last_observation_ms=NOW - 1000, **kw)


# ---- strategies ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("route", "expected"), [
    ("auto", ["tiny", "long", "mid", "big"]),            # hybrid with cost weight only = cheapest first
    ("ordered-route", ["big", "mid", "tiny"]),
    # quality: the best is big (0.9); threshold 0.15 admits quality >= 0.75 (big alone); the rest by quality.
    ("quality-route", ["big", "mid", "long", "tiny"]),
])
def test_static_strategies(route, expected):
    assert plan(route).models == expected


def test_cost_strategy_uses_expected_output_per_task():
    result = plan("auto", options=RoutingOptionsView(strategy="cost"))
    costs = [c.estimated_cost_usd for c in result.candidates if c.eligible]
    assert costs == sorted(costs)


def test_quality_strategy_per_task_score():
    code = RoutingFeatures(input_tokens=100, task_type="code")
    result = plan("quality-route", features=code, options=RoutingOptionsView())
    # For code mid scores 0.8, within 0.15 of big's 0.95, and is cheaper; for chat it is not (0.7 vs 0.9).
    assert result.primary == "mid"
    assert plan("quality-route").primary == "big"
    factors = {c.model: c.factors["quality_score"] for c in result.candidates}
    assert factors["tiny"] == 0.2 and factors["big"] == 0.95


def test_latency_uses_live_percentiles_and_tolerance_band():
    health = {"tiny": fresh(400), "mid": fresh(100), "big": fresh(110)}
    result = plan("latency-route", health=health)
    # mid and big are within 20% of each other: the cheaper (mid) wins; tiny is slowest.
    assert result.models == ["mid", "big", "tiny"]


def test_latency_moves_away_from_a_slowed_model():
    before = plan("latency-route", health={"tiny": fresh(50), "mid": fresh(100), "big": fresh(300)})
    after = plan("latency-route", health={"tiny": fresh(900), "mid": fresh(100), "big": fresh(300)})
    assert before.primary == "tiny" and after.primary == "mid"


def test_latency_stale_numbers_fall_back_to_priors():
    stale = {"tiny": ModelHealthView(samples=50, ttft_p50_ms=5000, ttft_p90_ms=5000, last_observation_ms=NOW - 3_600_000)}
    assert plan("latency-route", health=stale).primary == "tiny"  # prior 50 ms, not the hour-old 5 s


def test_latency_explores_unmeasured_models_at_the_configured_rate():
    policy = parse_policy(load_default_policy_text())
    health = {"fast-cheap": fresh(50), "balanced": fresh(400)}  # long-context has no numbers
    state = DecisionState(seed=3)
    primaries = Counter(plan("fast", policy=policy, health=health, state=state).primary for _ in range(2000))
    explored = primaries["long-context"] / 2000
    assert 0.01 < explored < 0.06  # explore_rate 0.05 of the default "fast" route (one of one unknown model)


def test_weighted_random_follows_weights():
    state = DecisionState(seed=7)
    primaries = Counter(plan("wr-route", state=state).primary for _ in range(4000))
    assert abs(primaries["tiny"] / 4000 - 0.75) < 0.03


def test_round_robin_cycles():
    state = DecisionState(seed=1)
    assert [plan("rr-route", state=state).primary for _ in range(6)] == ["tiny", "mid", "long"] * 2


def test_least_in_flight_and_least_recent():
    health = {"tiny": fresh(10, in_flight=9, requests_per_minute=1), "mid": fresh(10, in_flight=1, requests_per_minute=50),
              "long": fresh(10, in_flight=5, requests_per_minute=20)}
    assert plan("lif-route", health=health).primary == "mid"
    assert plan("lr-route", health=health).primary == "tiny"


def test_hybrid_weights_trade_off_factors():
    policy = DEFAULT
    result = plan("auto", policy=policy, features=RoutingFeatures(input_tokens=30, task_type="chat"))
    scores = {c.model: c.score for c in result.candidates if c.eligible}
    assert result.primary == max(scores, key=scores.get)
    assert set(result.candidates[0].factors) >= {"cost", "latency", "quality", "load"}


# ---- rules --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "rule", "primary"), [
    ({"metadata": {"tier": "vip"}}, "vip", "big"),
    ({"text": "please refactor this module"}, "refactor", "big"),
    ({"text": "SELECT name FROM users"}, "sql", "mid"),
    ({"text": "hello"}, "", "tiny"),
])
def test_rules_select_model_pool_or_strategy(kwargs, rule, primary):
    result = plan("auto", **kwargs)
    assert (result.rule, result.primary) == (rule, primary)


def test_default_policy_rules():
    cases = [
        # No rule: the cheap model while its predicted success is close enough to the strong one's ...
        (RoutingFeatures(input_tokens=20, task_type="question_answering",
                         predicted_success={"fast-cheap": 0.85, "strong": 0.90}), {}, "", "fast-cheap"),
        (RoutingFeatures(input_tokens=60, task_type="chat",
                         predicted_success={"fast-cheap": 0.70, "strong": 0.75}), {}, "", "fast-cheap"),
        # ... the strong one when the gap is wider than the calibrated threshold, or with only the static table.
        (RoutingFeatures(input_tokens=20, task_type="math",
                         predicted_success={"fast-cheap": 0.40, "strong": 0.80}), {}, "", "strong"),
        (RoutingFeatures(input_tokens=20, task_type="question_answering"), {}, "", "strong"),
        (RoutingFeatures(input_tokens=80, task_type="code", has_code=True), {}, "code", "balanced"),
        (RoutingFeatures(input_tokens=900, task_type="summarization"), {}, "long-form", "long-context"),
        (RoutingFeatures(input_tokens=50_000, task_type="summarization"), {}, "long-input", "long-context"),
        (RoutingFeatures(input_tokens=30), {"tier": "premium"}, "premium-tier", "strong"),
    ]
    for features, metadata, rule, primary in cases:
        result = plan("auto", policy=DEFAULT, features=features, metadata=metadata, max_tokens=0)
        assert (result.rule, result.primary) == (rule, primary), features


# ---- filters ------------------------------------------------------------------------------------------

def rejected(result):
    return {c.model: c.rejection_reason for c in result.candidates if not c.eligible}


@pytest.mark.parametrize(("kwargs", "model", "why"), [
    ({"features": RoutingFeatures(input_tokens=20_000)}, "tiny", "context window"),
    ({"options": RoutingOptionsView(required_capabilities=("tools",))}, "tiny", "lacks capability tools"),
    ({"options": RoutingOptionsView(required_capabilities=("vision",))}, "mid", "lacks capability vision"),
    ({"metadata": {"data_class": "confidential"}}, "tiny", "not cleared"),
    ({"metadata": {"tenant": "small-co"}}, "big", "not allowed for tenant"),
    ({"health": {"tiny": fresh(10, error_rate=0.9)}}, "tiny", "unhealthy"),
    ({"health": {"tiny": ModelHealthView(circuit_open=True)}}, "tiny", "circuit open"),
    ({"health": {"big": fresh(10, requests_per_minute=100)}}, "big", "rate limit"),
    ({"options": RoutingOptionsView(max_cost_usd=0.0001)}, "big", "max_cost"),
    ({"options": RoutingOptionsView(latency_target_ms=200)}, "big", "target"),
])
def test_filters_reject_with_a_reason(kwargs, model, why):
    result = plan("auto", **kwargs)
    assert model not in result.models
    assert why in rejected(result)[model]


def test_confidential_request_only_reaches_cleared_models():
    result = plan("auto", metadata={"data_class": "confidential"})
    assert result.models == ["big"]


def test_nothing_eligible_names_every_reason():
    with pytest.raises(NoEligibleModel) as err:
        plan("auto", features=RoutingFeatures(input_tokens=5_000_000))
    assert set(err.value.metadata) == {"tiny", "mid", "big", "long"}


# ---- per-request control ------------------------------------------------------------------------------

def test_pinned_model_never_goes_elsewhere_even_when_unhealthy():
    result = plan("big", health={"big": fresh(10, error_rate=1.0)})
    assert result.models == ["big"] and result.strategy == "pinned"


def test_pinned_model_that_cannot_serve_fails_unless_fallback_allowed():
    with pytest.raises(NoEligibleModel):
        plan("tiny", features=RoutingFeatures(input_tokens=20_000))
    result = plan("tiny", features=RoutingFeatures(input_tokens=20_000),
                  options=RoutingOptionsView(allow_fallback=True))
    assert result.models == ["mid", "big"]


def test_provider_pin():
    result = plan("auto", options=RoutingOptionsView(provider="p2"))
    assert set(result.models) <= {"big", "long"}
    with pytest.raises(NotFound):
        plan("auto", options=RoutingOptionsView(provider="nope"))


def test_strategy_override_and_validation():
    assert plan("ordered-route", options=RoutingOptionsView(strategy="cost")).primary == "tiny"
    with pytest.raises(InvalidRequest) as err:
        plan("auto", options=RoutingOptionsView(strategy="fastest-please"))
    assert err.value.field_violations[0][0] == "routing.strategy"


def test_budget_soft_limit_switches_to_cheapest():
    result = plan("ordered-route", budget_soft=True)
    assert result.primary == "tiny" and result.budget_soft_limited
    assert "soft limit" in result.reason


def test_sticky_model_goes_first_when_route_is_sticky():
    result = plan("chat", policy=DEFAULT, sticky_model="long-context", max_tokens=0)
    assert result.primary == "long-context" and "sticky" in result.reason


def test_unknown_model_and_negative_max_tokens():
    with pytest.raises(NotFound):
        plan("gpt-17")
    with pytest.raises(InvalidRequest):
        plan("auto", max_tokens=-1)


# ---- experiments --------------------------------------------------------------------------------------

def test_experiment_split_is_weighted_and_sticky():
    state = DecisionState(seed=5)
    counts = Counter(plan("ab", metadata={"user": f"u{i}"}, state=state).variant for i in range(5000))
    assert abs(counts["a"] / 5000 - 0.7) < 0.03
    assert {plan("ab", metadata={"user": "alice"}, state=state).variant for _ in range(20)} == {
        assign_variant(TEST_POLICY.routes["ab"].experiment, {"user": "alice"}, state.rng).name}
    b = next(plan("ab", metadata={"user": f"x{i}"}) for i in range(100)
             if plan("ab", metadata={"user": f"x{i}"}).variant == "b")
    assert b.models == ["mid"] and b.experiment == "exp"


# ---- invariants ---------------------------------------------------------------------------------------

features_st = st.builds(
    RoutingFeatures, input_tokens=st.integers(1, 200_000),
    task_type=st.sampled_from(["chat", "code", "math", "summarization", "translation", "extraction",
                               "creative_writing", "question_answering"]),
    complexity=st.floats(0, 1), has_code=st.booleans())
health_st = st.dictionaries(
    st.sampled_from(["tiny", "mid", "big", "long"]),
    st.builds(ModelHealthView, samples=st.integers(0, 100), error_rate=st.floats(0, 1),
              ttft_p50_ms=st.floats(1, 5000), ttft_p90_ms=st.floats(1, 5000), tpot_p50_ms=st.floats(0, 100),
              requests_per_minute=st.integers(0, 200), tokens_per_minute=st.integers(0, 10**6),
              in_flight=st.integers(0, 50), last_observation_ms=st.integers(NOW - 600_000, NOW),
              circuit_open=st.booleans()))


@settings(max_examples=200, deadline=None)
@given(features=features_st, health=health_st, max_tokens=st.integers(1, 8000))
def test_cost_never_picks_a_pricier_eligible_model(features, health, max_tokens):
    try:
        result = plan("auto", features=features, health=health, max_tokens=max_tokens,
                      options=RoutingOptionsView(strategy="cost"))
    except NoEligibleModel:
        return
    costs = {c.model: c.estimated_cost_usd for c in result.candidates}
    pool = [m for m in result.models if m in TEST_POLICY.routes["auto"].models]
    assert result.primary == pool[0]
    assert costs[result.primary] == min(costs[m] for m in pool)


@settings(max_examples=200, deadline=None)
@given(features=features_st, health=health_st, model=st.sampled_from(["tiny", "mid", "big", "long"]))
def test_a_pinned_request_never_goes_elsewhere(features, health, model):
    try:
        result = plan(model, features=features, health=health, max_tokens=100)
    except NoEligibleModel:
        return
    assert result.models == [model]


@settings(max_examples=200, deadline=None)
@given(features=features_st, health=health_st, route=st.sampled_from(list(TEST_POLICY.routes)))
def test_an_exhausted_limit_or_open_circuit_is_never_chosen(features, health, route):
    try:
        result = plan(route, features=features, health=health, max_tokens=100, state=DecisionState(seed=0))
    except NoEligibleModel:
        return
    for name in result.models:
        h = health.get(name)
        model = TEST_POLICY.models[name]
        if h is not None:
            assert not h.circuit_open
            assert not (model.limits.rpm and h.requests_per_minute >= model.limits.rpm)
        assert model.context_window >= features.input_tokens + 100


def test_recovering_model_gets_only_its_admitted_share_of_first_places():
    state = DecisionState(seed=11)
    health = {"tiny": ModelHealthView(admit_fraction=0.2, circuit_half_open=True)}
    firsts = Counter(plan("ordered-route", health={"big": health["tiny"]}, state=state).primary for _ in range(2000))
    assert abs(firsts["big"] / 2000 - 0.2) < 0.04
    assert plan("big", health={"big": health["tiny"]}).models == ["big"]  # a pin is still honoured
