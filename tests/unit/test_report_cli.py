"""`routemesh report` against a real in-process telemetry server: the table, JSON, and failures."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket

import grpc
import pytest

from routemesh import report
from routemesh.common.policy import canonical_json, load_default_policy_text, parse_policy
from routemesh.common.policy_watch import PolicyHolder
from routemesh.common.serve import create_server
from routemesh.telemetry.main import make_service
from routemesh.telemetry.redis_store import RedisHealthStore
from routemesh.telemetry.store import InMemoryHealthStore
from routemesh.v1 import common_pb2, control_pb2, telemetry_pb2, telemetry_pb2_grpc

COMPLETE, FAILED = common_pb2.FINISH_STATUS_COMPLETE, common_pb2.FINISH_STATUS_FAILED


@contextlib.asynccontextmanager
async def running_telemetry(store):
    """A telemetry server on a free port: its address and a stub to feed it."""
    holder = PolicyHolder()
    policy = parse_policy(load_default_policy_text())
    holder.apply(control_pb2.Policy(version=1, digest="x", policy_json=canonical_json(policy)))
    service = make_service(store, holder)
    await service.on_start()
    running = await create_server(service, "127.0.0.1:0")
    address = f"127.0.0.1:{running.port}"
    channel = grpc.aio.insecure_channel(address)
    try:
        yield address, telemetry_pb2_grpc.TelemetryServiceStub(channel)
    finally:
        await channel.close()
        await running.server.stop(0)
        await service.on_stop()


@pytest.fixture
async def telemetry():
    async with running_telemetry(InMemoryHealthStore(cache_ttl_s=0)) as started:
        yield started


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="routemesh report")
    report.add_arguments(parser)
    return parser.parse_args(list(argv))


async def run_report(*argv: str) -> int:
    # The command uses a blocking channel; it runs off the loop so the in-process server can answer.
    return await asyncio.to_thread(report.run, parse(*argv))


def summary(experiment: str, variant: str, model: str, status=COMPLETE, ttft=100.0, duration=1000.0,
            cost=0.01) -> telemetry_pb2.RequestSummary:
    return telemetry_pb2.RequestSummary(experiment=experiment, variant=variant, model=model, status=status,
                                        ttft_ms=ttft, duration_ms=duration, cost_usd=cost)


async def feed(stub) -> None:
    requests = [summary("checkout", "control", "cheap") for _ in range(3)]
    requests += [summary("checkout", "control", "fast", FAILED, cost=0.02)]
    requests += [summary("checkout", "bigger", "strong", ttft=200.0, duration=3000.0, cost=0.5)]
    requests += [summary("search", "a", "cheap", cost=0.0)]
    await stub.Report(telemetry_pb2.ReportRequest(requests=requests))


async def test_table_shows_every_variant_with_shares_errors_latency_cost_and_models(telemetry, capsys):
    address, stub = telemetry
    await feed(stub)
    assert await run_report("--telemetry", address) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("experiments over the last 300 s")
    assert out[1].split() == ["experiment", "variant", "requests", "share", "errors", "error", "%",
                              "ttft", "p50", "ttft", "p95", "dur", "p50", "dur", "p95", "cost", "cost/req",
                              "models"]
    rows = [line.split() for line in out[2:]]
    assert rows == [
        ["checkout", "bigger", "1", "20.0%", "0", "0.0%", "200", "ms", "200", "ms", "3000", "ms", "3000",
         "ms", "$0.500000", "$0.500000", "strong", "100%"],
        ["checkout", "control", "4", "80.0%", "1", "25.0%", "100", "ms", "100", "ms", "1000", "ms", "1000",
         "ms", "$0.050000", "$0.012500", "cheap", "75%,", "fast", "25%"],
        ["search", "a", "1", "100.0%", "0", "0.0%", "100", "ms", "100", "ms", "1000", "ms", "1000", "ms",
         "$0.000000", "$0.000000", "cheap", "100%"],
    ]
    header = out[1]
    assert all(line.index("$") > header.index("errors") for line in out[2:]), "columns line up"


async def test_json_and_one_experiment(telemetry, capsys):
    address, stub = telemetry
    await feed(stub)
    assert await run_report("--telemetry", address, "--experiment", "checkout", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["window_seconds"] == 300
    assert [(v["experiment"], v["variant"]) for v in data["variants"]] == [("checkout", "bigger"),
                                                                          ("checkout", "control")]
    control = data["variants"][1]
    assert {k: control[k] for k in ("requests", "errors", "share", "error_rate", "models")} == {
        "requests": 4, "errors": 1, "share": 0.8, "error_rate": 0.25, "models": {"cheap": 3, "fast": 1}}
    assert control["cost_per_request_usd"] == pytest.approx(0.0125)
    assert control["ttft_p95_ms"] == pytest.approx(100.0)
    assert control["duration_p50_ms"] == pytest.approx(1000.0)


async def test_nothing_seen_says_so(telemetry, capsys):
    address, _ = telemetry
    assert await run_report("--telemetry", address) == 0
    assert capsys.readouterr().out == "no experiments seen in the last 300 s\n"
    assert await run_report("--telemetry", address, "--experiment", "nope") == 0
    assert capsys.readouterr().out == "no requests of experiment 'nope' seen in the last 300 s\n"
    assert await run_report("--telemetry", address, "--json") == 0
    assert json.loads(capsys.readouterr().out) == {"window_seconds": 300, "variants": []}


async def test_unreachable_telemetry_is_exit_1_with_a_message(capsys):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{sock.getsockname()[1]}"
    assert await run_report("--telemetry", dead) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"telemetry unreachable at {dead}" in captured.err
    assert "routemesh up" in captured.err
    assert "Traceback" not in captured.err


async def test_telemetry_without_its_store_is_exit_1_with_its_reason(capsys):
    store = RedisHealthStore("redis://127.0.0.1:1", prefix="rmtest:unreachable:", cache_ttl_s=0)
    async with running_telemetry(store) as (address, _):
        assert await run_report("--telemetry", address) == 1
    err = capsys.readouterr().err
    assert err.startswith("routemesh report: UNAVAILABLE: telemetry cannot read its store")
    assert "unreachable" not in err


def test_address_defaults_to_the_environment(monkeypatch):
    monkeypatch.delenv("ROUTEMESH_TELEMETRY_ADDR", raising=False)
    assert parse().telemetry == "127.0.0.1:50053"
    monkeypatch.setenv("ROUTEMESH_TELEMETRY_ADDR", "telemetry:7000")
    args = parse()
    assert (args.telemetry, args.experiment, args.json) == ("telemetry:7000", "", False)
