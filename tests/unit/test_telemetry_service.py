"""TelemetryService over real gRPC: reports in, snapshots and experiment reports out, bad input refused."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import time

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from routemesh.common.policy import canonical_json, load_default_policy_text, parse_policy
from routemesh.common.policy_watch import PolicyHolder
from routemesh.common.serve import create_server
from routemesh.telemetry.main import add_arguments, build, make_service
from routemesh.telemetry.redis_store import RedisHealthStore
from routemesh.telemetry.store import InMemoryHealthStore
from routemesh.v1 import common_pb2, control_pb2, router_pb2, telemetry_pb2, telemetry_pb2_grpc

FINISHED = telemetry_pb2.OBSERVATION_PHASE_FINISHED
STARTED = telemetry_pb2.OBSERVATION_PHASE_STARTED


def observation(model: str, phase=FINISHED, ttft: float = 0.0, **fields) -> telemetry_pb2.Observation:
    return telemetry_pb2.Observation(model=model, provider="sim", phase=phase, ttft_ms=ttft, **fields)


def summary(experiment: str, variant: str, status=common_pb2.FINISH_STATUS_COMPLETE, **fields):
    return telemetry_pb2.RequestSummary(experiment=experiment, variant=variant, status=status, route="auto",
                                        **fields)


def field_violations(exc: grpc.aio.AioRpcError) -> list[str]:
    """Fields named by the BadRequest detail of a failed call."""
    raw = dict(exc.trailing_metadata() or ()).get("grpc-status-details-bin")
    status = status_pb2.Status.FromString(raw)
    fields = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields += [violation.field for violation in bad.field_violations]
    return fields


@contextlib.asynccontextmanager
async def running_telemetry(store):
    """A telemetry server on a free port around a store, with the default policy loaded."""
    policy = parse_policy(load_default_policy_text())
    holder = PolicyHolder()
    holder.apply(control_pb2.Policy(version=1, digest="x", policy_json=canonical_json(policy)))
    service = make_service(store, holder)
    await service.on_start()
    running = await create_server(service, "127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        yield telemetry_pb2_grpc.TelemetryServiceStub(channel), policy
    finally:
        await channel.close()
        await running.server.stop(0)
        await service.on_stop()


@pytest.fixture
async def telemetry():
    async with running_telemetry(InMemoryHealthStore(cache_ttl_s=0)) as started:
        yield started


async def test_report_then_snapshot_carries_health_and_prices(telemetry):
    stub, policy = telemetry
    finished = [
        observation("balanced", ttft=100.0 * i, tpot_ms=10.0, outcome=common_pb2.ATTEMPT_OUTCOME_SUCCESS,
                    usage=common_pb2.Usage(input_tokens=20, output_tokens=10), cost_usd=0.001)
        for i in range(1, 11)
    ]
    started = [observation("balanced", STARTED) for _ in range(12)]
    reply = await stub.Report(telemetry_pb2.ReportRequest(observations=started + finished))
    assert reply.accepted == 22

    before = time.time_ns() // 1_000_000
    snapshot = await stub.GetSnapshot(telemetry_pb2.GetSnapshotRequest(models=["balanced"]))
    assert snapshot.policy_version == 1
    assert snapshot.window_seconds == 300
    assert snapshot.taken_at_ms >= before
    [health] = snapshot.models
    pricing = policy.models["balanced"].pricing
    assert (health.input_price_per_mtok, health.output_price_per_mtok) == (pricing.input_per_mtok,
                                                                          pricing.output_per_mtok)
    assert health.model == "balanced"
    assert (health.samples, health.in_flight, health.requests_per_minute) == (10, 2, 12)
    assert health.ttft_p50_ms == pytest.approx(550.0)
    assert health.ttft_p90_ms == pytest.approx(910.0)
    assert health.tpot_p50_ms == pytest.approx(10.0)
    assert health.error_rate == 0.0
    assert health.tokens_per_minute == 300
    assert health.spend_total_usd == pytest.approx(0.01)
    assert before - 5000 < health.last_observation_ms <= before, "a report without timestamps is stamped now"
    assert not health.stale


async def test_snapshot_of_everything_lists_the_policys_models_not_unknown_reported_ones(telemetry):
    """Observations of a model the policy does not name are not recorded (telemetry.policy_scope)."""
    stub, policy = telemetry
    await stub.Report(telemetry_pb2.ReportRequest(observations=[
        observation("ghost", outcome=common_pb2.ATTEMPT_OUTCOME_RATE_LIMITED),
        observation("strong", outcome=common_pb2.ATTEMPT_OUTCOME_RATE_LIMITED)]))
    snapshot = await stub.GetSnapshot(telemetry_pb2.GetSnapshotRequest())
    by_name = {health.model: health for health in snapshot.models}
    assert set(by_name) == set(policy.models)
    assert [health.model for health in snapshot.models] == sorted(by_name)
    assert by_name["strong"].error_rate == 1.0
    assert by_name["strong"].output_price_per_mtok == policy.models["strong"].pricing.output_per_mtok


async def test_bad_report_is_invalid_argument_and_the_server_keeps_serving(telemetry):
    stub, _ = telemetry
    bad = [observation("balanced", ttft=5.0), observation(""), observation("strong", ttft=math.nan)]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Report(telemetry_pb2.ReportRequest(observations=bad))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(caught.value) == ["observations[1].model", "observations[2].ttft_ms"]

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetSnapshot(telemetry_pb2.GetSnapshotRequest(models=["balanced", ""]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(caught.value) == ["models[1]"]

    snapshot = await stub.GetSnapshot(telemetry_pb2.GetSnapshotRequest(models=["balanced"]))
    assert snapshot.models[0].samples == 0, "a refused report records nothing"


async def test_build_waits_for_a_policy_before_it_is_ready():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--redis-url", "", "--window-s", "60"])
    args.control, args.listen = "127.0.0.1:1", "127.0.0.1:0"
    service = await build(args)
    assert (service.name, list(service.grpc_services)) == ("telemetry", ["routemesh.v1.TelemetryService"])
    assert not service.ready()
    await service.on_start()
    await service.on_stop()


async def test_request_summaries_make_an_experiment_report(telemetry):
    stub, _ = telemetry
    now_ms = time.time_ns() // 1_000_000
    requests = [summary("exp", "control", model="cheap", ttft_ms=100.0 * i, duration_ms=1000.0 * i,
                        cost_usd=0.01, decision_id=f"d{i}", tenant="acme", timestamp_ms=now_ms - 1000)
                for i in range(1, 5)]
    requests += [summary("exp", "treatment", model="strong", ttft_ms=50.0, duration_ms=500.0, cost_usd=0.1),
                 summary("exp", "treatment", status=common_pb2.FINISH_STATUS_UNSPECIFIED, duration_ms=20.0),
                 summary("other", "a", model="cheap"), summary("", "", model="cheap")]
    reply = await stub.Report(telemetry_pb2.ReportRequest(
        observations=[observation("cheap", ttft=10.0)], requests=requests))
    assert reply.accepted == 1 + len(requests)

    report = await stub.GetExperimentReport(telemetry_pb2.GetExperimentReportRequest())
    assert report.window_seconds == 300
    assert [(v.experiment, v.variant) for v in report.variants] == [
        ("exp", "control"), ("exp", "treatment"), ("other", "a")]
    control, treatment, _ = report.variants
    assert (control.requests, control.errors, dict(control.models)) == (4, 0, {"cheap": 4})
    assert (control.ttft_p50_ms, control.duration_p95_ms) == (pytest.approx(250.0), pytest.approx(3850.0))
    assert control.cost_usd == pytest.approx(0.04)
    assert (treatment.requests, treatment.errors, dict(treatment.models)) == (2, 1, {"strong": 1})
    assert (treatment.ttft_p95_ms, treatment.cost_usd) == (pytest.approx(50.0), pytest.approx(0.1))

    only = await stub.GetExperimentReport(telemetry_pb2.GetExperimentReportRequest(experiment="other"))
    assert [(v.experiment, v.variant, v.requests) for v in only.variants] == [("other", "a", 1)]
    none = await stub.GetExperimentReport(telemetry_pb2.GetExperimentReportRequest(experiment="nope"))
    assert (list(none.variants), none.window_seconds) == ([], 300)


async def test_bad_request_summaries_are_refused_and_nothing_is_recorded(telemetry):
    stub, _ = telemetry
    bad = [summary("exp", "a", duration_ms=10.0), summary("exp", "a", duration_ms=-1.0),
           summary("exp", "a", cost_usd=math.inf, ttft_ms=-5.0), summary("exp", ""),
           summary("exp", "a", decision_id="")]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Report(telemetry_pb2.ReportRequest(observations=[observation("cheap", tpot_ms=-1.0)],
                                                      requests=bad))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(caught.value) == ["observations[0].tpot_ms", "requests[1].duration_ms",
                                              "requests[2].ttft_ms", "requests[2].cost_usd",
                                              "requests[3].variant"]
    report = await stub.GetExperimentReport(telemetry_pb2.GetExperimentReportRequest())
    assert list(report.variants) == [], "a refused report records nothing"

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetExperimentReport(telemetry_pb2.GetExperimentReportRequest(experiment="x" * 300))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(caught.value) == ["experiment"]


async def test_unreadable_store_means_stale_health_and_an_unavailable_report():
    store = RedisHealthStore("redis://127.0.0.1:1", prefix="rmtest:unreachable:", cache_ttl_s=0)
    async with running_telemetry(store) as (stub, _):
        snapshot = await stub.GetSnapshot(telemetry_pb2.GetSnapshotRequest(models=["cheap"]))
        assert [(h.model, h.stale, h.samples) for h in snapshot.models] == [("cheap", True, 0)]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetExperimentReport(telemetry_pb2.GetExperimentReportRequest())
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "store" in caught.value.details()


async def test_watch_snapshot_pushes_at_once_then_every_interval(telemetry):
    stub, policy = telemetry
    call = stub.WatchSnapshot(telemetry_pb2.WatchSnapshotRequest(models=["balanced"], interval_ms=50))
    first = await call.read()
    assert [h.model for h in first.snapshot.models] == ["balanced"]
    assert first.snapshot.models[0].samples == 0
    await stub.Report(telemetry_pb2.ReportRequest(observations=[
        observation("balanced", ttft=120.0, outcome=common_pb2.ATTEMPT_OUTCOME_SUCCESS)]))
    started = time.monotonic()
    while (pushed := await call.read()).snapshot.models[0].samples == 0:
        assert time.monotonic() - started < 2, "a recorded observation must reach the next pushes"
    assert pushed.snapshot.models[0].ttft_p50_ms == pytest.approx(120.0)
    assert pushed.snapshot.policy_version == 1
    call.cancel()


async def test_watch_snapshot_is_quiet_without_reports_and_prompt_after_one(telemetry):
    """Idle, a watch pushes once a heartbeat; a report brings the next push within the interval."""
    stub, _ = telemetry
    call = stub.WatchSnapshot(telemetry_pb2.WatchSnapshotRequest(models=["balanced"], interval_ms=50,
                                                                 heartbeat_ms=600))
    await call.read()
    started = time.monotonic()
    await call.read()
    quiet = time.monotonic() - started
    assert 0.55 <= quiet < 1.5, f"with no report the next push came after {quiet:.2f} s, not the 0.6 s heartbeat"
    await asyncio.sleep(0.1)
    reported = time.monotonic()
    await stub.Report(telemetry_pb2.ReportRequest(observations=[
        observation("balanced", ttft=80.0, outcome=common_pb2.ATTEMPT_OUTCOME_SUCCESS)]))
    pushed = await call.read()
    assert time.monotonic() - reported < 0.3, "a report must bring a push within the interval, not the heartbeat"
    assert pushed.snapshot.models[0].samples >= 1
    call.cancel()


async def test_watch_snapshot_refuses_a_heartbeat_shorter_than_its_interval(telemetry):
    stub, _ = telemetry
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.WatchSnapshot(telemetry_pb2.WatchSnapshotRequest(interval_ms=500, heartbeat_ms=100)).read()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(caught.value) == ["heartbeat_ms"]


async def test_a_silent_watch_is_reopened():
    """A stream that stops sending (a frozen peer whose connection stays up) is given up after `silence_s`."""
    from routemesh.common.watch import WatchStream

    opened, lost, received = [], [], []

    async def stream(_channel):
        opened.append(time.monotonic())
        yield len(opened)
        await asyncio.sleep(3600)  # silent from here on

    watch = WatchStream("test", "127.0.0.1:9", stream, received.append, lost.append, silence_s=0.2)
    watch.start()
    try:
        while len(opened) < 2:
            await asyncio.sleep(0.02)
    finally:
        await watch.stop()
    assert received[:2] == [1, 2] and lost[0] == grpc.StatusCode.DEADLINE_EXCEEDED
    assert 0.2 <= opened[1] - opened[0] < 1.0


async def test_watch_snapshot_refuses_a_bad_interval(telemetry):
    stub, _ = telemetry
    for interval in (10, 60_001, -5):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.WatchSnapshot(telemetry_pb2.WatchSnapshotRequest(interval_ms=interval)).read()
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field_violations(caught.value) == ["interval_ms"]


async def test_router_health_watch_reads_pushed_health_and_goes_stale_without_it():
    from routemesh.router.clients.health import HealthWatch

    # A server we can stop: the watch must keep the last snapshot and flag it stale.
    policy = parse_policy(load_default_policy_text())
    holder = PolicyHolder()
    holder.apply(control_pb2.Policy(version=1, digest="x", policy_json=canonical_json(policy)))
    service = make_service(InMemoryHealthStore(cache_ttl_s=0), holder)
    running = await create_server(service, "127.0.0.1:0")
    watch = HealthWatch(f"127.0.0.1:{running.port}", interval_ms=50, max_age_s=0.3)
    assert watch.pushed() == ({}, False)
    watch.start()
    try:
        started = time.monotonic()
        while not watch.pushed()[1]:
            assert time.monotonic() - started < 3, "no snapshot pushed"
            await asyncio.sleep(0.02)
        assert watch.ready()
        health, fresh = watch.pushed()
        assert fresh and set(health) == set(policy.models)
        await running.server.stop(0)
        await asyncio.sleep(0.5)
        health, fresh = watch.pushed()
        assert not fresh and set(health) == set(policy.models), "the last snapshot is kept, flagged stale"
        assert watch.age_s() > 0.3
    finally:
        await watch.stop()
        await running.server.stop(0)


async def test_truncated_and_filtered_answers_are_quality_signals_of_zero_in_the_snapshot(telemetry):
    stub, _ = telemetry
    features = common_pb2.Features(task_type=common_pb2.TASK_TYPE_CODE)
    summaries = [telemetry_pb2.RequestSummary(decision_id=f"{i:032x}", model=model, status=status,
                                              decision=router_pb2.Decision(features=features))
                 for i, (model, status) in enumerate([
                     ("balanced", common_pb2.FINISH_STATUS_TRUNCATED_UPSTREAM),
                     ("balanced", common_pb2.FINISH_STATUS_CONTENT_FILTER),
                     ("balanced", common_pb2.FINISH_STATUS_COMPLETE),   # no signal: nothing to say
                     ("balanced", common_pb2.FINISH_STATUS_FAILED),     # health, not quality
                     ("made-up", common_pb2.FINISH_STATUS_TRUNCATED_UPSTREAM)])]  # not in the policy
    await stub.Report(telemetry_pb2.ReportRequest(requests=summaries), timeout=5)
    snapshot = await stub.GetSnapshot(telemetry_pb2.GetSnapshotRequest(), timeout=5)
    signals = {h.model: dict(h.quality_signals) for h in snapshot.models}
    assert {task: (s.score_sum, s.count) for task, s in signals["balanced"].items()} == {"code": (0.0, 2)}
    assert all(not v for m, v in signals.items() if m != "balanced")
