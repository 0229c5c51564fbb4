"""A chat through every hop of a real mesh: decision, deltas, final; explain; failover; bad input."""

from __future__ import annotations

import time

import grpc
import pytest

from routemesh.client import AsyncRouterClient, RouterClient, RoutemeshError
from routemesh.v1 import common_pb2, router_pb2

pytestmark = pytest.mark.integration


def events_of(router_address: str, prompt: str, **options) -> list[router_pb2.ChatResponse]:
    with RouterClient(router_address, timeout=30) as client:
        return list(client.chat(prompt, **options))


def test_stream_is_decision_then_deltas_then_final(router_address):
    events = events_of(router_address, "What are your opening hours on Sunday?")
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[0] == "decision"
    assert kinds[-1] == "final"
    assert set(kinds[1:-1]) == {"delta"}
    decision, final = events[0].decision, events[-1].final
    assert decision.model == "fast-cheap"
    assert decision.fallbacks
    assert decision.features.source == "classifier"
    assert decision.features.task_type != common_pb2.TASK_TYPE_UNSPECIFIED
    assert decision.policy_version >= 1
    assert final.status == common_pb2.FINISH_STATUS_COMPLETE
    assert final.model == "fast-cheap"
    assert final.decision_id == decision.decision_id
    assert final.usage.input_tokens > 0 and final.usage.output_tokens > 0
    assert not final.usage.estimated
    assert final.cost_usd > 0
    assert [a.outcome for a in final.attempts] == [common_pb2.ATTEMPT_OUTCOME_SUCCESS]
    text = "".join(e.delta.text for e in events if e.WhichOneof("event") == "delta")
    assert len(text.split()) >= 5


def test_code_goes_to_a_stronger_model_and_explain_agrees(router_address):
    prompt = "Write a Python function that merges two sorted lists.\n```python\ndef merge(a, b):\n    pass\n```"
    with RouterClient(router_address) as client:
        explained = client.explain(prompt)
        result = client.complete(prompt)
    assert explained.decision.model == result.decision.model == "balanced"
    assert "rule 'code'" in explained.decision.reason
    ranked = [c for c in explained.decision.candidates if c.eligible]
    assert [c.model for c in ranked] == [explained.decision.model, *explained.decision.fallbacks]
    assert [c.rank for c in ranked] == list(range(1, len(ranked) + 1))
    rejected = [c for c in explained.decision.candidates if not c.eligible]
    assert all(c.rejection_reason for c in rejected)


def test_max_tokens_cap_reports_length(router_address):
    with RouterClient(router_address) as client:
        result = client.complete("Tell me a long story about a lighthouse keeper.", max_tokens=5)
    assert result.final.status == common_pb2.FINISH_STATUS_LENGTH
    assert result.final.usage.output_tokens == 5


def test_pinned_model_and_named_route(router_address):
    with RouterClient(router_address) as client:
        pinned = client.complete("Hello there", model="strong")
        routed = client.complete("Hello there", model="premium")
    assert pinned.decision.strategy == "pinned" and pinned.final.model == "strong"
    assert not pinned.decision.fallbacks
    assert routed.decision.route == "premium" and routed.final.model == "strong"


def test_failover_before_first_token(router_address, sim):
    sim.patch("sim-fast", outage=True)
    with RouterClient(router_address) as client:
        result = client.complete("How do I reset my password?")
    assert result.final.status == common_pb2.FINISH_STATUS_COMPLETE
    plan = [result.decision.model, *result.decision.fallbacks]
    assert [a.model for a in result.final.attempts] == plan[:2]
    first, second = result.final.attempts
    assert first.model == "fast-cheap"
    assert first.outcome == common_pb2.ATTEMPT_OUTCOME_UPSTREAM_ERROR and first.http_status == 503
    assert second.outcome == common_pb2.ATTEMPT_OUTCOME_SUCCESS
    assert result.final.model == second.model


def test_every_candidate_failing_is_a_status_with_details(router_address, sim):
    sim.patch("sim-strong", outage=True)
    with RouterClient(router_address) as client, pytest.raises(RoutemeshError) as err:
        client.complete("hi", model="strong")
    assert err.value.code == grpc.StatusCode.UNAVAILABLE
    assert err.value.reason == "ALL_CANDIDATES_FAILED"
    assert err.value.metadata["attempt.1"].startswith("strong:")


@pytest.mark.parametrize(
    ("kwargs", "code", "field"),
    [
        ({"prompt": []}, grpc.StatusCode.INVALID_ARGUMENT, "messages"),
        ({"prompt": "hi", "model": "gpt-17"}, grpc.StatusCode.NOT_FOUND, "model"),
        ({"prompt": "hi", "max_tokens": -3}, grpc.StatusCode.INVALID_ARGUMENT, "max_tokens"),
        ({"prompt": "hi", "temperature": 9.0}, grpc.StatusCode.INVALID_ARGUMENT, "temperature"),
        ({"prompt": [common_pb2.Message(content="no role")]}, grpc.StatusCode.INVALID_ARGUMENT, "messages[0].role"),
    ],
)
def test_bad_input_gets_a_clear_status_and_the_mesh_stays_up(router_address, mesh, kwargs, code, field):
    prompt = kwargs.pop("prompt")
    with RouterClient(router_address) as client:
        with pytest.raises(RoutemeshError) as err:
            client.complete(prompt, **kwargs)
        assert err.value.code == code
        assert field in [f for f, _ in err.value.field_violations]
        assert "Traceback" not in err.value.message
        assert client.complete("still there?").final.status == common_pb2.FINISH_STATUS_COMPLETE
    assert mesh.dead() == []


def test_context_too_long_for_every_model_is_failed_precondition(router_address):
    with RouterClient(router_address) as client, pytest.raises(RoutemeshError) as err:
        client.complete("word " * 10, model="fast-cheap", max_tokens=100_000)
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert err.value.reason == "NO_ELIGIBLE_MODEL"


async def test_async_client_concurrent_streams(router_address):
    import asyncio

    async with AsyncRouterClient(router_address) as client:
        results = await asyncio.gather(*(client.complete(f"Question number {i}?") for i in range(20)))
    assert all(r.final.status == common_pb2.FINISH_STATUS_COMPLETE for r in results)
    assert len({r.decision.decision_id for r in results}) == 20


def test_observations_reach_telemetry_in_redis(router_address, mesh, redis_prefix):
    import redis as redis_lib

    from routemesh.v1 import telemetry_pb2, telemetry_pb2_grpc
    from tests.integration.conftest import REDIS_URL

    with RouterClient(router_address) as client:
        for _ in range(3):
            client.complete("What time is it in Tokyo?")
    deadline = time.monotonic() + 5
    with grpc.insecure_channel(mesh.layout.address("telemetry")) as channel:
        stub = telemetry_pb2_grpc.TelemetryServiceStub(channel)
        while True:
            snap = stub.GetSnapshot(telemetry_pb2.GetSnapshotRequest(models=["fast-cheap"]), timeout=2)
            health = snap.models[0]
            if health.samples >= 3 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert health.samples >= 3
    assert health.ttft_p50_ms > 0
    assert health.input_price_per_mtok == 0.10
    assert health.requests_per_minute >= 3
    keys = list(redis_lib.Redis.from_url(REDIS_URL).scan_iter(match=redis_prefix + "*"))
    assert keys, "telemetry should keep its state in Redis under the test prefix"
