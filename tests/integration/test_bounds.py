"""Bounds against a real mesh: huge plans cost the executor nothing that stays, made-up models stay out of health."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import status_pb2

from routemesh.executor.engine import LISTED_IN_ERRORS, MAX_MODEL_NAME_LENGTH, MIN_PLAN_LIMIT
from routemesh.mesh import Mesh
from routemesh.v1 import common_pb2, executor_pb2, executor_pb2_grpc, telemetry_pb2, telemetry_pb2_grpc

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
# Generous: the interpreter's and grpc's own caches settle in the first calls (a warm-up runs first); a
# retained execution of the plans below costs far more than this over 20 calls.
RSS_GROWTH_LIMIT_MB = 30
MAX_ERROR_BYTES = 4096
CHANNEL_OPTIONS = [("grpc.max_send_message_length", 64 * MiB), ("grpc.max_metadata_size", 16 * MiB)]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def made_up_plan(count: int, tag: str) -> list[str]:
    """`count` names no policy has, each as long as a model name may be (the most a plan entry can cost)."""
    return [f"made-up-{tag}-{i}-".ljust(MAX_MODEL_NAME_LENGTH, "x") for i in range(count)]


def execute(stub: executor_pb2_grpc.ExecutorServiceStub, plan: list[str]) -> grpc.RpcError:
    request = executor_pb2.ExecuteRequest(
        messages=[common_pb2.Message(role=common_pb2.ROLE_USER, content="hello")], plan=plan, max_tokens=16)
    with pytest.raises(grpc.RpcError) as err:
        for _ in stub.Execute(request, timeout=30):
            pass
    return err.value


def error_bytes(error: grpc.RpcError) -> int:
    """The status as the caller receives it: message and trailing metadata (the rich details included)."""
    return len(error.details() or "") + sum(len(k) + len(v) for k, v in error.trailing_metadata() or ())


def rich_status(error: grpc.RpcError) -> status_pb2.Status:
    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert raw is not None, "a domain error carries google.rpc details"
    return status_pb2.Status.FromString(raw)


def test_rejected_plans_leave_the_executors_memory_flat(mesh: Mesh):
    """A plan at the bound runs (every name a config_error: UNAVAILABLE); any longer one is INVALID_ARGUMENT.

    Before the fix each failed execution stayed alive in a reference cycle through grpc's stored AbortError
    and the error's traceback: 100,000-name plans grew the executor by about 100 MB a call, and these 20
    calls by 47 MB (83 -> 130 MB, with a 2.4 MB trailer for each 5,000-name plan); after it, by 6.5 MB.
    """
    pid = mesh.processes["executor"].pid
    with grpc.insecure_channel(mesh.layout.address("executor"), options=CHANNEL_OPTIONS) as channel:
        stub = executor_pb2_grpc.ExecutorServiceStub(channel)
        for i in range(3):  # warm-up: first calls fill caches that stay whatever the fix
            execute(stub, made_up_plan(MIN_PLAN_LIMIT, f"warm{i}"))
            execute(stub, made_up_plan(MIN_PLAN_LIMIT + 1, f"warm{i}"))
        before = rss_mb(pid)
        for i in range(10):
            at_bound = execute(stub, made_up_plan(MIN_PLAN_LIMIT, str(i)))
            assert at_bound.code() == grpc.StatusCode.UNAVAILABLE, at_bound.details()
            assert f"all {MIN_PLAN_LIMIT} attempt(s) failed" in at_bound.details()
            assert f"the first {LISTED_IN_ERRORS} listed" in at_bound.details()
            assert error_bytes(at_bound) < MAX_ERROR_BYTES

            above = execute(stub, made_up_plan(5000 if i % 2 else MIN_PLAN_LIMIT + 1, str(i)))
            assert above.code() == grpc.StatusCode.INVALID_ARGUMENT, above.details()
            assert error_bytes(above) < MAX_ERROR_BYTES
        grown = rss_mb(pid) - before
        assert grown < RSS_GROWTH_LIMIT_MB, f"executor RSS grew {grown:.1f} MB over 20 rejected calls"

        huge = execute(stub, [f"m{i}" for i in range(100_000)])
        assert huge.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "names 100,000 models" in huge.details()
        assert error_bytes(huge) < MAX_ERROR_BYTES
        assert rich_status(huge).code == grpc.StatusCode.INVALID_ARGUMENT.value[0]


def test_made_up_models_stay_out_of_telemetrys_health(mesh: Mesh):
    """Reports for 50,000 made-up models once grew telemetry by 260 MB and each router's snapshot to 14 MB."""
    pid = mesh.processes["telemetry"].pid
    with grpc.insecure_channel(mesh.layout.address("telemetry"), options=CHANNEL_OPTIONS) as channel:
        stub = telemetry_pb2_grpc.TelemetryServiceStub(channel)
        snapshot = stub.GetSnapshot(telemetry_pb2.GetSnapshotRequest(), timeout=5)
        policy_models = {health.model for health in snapshot.models}
        baseline_bytes = snapshot.ByteSize()
        before = rss_mb(pid)
        for batch in range(5):
            observations = [
                telemetry_pb2.Observation(model=f"made-up-{batch}-{i}", provider="sim", ttft_ms=5.0,
                                          phase=telemetry_pb2.OBSERVATION_PHASE_FINISHED,
                                          outcome=common_pb2.ATTEMPT_OUTCOME_SUCCESS)
                for i in range(10_000)]
            stub.Report(telemetry_pb2.ReportRequest(observations=observations), timeout=10)
        grown = rss_mb(pid) - before

        snapshot = stub.GetSnapshot(telemetry_pb2.GetSnapshotRequest(), timeout=5)
        assert {health.model for health in snapshot.models} == policy_models
        assert snapshot.ByteSize() < baseline_bytes + 1024
        pushed = next(stub.WatchSnapshot(telemetry_pb2.WatchSnapshotRequest(interval_ms=1000), timeout=5))
        assert {health.model for health in pushed.snapshot.models} == policy_models
        assert pushed.snapshot.ByteSize() < baseline_bytes + 1024
        assert grown < RSS_GROWTH_LIMIT_MB, f"telemetry RSS grew {grown:.1f} MB over 50,000 made-up models"

        too_many = [telemetry_pb2.Observation(model="strong")] * 10_001
        with pytest.raises(grpc.RpcError) as err:
            stub.Report(telemetry_pb2.ReportRequest(observations=too_many), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "observations" in err.value.details() or error_bytes(err.value) < MAX_ERROR_BYTES
