"""Replay's pieces: a ledger row back into the planner's inputs, decided again, summarized."""

from __future__ import annotations

import json

from routemesh.common.policy import PolicyVersion, load_default_policy_text, parse_policy
from routemesh.replay import features_of, health_of, replay_row, summarize
from routemesh.router.decision.compiled import RoutingPolicy
from routemesh.router.decision.planner import DecisionState


def compiled(text: str) -> RoutingPolicy:
    return RoutingPolicy.compile(PolicyVersion(policy=parse_policy(text), version=0, digest="x"))


def row(**fields):
    base = {"decision_id": "d1", "ended_at_ms": 1_764_892_800_000, "tenant": "acme", "project": "", "user_id": "",
            "route": "auto", "chosen_model": "strong", "serving_model": "strong",
            "features": json.dumps({"input_tokens": 900, "task_type": "TASK_TYPE_CHAT", "language": "en",
                                    "complexity": 0.2, "predicted_success": {"fast-cheap": 0.5, "strong": 0.9}}),
            "candidates": json.dumps([{"model": "strong", "factors": {"samples": 40, "error_rate": 0.5,
                                                                       "in_flight": 2}}]),
            "input_tokens": 900, "output_tokens": 300, "cost_usd": 0.004}
    return {**base, **fields}


def test_a_row_gives_back_the_planners_inputs() -> None:
    features = features_of(row())
    assert (features.input_tokens, features.task_type, features.language) == (900, "chat", "en")
    assert features.predicted_success == {"fast-cheap": 0.5, "strong": 0.9}
    health = health_of(row())
    assert (health["strong"].samples, health["strong"].error_rate, health["strong"].in_flight) == (40, 0.5, 2)


def test_replay_prices_the_new_choice_on_the_rows_tokens_and_says_why_it_refuses() -> None:
    text = load_default_policy_text()
    policy = compiled(text)
    replayed = replay_row(policy, row(), DecisionState(seed=0))
    assert replayed.new_model and not replayed.refused
    new = policy.models[replayed.new_model]
    assert replayed.new_cost == 900 * new.in_price + 300 * new.out_price
    assert replayed.old_quality == 0.9  # the recorded prediction for strong
    gone = replay_row(policy, row(route="no-such-route"), DecisionState(seed=0))
    assert gone.refused.startswith("UNKNOWN_MODEL") and not gone.new_model
    summary = summarize([replayed, gone], top=5)
    assert summary["routes"]["auto"]["requests"] == 1 and summary["routes"]["no-such-route"]["refused"] == 1
    assert summary["top_changes"][0]["refused"]  # refusals first: they change most
