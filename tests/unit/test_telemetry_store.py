"""The HealthStore behaviours, run against the in-memory store and RedisHealthStore alike."""

from __future__ import annotations

import asyncio
import os
import random
import time
from uuid import uuid4

import pytest
import redis.asyncio as aioredis

from routemesh.common.outcomes import AttemptOutcome, FinishStatus, ObservationPhase
from routemesh.telemetry.experiments import RequestSummaryRecord, VariantStatsRecord
from routemesh.telemetry.redis_store import RedisHealthStore
from routemesh.telemetry.store import (
    InMemoryHealthStore,
    ModelStats,
    ObservationRecord,
    StoreUnavailable,
)
from routemesh.v1 import common_pb2

REDIS_URL = os.environ.get("ROUTEMESH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# A minute boundary, so "now" below sits mid-minute and no case straddles a bucket by accident.
T0 = 1_800_000_000_000
NOW = T0 + 30_000


def finished(model: str, ts: int, outcome: int = AttemptOutcome.SUCCESS, ttft: float = 0.0, tpot: float = 0.0,
             tokens: tuple[int, int] = (0, 0), cost: float = 0.0) -> ObservationRecord:
    return ObservationRecord(model=model, timestamp_ms=ts, phase=ObservationPhase.FINISHED, outcome=outcome,
                             ttft_ms=ttft, tpot_ms=tpot, input_tokens=tokens[0], output_tokens=tokens[1],
                             cost_usd=cost)


def started(model: str, ts: int) -> ObservationRecord:
    return ObservationRecord(model=model, timestamp_ms=ts, phase=ObservationPhase.STARTED,
                             outcome=AttemptOutcome.UNSPECIFIED)


def request(experiment: str, variant: str, ts: int, status: int = FinishStatus.COMPLETE, model: str = "m",
            ttft: float = 0.0, duration: float = 0.0, cost: float = 0.0) -> RequestSummaryRecord:
    return RequestSummaryRecord(experiment=experiment, variant=variant, timestamp_ms=ts, status=status,
                                model=model, ttft_ms=ttft, duration_ms=duration, cost_usd=cost,
                                decision_id=uuid4().hex, route="auto", tenant="acme")


async def require_redis() -> None:
    client = aioredis.Redis.from_url(REDIS_URL, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        await client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means no Redis to test against
        pytest.fail(f"Redis is required at {REDIS_URL} (set ROUTEMESH_TEST_REDIS_URL): {exc}")
    finally:
        await client.aclose()


async def redis_keys(prefix: str) -> dict[str, int]:
    """Every key under the prefix with its TTL in seconds."""
    client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        return {key: await client.ttl(key) async for key in client.scan_iter(match=f"{prefix}*", count=500)}
    finally:
        await client.aclose()


async def delete_keys(prefix: str) -> None:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=500)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
async def redis_prefix():
    await require_redis()
    prefix = f"rmtest:{uuid4().hex}:"
    yield prefix
    await delete_keys(prefix)


@pytest.fixture(params=["memory", "redis"])
async def new_store(request):
    """A factory of stores of one kind; Redis stores share one unique prefix, deleted afterwards."""
    kind = request.param
    prefix = f"rmtest:{uuid4().hex}:"
    if kind == "redis":
        await require_redis()
    created = []

    def factory(**kwargs):
        kwargs.setdefault("cache_ttl_s", 0)
        store = (InMemoryHealthStore(**kwargs) if kind == "memory"
                 else RedisHealthStore(REDIS_URL, prefix=prefix, **kwargs))
        created.append(store)
        return store

    yield factory
    for store in created:
        await store.close()
    if kind == "redis":
        await delete_keys(prefix)


@pytest.fixture
def store(new_store):
    return new_store(window_s=300)


async def test_percentiles_count_only_successes_with_a_first_token(store):
    good = [finished("m", NOW - 1000 - i, ttft=float(i), tpot=i / 10) for i in range(1, 102)]
    random.Random(7).shuffle(good)
    failed = [finished("m", NOW - 500, AttemptOutcome.UPSTREAM_ERROR, ttft=10_000.0) for _ in range(5)]
    no_token = [finished("m", NOW - 400, ttft=0.0) for _ in range(3)]
    await store.record(good + failed + no_token)
    stats = (await store.snapshot(["m"], NOW))["m"]
    assert stats.samples == 109
    assert stats.ttft_p50_ms == pytest.approx(51.0)
    assert stats.ttft_p90_ms == pytest.approx(91.0)
    assert stats.ttft_p99_ms == pytest.approx(100.0)
    assert stats.tpot_p50_ms == pytest.approx(5.1)
    assert stats.tpot_p99_ms == pytest.approx(10.0)
    assert stats.error_rate == pytest.approx(5 / 109)
    assert not stats.stale


async def test_window_expires_old_observations(store):
    await store.record([finished("m", NOW - 400_000, AttemptOutcome.TIMEOUT, ttft=1000.0) for _ in range(10)])
    await store.record([finished("m", NOW - 100_000, ttft=10.0) for _ in range(4)])
    now = (await store.snapshot(["m"], NOW))["m"]
    assert (now.samples, now.error_rate, now.ttft_p50_ms) == (4, 0.0, pytest.approx(10.0))
    later = (await store.snapshot(["m"], NOW + 250_000))["m"]
    assert (later.samples, later.ttft_p99_ms) == (0, 0.0)
    earlier = (await store.snapshot(["m"], NOW - 200_000))["m"]
    assert (earlier.samples, earlier.error_rate) == (10, 1.0)


async def test_window_keeps_at_most_the_last_500_finished(store):
    await store.record([finished("m", NOW - 10_000 + i, ttft=float(i)) for i in range(1, 601)])
    stats = (await store.snapshot(["m"], NOW))["m"]
    assert stats.samples == 500
    assert stats.ttft_p50_ms == pytest.approx(350.5)


async def test_error_rate_counts_failures_but_not_cancellations(store):
    outcomes = [AttemptOutcome.SUCCESS] * 6 + [AttemptOutcome.RATE_LIMITED, AttemptOutcome.TIMEOUT,
                                               AttemptOutcome.CONNECT_ERROR]
    outcomes += [AttemptOutcome.CANCELLED] * 5
    await store.record([finished("m", NOW - 1000, outcome, ttft=50.0) for outcome in outcomes])
    stats = (await store.snapshot(["m"], NOW))["m"]
    assert stats.samples == 14
    assert stats.error_rate == pytest.approx(3 / 9)


async def test_in_flight_goes_up_and_down_and_never_below_zero(store):
    await store.record([started("m", NOW - 3000) for _ in range(3)])
    assert (await store.snapshot(["m"], NOW))["m"].in_flight == 3
    await store.record([finished("m", NOW - 2000)])
    assert (await store.snapshot(["m"], NOW))["m"].in_flight == 2
    await store.record([finished("m", NOW - 1000) for _ in range(3)])
    assert (await store.snapshot(["m"], NOW))["m"].in_flight == 0


async def test_in_flight_spans_minutes_and_leaks_decay(store):
    await store.record([started("m", T0 + 59_000), finished("m", T0 + 61_000)])
    assert (await store.snapshot(["m"], T0 + 62_000))["m"].in_flight == 0
    await store.record([started("leaky", NOW)])
    assert (await store.snapshot(["leaky"], NOW + 5 * 60_000))["leaky"].in_flight == 1
    assert (await store.snapshot(["leaky"], NOW + 11 * 60_000))["leaky"].in_flight == 0


async def test_per_minute_counters_cover_the_last_60_seconds(store):
    starts = [NOW - 70_000, NOW - 60_000, NOW - 59_000, NOW - 30_000, NOW - 30_000, NOW]
    await store.record([started("m", ts) for ts in starts])
    await store.record([finished("m", NOW - 30_000, tokens=(100, 50)),
                        finished("m", NOW - 90_000, tokens=(1000, 0))])
    stats = (await store.snapshot(["m"], NOW))["m"]
    assert stats.requests_per_minute == 4
    assert stats.tokens_per_minute == 150


async def test_spend_per_minute_and_total(store):
    await store.record([finished("a", NOW - 120_000, cost=0.25), finished("a", NOW - 10_000, cost=0.5),
                        finished("a", NOW - 5000, cost=0.125), finished("b", NOW - 5000, cost=2.0)])
    stats = await store.snapshot(["a", "b"], NOW)
    assert stats["a"].spend_per_minute_usd == pytest.approx(0.625)
    assert stats["a"].spend_total_usd == pytest.approx(0.875)
    assert stats["b"].spend_total_usd == pytest.approx(2.0)


async def test_last_observation_is_the_newest_finished_in_the_window(store):
    await store.record([finished("m", NOW - 5000), finished("m", NOW - 1000, AttemptOutcome.CANCELLED),
                        finished("m", NOW - 3000, AttemptOutcome.TIMEOUT), started("m", NOW - 500)])
    assert (await store.snapshot(["m"], NOW))["m"].last_observation_ms == NOW - 1000
    assert (await store.snapshot(["m"], NOW + 400_000))["m"].last_observation_ms == 0


async def test_experiment_counts_errors_cost_and_model_mix_per_variant(store):
    statuses = [FinishStatus.COMPLETE] * 5 + [FinishStatus.LENGTH, FinishStatus.CONTENT_FILTER,
                                              FinishStatus.CANCELLED, FinishStatus.FAILED,
                                              FinishStatus.TRUNCATED_UPSTREAM]
    control = [request("exp", "control", NOW - 2000 - i, status, model="fast" if i % 2 == 0 else "cheap",
                       cost=0.01) for i, status in enumerate(statuses)]
    control.append(request("exp", "control", NOW - 1000, FinishStatus.UNSPECIFIED, model="", cost=0.0))
    treatment = [request("exp", "treatment", NOW - 1500, model="strong", cost=0.25) for _ in range(3)]
    other = [request("other", "a", NOW - 1000), request("", "", NOW - 1000, FinishStatus.FAILED)]
    await store.record_requests(control + treatment + other)
    rows = await store.experiment_report(None, NOW)
    assert [(r.experiment, r.variant) for r in rows] == [("exp", "control"), ("exp", "treatment"),
                                                         ("other", "a")]
    ctl, trt, _ = rows
    assert (ctl.requests, ctl.errors, ctl.models) == (11, 3, {"cheap": 5, "fast": 5})
    assert ctl.cost_usd == pytest.approx(0.10)
    assert (trt.requests, trt.errors, trt.models) == (3, 0, {"strong": 3})
    assert trt.cost_usd == pytest.approx(0.75)
    assert await store.experiment_report("exp", NOW) == rows[:2]
    assert await store.experiment_report("missing", NOW) == []


async def test_experiment_percentiles_cover_answered_requests_only(store):
    answered = [request("exp", "v", NOW - 5000 - i, ttft=float(i), duration=10.0 * i) for i in range(1, 102)]
    random.Random(3).shuffle(answered)
    failed = [request("exp", "v", NOW - 4000, FinishStatus.FAILED, ttft=9000.0, duration=9000.0)]
    cancelled = [request("exp", "v", NOW - 4000, FinishStatus.CANCELLED, ttft=1.0, duration=1.0)]
    no_token = [request("exp", "v", NOW - 4000, FinishStatus.CONTENT_FILTER, ttft=0.0, duration=505.0)]
    await store.record_requests(answered + failed + cancelled + no_token)
    [row] = await store.experiment_report("exp", NOW)
    assert (row.requests, row.errors) == (104, 1)
    assert row.ttft_p50_ms == pytest.approx(51.0)
    assert row.ttft_p95_ms == pytest.approx(96.0)
    assert row.duration_p50_ms == pytest.approx(507.5), "an answer without a token still has a duration"
    assert row.duration_p95_ms == pytest.approx(959.5)


async def test_experiment_percentiles_count_tool_call_and_continued_answers(store):
    # Proto values, as a router reports them: both answers ran their course, so their latency counts.
    tool_calls = request("exp", "v", NOW - 3000, common_pb2.FINISH_STATUS_TOOL_CALLS, ttft=100.0, duration=400.0)
    continued = request("exp", "v", NOW - 2000, common_pb2.FINISH_STATUS_CONTINUED, ttft=300.0, duration=800.0)
    await store.record_requests([tool_calls, continued])
    [row] = await store.experiment_report("exp", NOW)
    assert (row.requests, row.errors) == (2, 0)
    assert row.ttft_p50_ms == pytest.approx(200.0)
    assert row.duration_p50_ms == pytest.approx(600.0)


async def test_experiment_percentiles_keep_the_last_2000_but_counts_stay_exact(store):
    await store.record_requests([request("exp", "v", NOW - 60_000 + i, ttft=float(i), duration=float(i))
                                 for i in range(1, 2101)])
    [row] = await store.experiment_report("exp", NOW)
    assert row.requests == 2100
    assert row.ttft_p50_ms == pytest.approx(1100.5)


async def test_experiment_window_expires_old_requests(store):
    await store.record_requests([request("exp", "v", NOW - 400_000, FinishStatus.FAILED, cost=1.0)
                                 for _ in range(4)])
    await store.record_requests([request("exp", "v", NOW - 100_000, ttft=10.0, duration=20.0, cost=0.5)])
    [now] = await store.experiment_report(None, NOW)
    assert (now.requests, now.errors, now.cost_usd, now.ttft_p50_ms) == (1, 0, 0.5, 10.0)
    assert await store.experiment_report(None, NOW + 250_000) == []
    [earlier] = await store.experiment_report(None, NOW - 200_000)
    assert (earlier.requests, earlier.errors, earlier.cost_usd) == (4, 4, 4.0)


async def test_unknown_models_are_zero_and_seen_models_are_listed(store):
    await store.record([finished("b", NOW - 1000), started("a", NOW - 500)])
    stats = await store.snapshot(["nobody", "nobody"], NOW)
    assert stats == {"nobody": ModelStats(model="nobody")}
    assert await store.seen_models(NOW) == ["a", "b"]
    assert await store.seen_models(NOW + 2 * 24 * 3600 * 1000) == []


async def test_snapshots_are_cached_briefly(new_store):
    store = new_store(cache_ttl_s=5.0)
    assert (await store.snapshot(["m"], NOW))["m"].samples == 0
    await store.record([finished("m", NOW - 1000)])
    assert (await store.snapshot(["m"], NOW + 100))["m"].samples == 0
    assert (await store.snapshot(["m"], NOW + 10_000))["m"].samples == 1


async def test_concurrent_snapshots_agree(new_store):
    store = new_store(cache_ttl_s=0.2)
    await store.record([finished("m", NOW - 1000, ttft=20.0)])
    results = await asyncio.gather(*(store.snapshot(["m"], NOW) for _ in range(20)))
    assert {r["m"].ttft_p50_ms for r in results} == {20.0}


async def test_redis_down_neither_raises_nor_blocks():
    store = RedisHealthStore("redis://127.0.0.1:1", prefix=f"rmtest:{uuid4().hex}:")
    try:
        for _ in range(2):
            began = time.monotonic()
            await store.record([finished("m", NOW - 1000), started("m", NOW)])
            stats = await store.snapshot(["m"], NOW)
            assert await store.seen_models(NOW) == []
            assert time.monotonic() - began < 1.0
            assert stats == {"m": ModelStats(model="m", stale=True)}
            await store.record_requests([request("exp", "v", NOW - 1000), request("", "", NOW - 1000)])
            with pytest.raises(StoreUnavailable):
                await store.experiment_report(None, NOW)
            assert time.monotonic() - began < 1.0
        assert store.dropped == 6
    finally:
        await store.close()


async def test_two_replicas_with_one_prefix_share_state(redis_prefix):
    one = RedisHealthStore(REDIS_URL, prefix=redis_prefix, cache_ttl_s=0)
    two = RedisHealthStore(REDIS_URL, prefix=redis_prefix, cache_ttl_s=0)
    try:
        await one.record([finished("m", NOW - 1000, ttft=30.0, cost=1.0), started("m", NOW - 500)])
        await two.record([finished("m", NOW - 800, ttft=40.0, cost=0.5)])
        await one.record_requests([request("exp", "v", NOW - 900, ttft=10.0, model="a", cost=0.5)])
        await two.record_requests([request("exp", "v", NOW - 700, ttft=30.0, model="b", cost=0.25)])
        for store in (one, two):
            stats = (await store.snapshot(["m"], NOW))["m"]
            assert (stats.samples, stats.in_flight, stats.requests_per_minute) == (2, 0, 1)
            assert stats.ttft_p50_ms == pytest.approx(35.0)
            assert stats.spend_total_usd == pytest.approx(1.5)
            assert await store.seen_models(NOW) == ["m"]
            assert await store.experiment_report(None, NOW) == [VariantStatsRecord(
                experiment="exp", variant="v", requests=2, ttft_p50_ms=20.0, ttft_p95_ms=29.0,
                cost_usd=0.75, models={"a": 1, "b": 1})]
    finally:
        await one.close()
        await two.close()


async def test_every_redis_key_is_under_the_prefix_and_expires(redis_prefix):
    store = RedisHealthStore(REDIS_URL, prefix=redis_prefix)
    try:
        await store.record([started("m", NOW - 2000),
                            finished("m", NOW - 1000, ttft=5.0, tokens=(3, 4), cost=0.1)])
        # Names holding the key separator must not collide: ("a:b", "c") and ("a", "b:c") stay apart.
        await store.record_requests([request("a:b", "c", NOW - 1000, cost=0.1),
                                     request("a", "b:c", NOW - 1000, FinishStatus.FAILED, cost=0.2)])
        rows = await store.experiment_report(None, NOW)
        assert [(r.experiment, r.variant, r.requests, r.errors) for r in rows] == [("a", "b:c", 1, 1),
                                                                                   ("a:b", "c", 1, 0)]
    finally:
        await store.close()
    keys = await redis_keys(redis_prefix)
    base, minute = f"{redis_prefix}telemetry:", NOW // 60_000
    assert set(keys) == {f"{base}samples:m", f"{base}rate:m:{minute}", f"{base}open:m:{minute}",
                         f"{base}spend_total", f"{base}models", f"{base}experiments",
                         f"{base}exp_samples:a%3Ab:c", f"{base}exp_counts:a%3Ab:c:{minute}",
                         f"{base}exp_counts:a:b%3Ac:{minute}"}
    assert all(ttl > 0 for ttl in keys.values()), keys


class FreezableProxy:
    """A TCP proxy to the real Redis that, while frozen, swallows traffic: a server that never answers."""

    def __init__(self, host: str, port: int):
        self.target = (host, port)
        self.thawed = asyncio.Event()
        self.thawed.set()
        self.tasks: set[asyncio.Task] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader, writer) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._forward(src, dst))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _forward(self, src, dst) -> None:
        try:
            while data := await src.read(65536):
                if not self.thawed.is_set():
                    continue
                dst.write(data)
                await dst.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            dst.close()

    async def close(self) -> None:
        self.server.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def test_frozen_redis_serves_stale_then_recovers(redis_prefix):
    host, port = REDIS_URL.removeprefix("redis://").split("/")[0].split(":")
    proxy = FreezableProxy(host, int(port))
    proxy_port = await proxy.start()
    store = RedisHealthStore(f"redis://127.0.0.1:{proxy_port}/0", prefix=redis_prefix, cache_ttl_s=0,
                             failure_backoff_s=0.1)
    try:
        await store.record([finished("m", NOW - 3000, ttft=10.0)])
        assert (await store.snapshot(["m"], NOW))["m"].samples == 1
        proxy.thawed.clear()
        began = time.monotonic()
        await store.record([finished("m", NOW - 2000, ttft=20.0)])
        stale = (await store.snapshot(["m"], NOW + 1))["m"]
        assert time.monotonic() - began < 1.0
        assert (stale.stale, stale.samples, store.dropped) == (True, 1, 1)
        proxy.thawed.set()
        await asyncio.sleep(0.15)
        await store.record([finished("m", NOW - 1000, ttft=30.0)])
        fresh = (await store.snapshot(["m"], NOW + 2))["m"]
        assert (fresh.stale, fresh.samples, fresh.ttft_p50_ms) == (False, 2, pytest.approx(20.0))
    finally:
        await store.close()
        await proxy.close()
