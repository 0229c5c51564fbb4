"""Circuit breaker state in telemetry: derived from the shared samples, fresh after failures, same everywhere."""

from __future__ import annotations

import time
from uuid import uuid4

import pytest

from routemesh.common.circuit import CLOSED_VIEW, CircuitView
from routemesh.common.outcomes import AttemptOutcome, CircuitState
from routemesh.common.policy_schema import CircuitSettings
from routemesh.router.clients.health import health_view
from routemesh.telemetry.redis_store import RedisHealthStore
from routemesh.telemetry.servicer import circuit_history_shortfalls
from routemesh.telemetry.store import InMemoryHealthStore, ModelStats, SnapshotCache
from routemesh.v1 import common_pb2, telemetry_pb2
from tests.unit.test_telemetry_service import observation, running_telemetry
from tests.unit.test_telemetry_store import NOW, REDIS_URL, delete_keys, finished, require_redis


@pytest.fixture(params=["memory", "redis"])
async def store(request):
    """A store with the production snapshot cache (200 ms), so a stale answer would show."""
    if request.param == "memory":
        yield InMemoryHealthStore()
        return
    await require_redis()
    prefix = f"rmtest:{uuid4().hex}:"
    redis_store = RedisHealthStore(REDIS_URL, prefix=prefix)
    try:
        yield redis_store
    finally:
        await redis_store.close()
        await delete_keys(prefix)


async def test_failures_reported_over_grpc_open_the_circuit_at_once(store):
    failures = [common_pb2.ATTEMPT_OUTCOME_UPSTREAM_ERROR, common_pb2.ATTEMPT_OUTCOME_RATE_LIMITED,
                common_pb2.ATTEMPT_OUTCOME_TIMEOUT, common_pb2.ATTEMPT_OUTCOME_CONNECT_ERROR,
                common_pb2.ATTEMPT_OUTCOME_TRUNCATED]
    async with running_telemetry(store) as (stub, _):
        await stub.Report(telemetry_pb2.ReportRequest(observations=[
            observation("fast-cheap", ttft=10.0, outcome=common_pb2.ATTEMPT_OUTCOME_SUCCESS)]))
        request = telemetry_pb2.GetSnapshotRequest(models=["fast-cheap", "strong"])
        [before, _] = (await stub.GetSnapshot(request)).models
        assert (before.circuit_state, before.admit_fraction) == (telemetry_pb2.CIRCUIT_STATE_CLOSED, 1.0)

        # Four failures do not trip it (the default is 5 in a row); a cancellation does not break the streak.
        await stub.Report(telemetry_pb2.ReportRequest(observations=[
            observation("fast-cheap", outcome=outcome) for outcome in failures[:4]]))
        await stub.Report(telemetry_pb2.ReportRequest(observations=[
            observation("fast-cheap", outcome=common_pb2.ATTEMPT_OUTCOME_CANCELLED)]))
        [closed, _] = (await stub.GetSnapshot(request)).models
        assert (closed.circuit_state, closed.consecutive_failures) == (telemetry_pb2.CIRCUIT_STATE_CLOSED, 4)

        reported_at = time.time_ns() // 1_000_000
        await stub.Report(telemetry_pb2.ReportRequest(observations=[observation("fast-cheap", outcome=failures[4])]))
        snapshot = await stub.GetSnapshot(request)
        [cheap, strong] = snapshot.models
        assert cheap.circuit_state == telemetry_pb2.CIRCUIT_STATE_OPEN, "the cached closed answer was served"
        assert (cheap.admit_fraction, cheap.consecutive_failures) == (0.0, 5)
        assert reported_at + 5000 <= cheap.circuit_open_until_ms <= snapshot.taken_at_ms + 5000
        assert (strong.circuit_state, strong.admit_fraction) == (telemetry_pb2.CIRCUIT_STATE_CLOSED, 1.0)


async def test_replicas_agree_on_the_circuit_even_for_results_in_the_same_millisecond():
    await require_redis()
    prefix = f"rmtest:{uuid4().hex}:"
    one, two = (RedisHealthStore(REDIS_URL, prefix=prefix, cache_ttl_s=0) for _ in range(2))
    memory = InMemoryHealthStore(cache_ttl_s=0)
    # Arrival order decides: the fifth failure comes before the success stamped with the same millisecond.
    batches = [(one, [finished("m", NOW - 5000 + i * 10, AttemptOutcome.UPSTREAM_ERROR) for i in range(4)]),
               (two, [finished("m", NOW - 4000, AttemptOutcome.RATE_LIMITED)]),
               (one, [finished("m", NOW - 4000), finished("m", NOW - 3000, AttemptOutcome.CANCELLED)])]
    try:
        for writer, batch in batches:
            await writer.record(batch)
            await memory.record(batch)
        views = [(await reader.snapshot(["m"], NOW))["m"].circuit for reader in (one, two, memory)]
        assert views == [CircuitView(CircuitState.OPEN, NOW - 4000 + 5000, 0.0, 0)] * 3
        assert [(await reader.snapshot(["m"], NOW + 2000))["m"].circuit.state
                for reader in (one, two, memory)] == [CircuitState.HALF_OPEN] * 3
    finally:
        await one.close()
        await two.close()
        await delete_keys(prefix)


async def test_snapshot_uses_the_circuit_settings_it_is_given(store):
    await store.record([finished("m", NOW - 1000 + i, AttemptOutcome.TIMEOUT) for i in range(2)])
    assert (await store.snapshot(["m"], NOW))["m"].circuit == CircuitView(CircuitState.CLOSED, 0, 1.0, 2)
    strict = CircuitSettings(consecutive_failures=2, open_s=10)
    opened = CircuitView(CircuitState.OPEN, NOW - 999 + 10_000, 0.0, 2)
    assert (await store.snapshot(["m"], NOW, strict))["m"].circuit == opened
    assert (await store.snapshot(["never-seen"], NOW, strict))["never-seen"] == ModelStats(model="never-seen")
    assert ModelStats(model="x").circuit == CLOSED_VIEW


async def test_skipped_and_lost_attempts_are_neither_errors_nor_circuit_results(store):
    ignored = [AttemptOutcome.HEDGE_LOST, AttemptOutcome.CIRCUIT_OPEN, AttemptOutcome.RETRY_BUDGET_EXHAUSTED,
               AttemptOutcome.CANCELLED]
    await store.record([finished("m", NOW - 1000, outcome) for outcome in ignored * 3])
    await store.record([finished("m", NOW - 900), finished("m", NOW - 800, AttemptOutcome.CONFIG_ERROR)])
    stats = (await store.snapshot(["m"], NOW))["m"]
    assert (stats.samples, stats.error_rate) == (14, 0.5)
    assert stats.circuit == CLOSED_VIEW, "a config error is the policy's fault, not the deployment's"


def test_invalidated_cache_refuses_answers_computed_before():
    cache = SnapshotCache(ttl_s=10)
    started = cache.generation
    cache.put(("m",), NOW, {"m": ModelStats(model="m")})
    cache.invalidate()
    assert cache.get(("m",), NOW) is None
    cache.put(("m",), NOW, {"m": ModelStats(model="m", samples=1)}, started)
    assert cache.get(("m",), NOW) is None, "a read begun before the failures were written is not kept"
    cache.put(("m",), NOW, {"m": ModelStats(model="m", samples=2)}, cache.generation)
    assert cache.get(("m",), NOW) == {"m": ModelStats(model="m", samples=2)}


def test_short_telemetry_window_is_reported():
    assert circuit_history_shortfalls(CircuitSettings(), 300) == []
    problems = circuit_history_shortfalls(CircuitSettings(window_s=120, max_open_s=600), 60)
    assert [p.split(" (")[0] for p in problems] == ["health.circuit.window_s", "health.circuit.max_open_s"]


def test_router_reads_the_circuit_fields():
    states = {telemetry_pb2.CIRCUIT_STATE_OPEN: (True, False), telemetry_pb2.CIRCUIT_STATE_HALF_OPEN: (False, True),
              telemetry_pb2.CIRCUIT_STATE_CLOSED: (False, False)}
    for state, (is_open, half_open) in states.items():
        view = health_view(telemetry_pb2.ModelHealth(model="m", circuit_state=state, admit_fraction=0.25))
        assert (view.circuit_open, view.circuit_half_open, view.admit_fraction) == (is_open, half_open, 0.25)
    older = health_view(telemetry_pb2.ModelHealth(model="m"))
    assert (older.circuit_open, older.circuit_half_open, older.admit_fraction) == (False, False, 1.0)
