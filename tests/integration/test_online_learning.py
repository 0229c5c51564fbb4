"""Online correction on a real mesh: feedback on a model that answers a task badly moves that task's traffic
away within a few events, shared through Redis, and exploration keeps to its budget."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import yaml

from routemesh.client import RouterClient
from routemesh.common.policy import load_default_policy_text
from routemesh.mesh import Mesh, MeshLayout
from routemesh.v1 import common_pb2
from tests.integration.conftest import REDIS_URL, SIM_TIME_SCALE

pytestmark = pytest.mark.integration
PROMPT = "Tell me something nice about the weather today."
# Static quality: strong 0.9, balanced 0.8. With prior_weight 20, three zeros bring strong to 18/23 = 0.78.
EVENTS_TO_SWITCH = 3
EXPLORATION = 0.2


def learning_policy() -> str:
    doc = yaml.safe_load(load_default_policy_text())
    doc.pop("quality_predictor", None)
    for model in doc["models"].values():
        model.pop("predicted_as", None)
    doc["models"]["strong"]["quality"] = 0.9
    doc["models"]["balanced"]["quality"] = 0.8
    for name, exploration in (("learn", 0.0), ("explore", EXPLORATION)):
        doc["routes"][name] = {"strategy": "quality", "models": ["strong", "balanced"],
                               "learning": {"prior_weight": 20, "exploration": exploration}}
    doc["routes"]["auto"] = {"strategy": "quality", "models": ["strong", "balanced"]}
    return yaml.safe_dump(doc)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory, redis_prefix) -> Iterator[Mesh]:
    policy = tmp_path_factory.mktemp("learning") / "policy.yaml"
    policy.write_text(learning_policy())
    ledger = tmp_path_factory.mktemp("learning-ledger") / "ledger.db"
    started = Mesh(MeshLayout.free(), policy=str(policy), redis_url=REDIS_URL,
                   redis_prefix=f"{redis_prefix}learning:", sim_time_scale=SIM_TIME_SCALE,
                   log_dir=tmp_path_factory.mktemp("learning-logs"),
                   extra_args={"telemetry": ["--ledger-url", f"sqlite:///{ledger}"],
                               "router": ["--health-interval-ms", "200"]})
    started.start()
    yield started
    started.stop()


def chosen(client: RouterClient, route: str) -> str:
    return client.explain(PROMPT, model=route).decision.model


def test_bad_feedback_moves_a_tasks_traffic_away_and_exploration_keeps_to_its_budget(mesh) -> None:
    with RouterClient(mesh.layout.address("router")) as client:
        assert chosen(client, "learn") == "strong"
        for _ in range(EVENTS_TO_SWITCH):
            answer = client.complete(PROMPT, model="learn")
            assert answer.final.model == "strong"
            client.feedback(answer.decision.decision_id, thumbs="down", label="unhelpful")
        deadline = time.monotonic() + 10  # signals reach routers in the pushed snapshot
        while chosen(client, "learn") != "balanced":
            assert time.monotonic() < deadline, f"still strong after {EVENTS_TO_SWITCH} thumbs down"
            time.sleep(0.1)
        decision = client.explain(PROMPT, model="learn").decision
        strong = next(c for c in decision.candidates if c.model == "strong")
        assert strong.factors["quality_signals"] == EVENTS_TO_SWITCH
        assert strong.factors["quality_prior"] == pytest.approx(0.9)
        assert strong.factors["quality_score"] == pytest.approx(18 / 23, abs=1e-6)

        # The same signals, with exploration: a bounded share of decisions ranks by a posterior sample.
        decisions = [client.explain(PROMPT, model="explore").decision for _ in range(300)]
    sampled = sum(any(c.factors.get("quality_sampled") for c in d.candidates) for d in decisions)
    back_on_strong = sum(d.model == "strong" for d in decisions)
    # 3 standard deviations over the budget at 300 draws.
    assert sampled / 300 <= EXPLORATION + 3 * (EXPLORATION * (1 - EXPLORATION) / 300) ** 0.5
    assert 0 < back_on_strong <= sampled, (back_on_strong, sampled)


def test_a_model_whose_answers_the_provider_cuts_short_loses_the_tasks_traffic_by_itself(mesh) -> None:
    """No feedback here: the simulated provider cuts strong's streams, each cut answer is a 0 for its task."""
    from tests.integration.conftest import SimAdmin

    sim = SimAdmin(mesh.layout.sim_url)
    prompt = "Write a short poem about the sea."
    with RouterClient(mesh.layout.address("router")) as client:
        task = client.explain(prompt, model="learn").decision.features.task_type
        assert client.explain(prompt, model="learn").decision.model == "strong"
        sim.patch("sim-strong", fault="cut", fault_rate=1.0)
        try:
            sent = 0
            while client.explain(prompt, model="learn").decision.model == "strong":
                sent += 1
                assert sent <= 10, "strong still chosen after 10 answers cut short"
                answer = client.complete(prompt, model="learn")
                assert answer.final.model == "strong" and answer.final.status in (
                    common_pb2.FINISH_STATUS_TRUNCATED_UPSTREAM, common_pb2.FINISH_STATUS_FAILED)
                time.sleep(0.5)  # the signal reaches the router with the next pushed snapshot
        finally:
            sim.reset()
    assert task != common_pb2.TASK_TYPE_UNSPECIFIED and 1 <= sent <= 10
