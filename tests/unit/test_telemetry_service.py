"""TelemetryService over real gRPC: reports in, snapshots with policy prices out, bad input refused."""

from __future__ import annotations

import argparse
import math
import time

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from routemesh.common.policy import canonical_json, load_default_policy_text, parse_policy
from routemesh.common.policy_watch import PolicyHolder
from routemesh.common.serve import create_server
from routemesh.telemetry.main import add_arguments, build, make_service
from routemesh.telemetry.store import InMemoryHealthStore
from routemesh.v1 import common_pb2, control_pb2, telemetry_pb2, telemetry_pb2_grpc

FINISHED = telemetry_pb2.OBSERVATION_PHASE_FINISHED
STARTED = telemetry_pb2.OBSERVATION_PHASE_STARTED


def observation(model: str, phase=FINISHED, ttft: float = 0.0, **fields) -> telemetry_pb2.Observation:
    return telemetry_pb2.Observation(model=model, provider="sim", phase=phase, ttft_ms=ttft, **fields)


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


@pytest.fixture
async def telemetry():
    policy = parse_policy(load_default_policy_text())
    holder = PolicyHolder()
    holder.apply(control_pb2.Policy(version=1, digest="x", policy_json=canonical_json(policy)))
    service = make_service(InMemoryHealthStore(cache_ttl_s=0), holder)
    await service.on_start()
    running = await create_server(service, "127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    yield telemetry_pb2_grpc.TelemetryServiceStub(channel), policy
    await channel.close()
    await running.server.stop(0)
    await service.on_stop()


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


async def test_snapshot_of_everything_lists_policy_and_seen_models(telemetry):
    stub, policy = telemetry
    await stub.Report(telemetry_pb2.ReportRequest(observations=[
        observation("ghost", outcome=common_pb2.ATTEMPT_OUTCOME_RATE_LIMITED)]))
    snapshot = await stub.GetSnapshot(telemetry_pb2.GetSnapshotRequest())
    by_name = {health.model: health for health in snapshot.models}
    assert set(by_name) == {*policy.models, "ghost"}
    assert [health.model for health in snapshot.models] == sorted(by_name)
    assert (by_name["ghost"].error_rate, by_name["ghost"].input_price_per_mtok) == (1.0, 0.0)
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
