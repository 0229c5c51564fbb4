"""The executor's, telemetry's, control's, the classifier's and the gateway's metrics, without a mesh."""

from __future__ import annotations

import time
import asyncio

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from routemesh.classifier.metrics import ClassifierMetrics
from routemesh.classifier.servicer import ClassifierServicer
from routemesh.common.metrics import new_registry
from routemesh.common.outcomes import AttemptOutcome, CircuitState
from routemesh.common.policy import PolicyError, load_default_policy_text
from routemesh.common.policy_watch import PolicyHolder
from routemesh.control.metrics import register_control_metrics
from routemesh.control.registry import PolicyRegistry
from routemesh.executor.attempt import AttemptRecord
from routemesh.executor.metrics import ExecutorMetrics
from routemesh.gateway.metrics import GatewayMetrics
from routemesh.telemetry.ledger.writer import LedgerStats
from routemesh.telemetry.metrics import register_telemetry_metrics
from routemesh.v1 import classifier_pb2, common_pb2, telemetry_pb2
from tests.unit.test_executor_engine import harness  # noqa: F401 - the fixture


def test_executor_counts_every_attempt_and_times_those_that_called_the_provider():
    registry = new_registry()
    metrics = ExecutorMetrics(registry, lambda: 4)
    metrics.attempts_done([
        AttemptRecord("a", "sim", AttemptOutcome.RATE_LIMITED, duration_ms=20),
        AttemptRecord("a", "sim", AttemptOutcome.CIRCUIT_OPEN),
        AttemptRecord("b", "sim", AttemptOutcome.SUCCESS, duration_ms=1500),
    ])
    sample = registry.get_sample_value
    assert sample("routemesh_provider_attempts_total", {"gen_ai_provider_name": "sim", "gen_ai_request_model": "a",
                                                        "outcome": "circuit_open"}) == 1
    duration = "gen_ai_client_operation_duration_seconds"
    assert sample(f"{duration}_count", {"gen_ai_provider_name": "sim", "gen_ai_request_model": "a",
                                        "error_type": "rate_limited"}) == 1
    assert sample(f"{duration}_sum", {"gen_ai_provider_name": "sim", "gen_ai_request_model": "b",
                                      "error_type": ""}) == 1.5
    assert sample(f"{duration}_count", {"gen_ai_provider_name": "sim", "gen_ai_request_model": "a",
                                        "error_type": "circuit_open"}) is None, "no call, no duration"
    assert sample("routemesh_policy_version") == 4


async def test_the_engine_hands_over_each_executions_final_attempts(harness):  # noqa: F811
    done: list[list[tuple[str, AttemptOutcome]]] = []
    harness.engine.attempts_done = lambda attempts: done.append([(a.model, a.outcome) for a in attempts])
    await harness.patch("sim-fast", outage=True)
    await harness.run(["a", "b"])
    assert done == [[("a", AttemptOutcome.UPSTREAM_ERROR), ("b", AttemptOutcome.SUCCESS)]]


async def test_telemetry_reads_the_ledgers_account_and_its_snapshots_breakers():
    registry = new_registry()
    stats = LedgerStats(written=7, buffered=3, dropped=2, healthy=True)

    async def snapshot() -> telemetry_pb2.GetSnapshotResponse:
        return telemetry_pb2.GetSnapshotResponse(models=[
            telemetry_pb2.ModelHealth(model="a", circuit_state=CircuitState.OPEN),
            telemetry_pb2.ModelHealth(model="b", circuit_state=CircuitState.CLOSED)])

    readings = register_telemetry_metrics(registry, lambda: 2, lambda: stats, snapshot)
    sample = registry.get_sample_value
    assert sample("routemesh_breaker_state", {"model": "a"}) is None, "nothing read yet"
    await readings.refresh()
    assert sample("routemesh_breaker_state", {"model": "a"}) == 2
    assert sample("routemesh_breaker_state", {"model": "b"}) == 0
    assert (sample("routemesh_ledger_backlog_rows"), sample("routemesh_ledger_dropped_rows_total"),
            sample("routemesh_ledger_written_rows_total"), sample("routemesh_ledger_healthy")) == (3, 2, 7, 1)
    assert sample("routemesh_policy_version") == 2
    readings.start()  # the loop task refreshes until stopped
    await asyncio.sleep(0)
    await readings.stop()


def test_control_counts_policy_changes_applied_and_refused():
    registry, policies = new_registry(), PolicyRegistry()
    register_control_metrics(registry, policies)
    sample = registry.get_sample_value
    assert sample("routemesh_policy_version") == 0
    text = load_default_policy_text()
    policies.load(text, "test")
    policies.load(text, "test")  # unchanged: neither applied nor refused
    with pytest.raises(PolicyError):
        policies.load("models: {}", "test")
    assert sample("routemesh_policy_changes_total", {"action": "applied"}) == 1
    assert sample("routemesh_policy_changes_total", {"action": "refused"}) == 1
    assert sample("routemesh_policy_version") == 1


async def test_the_classifier_counts_each_classification_by_task():
    registry = new_registry()
    metrics = ClassifierMetrics(registry, lambda: 1)
    servicer = ClassifierServicer(classified=metrics.classified)
    message = common_pb2.Message(role=common_pb2.ROLE_USER, content="Write a Python function that sorts a list")
    reply = await servicer.Classify(classifier_pb2.ClassifyRequest(messages=[message]), None)
    task = reply.features.task_type
    assert registry.get_sample_value("routemesh_classify_duration_seconds_count") == 1
    counted = {s.labels["task"]: s.value for f in registry.collect() if f.name == "routemesh_classifications"
               for s in f.samples if s.name.endswith("_total")}
    assert sum(counted.values()) == 1 and len(counted) == 1 and task


async def test_the_gateway_counts_requests_by_route_pattern_and_code():
    registry = new_registry()
    metrics = GatewayMetrics(registry, PolicyHolder())

    async def model(request: web.Request) -> web.Response:
        assert registry.get_sample_value("routemesh_http_inflight_requests") == 1
        return web.json_response({"id": request.match_info["model"]})

    app = web.Application(middlewares=[metrics.middleware])
    app.router.add_get("/v1/models/{model}", model)
    async with TestClient(TestServer(app)) as client:
        assert (await client.get("/v1/models/a")).status == 200
        assert (await client.get("/v1/models/b")).status == 200
        assert (await client.get("/nowhere")).status == 404
    sample = registry.get_sample_value
    assert sample("routemesh_http_requests_total", {"path": "/v1/models/{model}", "code": "200"}) == 2
    assert sample("routemesh_http_requests_total", {"path": "other", "code": "404"}) == 1
    assert sample("routemesh_http_inflight_requests") == 0


def test_a_mesh_passes_each_service_its_metrics_port_unless_told_not_to() -> None:
    from routemesh.mesh import Mesh, MeshLayout

    layout = MeshLayout.free()
    assert "--metrics-listen" not in Mesh(layout, metrics=False).command("router")
    assert Mesh(layout).command("router")[-2:] == ["--metrics-listen", f"127.0.0.1:{layout.metrics_ports['router']}"]
    assert "--metrics-listen" not in Mesh(layout).command("sim")
    base = MeshLayout.from_base(50050, replicas={"executor": 2})
    assert [base.metrics_ports[s] for s in ("router", "classifier", "telemetry", "executor", "control", "gateway")] \
        == [50061, 50062, 50063, 50064, 50065, 50067]
    assert base.metrics_ports["executor-2"] not in base.ports.values()


def test_a_mesh_with_redis_gives_the_gateway_the_key_store_for_console_sign_in() -> None:
    from routemesh.mesh import Mesh, MeshLayout

    layout = MeshLayout.free()
    command = Mesh(layout, redis_url="redis://127.0.0.1:6379/0", redis_prefix="t:").command("gateway")
    assert command[command.index("--keys-redis-url") + 1] == "redis://127.0.0.1:6379/0"
    assert command[command.index("--keys-redis-prefix") + 1] == "t:"
    assert "--keys-redis-url" not in Mesh(layout).command("gateway")


def test_idle_bench_reads_a_process_cpu_time() -> None:
    import os

    from routemesh.bench.idle import cpu_s

    start = cpu_s(os.getpid())
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:
        pass
    assert cpu_s(os.getpid()) - start >= 0.03


def test_idle_bench_reads_cpu_per_thread_to_well_below_a_clock_tick() -> None:
    import os
    import threading

    from routemesh.bench.idle import measure_threads, thread_cpu_s

    def spin() -> None:
        deadline = time.thread_time() + 0.003  # under a clock tick (10 ms): /proc/PID/stat might not see it
        while time.thread_time() < deadline:
            pass

    mine = thread_cpu_s(os.getpid())
    assert any(name for _, name in mine)
    done = threading.Event()  # the thread lives until measured: an ended thread's time is not seen
    worker = threading.Thread(target=lambda: (time.sleep(0.1), spin(), done.wait(5)), name="spinner")
    worker.start()
    try:
        figures = measure_threads({"me": os.getpid()}, 0.5)
    finally:
        done.set()
        worker.join()
    assert set(figures) == {"me"}
    assert sum(figures["me"].values()) >= 0.003 * 1000 / 0.5 * 0.9  # >= ~5.4 ms/s: the spin, measured


def test_a_free_layout_has_distinct_ports_below_the_ephemeral_range() -> None:
    from routemesh.mesh import MeshLayout, ephemeral_low

    for _ in range(20):
        layout = MeshLayout.free(replicas={"executor": 3, "router": 2})
        ports = [*layout.ports.values(), *layout.metrics_ports.values()]
        assert len(set(ports)) == len(ports)
        assert all(port < ephemeral_low() for port in ports)


def test_a_free_layout_keeps_a_fixed_port_and_picks_none_of_the_others_equal_to_it() -> None:
    from routemesh.mesh import MeshLayout, free_quiet_port

    for _ in range(20):
        sim = free_quiet_port()
        layout = MeshLayout.free(fixed={"sim": sim})
        ports = [*layout.ports.values(), *layout.metrics_ports.values()]
        assert layout.ports["sim"] == sim and ports.count(sim) == 1
        assert len(set(ports)) == len(ports)
