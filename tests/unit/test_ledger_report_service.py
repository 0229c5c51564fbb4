"""GetLedgerReport: telemetry's report over its own ledger is what `routemesh report --ledger --format json` prints."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import time

import grpc
import pytest

from routemesh.common.errors import LedgerUnavailable, NotReady
from routemesh.common.policy import canonical_json, load_default_policy_text, parse_policy
from routemesh.common.policy_watch import PolicyHolder
from routemesh.common.serve import create_server
from routemesh.ledger_report import add_arguments, run
from routemesh.telemetry.ledger.report import ledger_report_json, since_label
from routemesh.telemetry.ledger.rows import row_from_summary
from routemesh.telemetry.ledger.stores import SqliteLedger
from routemesh.telemetry.ledger.writer import LedgerWriter
from routemesh.telemetry.main import make_service
from routemesh.telemetry.store import InMemoryHealthStore
from routemesh.v1 import common_pb2, control_pb2, router_pb2, telemetry_pb2, telemetry_pb2_grpc

HOUR_MS = 3_600_000


def summary(decision_id: str, ended_ms: int, *, route: str = "auto", model: str = "fast-cheap", tenant: str = "acme",
            status: int = common_pb2.FINISH_STATUS_COMPLETE, cost: float = 0.001) -> telemetry_pb2.RequestSummary:
    final = router_pb2.Final(status=status, cost_usd=cost, model=model,
                             usage=common_pb2.Usage(input_tokens=900, output_tokens=300),
                             attempts=[common_pb2.Attempt(model=model)])
    return telemetry_pb2.RequestSummary(
        decision_id=decision_id, route=route, model=model, status=status, ttft_ms=40.0, duration_ms=300.0,
        cost_usd=cost, tenant=tenant, timestamp_ms=ended_ms, final=final,
        decision=router_pb2.Decision(decision_id=decision_id, model=model, route=route, policy_version=1))


def holder_with_default_policy() -> PolicyHolder:
    holder = PolicyHolder()
    policy = parse_policy(load_default_policy_text())
    holder.apply(control_pb2.Policy(version=1, digest="x", policy_json=canonical_json(policy)))
    return holder


async def open_writer(path) -> LedgerWriter:
    writer = LedgerWriter(SqliteLedger(path), interval_s=0.02)
    writer.start()
    deadline = time.monotonic() + 5
    while not writer.opened:
        assert time.monotonic() < deadline, "the SQLite ledger did not open"
        await asyncio.sleep(0.01)
    return writer


def cli_report(url: str, since: str, policy_path) -> dict:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--ledger-url", url, "--since", since, "--format", "json", "--policy", str(policy_path)])
    out = io.StringIO()
    assert run(args, out) == 0
    return json.loads(out.getvalue())


async def test_the_report_is_the_clis_over_the_same_rows_with_the_start_as_a_utc_time(tmp_path) -> None:
    now = int(time.time() * 1000)
    writer = await open_writer(tmp_path / "ledger.db")
    try:
        rows = [summary("a" * 32, now - 2 * HOUR_MS), summary("b" * 32, now - HOUR_MS, model="strong", cost=0.02),
                summary("c" * 32, now - 1000, route="", tenant="globex", status=common_pb2.FINISH_STATUS_FAILED),
                summary("d" * 32, now - 30 * HOUR_MS)]  # before the report's start
        await writer.store.insert([row_from_summary(s) for s in rows])
        since_ms = now - 24 * HOUR_MS
        report = json.loads(await ledger_report_json(writer, holder_with_default_policy(), since_ms))
    finally:
        await writer.stop()
    policy_path = tmp_path / "policy.yaml"
    policy_path.write_text(load_default_policy_text())
    cli = await asyncio.to_thread(cli_report, f"sqlite:///{tmp_path / 'ledger.db'}", "24h", policy_path)
    assert report.pop("since") == since_label(since_ms) and cli.pop("since") == "24h"
    # The CLI's "24h" starts a few milliseconds later: the same three rows either way.
    assert report == cli
    assert report["total"]["requests"] == 3 and report["total"]["errors"] == 1
    assert set(report["route"]) == {"auto", "(pinned)"} and set(report["tenant"]) == {"acme", "globex"}
    assert report["counterfactuals"]["all_first"]["auto"]


async def test_no_policy_or_an_unopened_database_is_unavailable_not_a_crash(tmp_path) -> None:
    writer = LedgerWriter(SqliteLedger(tmp_path / "ledger.db"))  # never started: never opened
    with pytest.raises(NotReady):
        await ledger_report_json(writer, PolicyHolder(), 0)
    with pytest.raises(LedgerUnavailable, match="has not answered yet"):
        await ledger_report_json(writer, holder_with_default_policy(), 0)
    assert since_label(1_764_892_800_000) == "2025-12-05T00:00:00Z"


async def test_get_ledger_report_over_grpc_reports_what_was_reported_or_says_there_is_no_ledger(tmp_path) -> None:
    now = int(time.time() * 1000)
    writer = LedgerWriter(SqliteLedger(tmp_path / "ledger.db"), interval_s=0.02)
    for ledger in (writer, None):
        service = make_service(InMemoryHealthStore(cache_ttl_s=0), holder_with_default_policy(), ledger=ledger)
        await service.on_start()
        running = await create_server(service, "127.0.0.1:0")
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
        stub = telemetry_pb2_grpc.TelemetryServiceStub(channel)
        try:
            if ledger is None:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.GetLedgerReport(telemetry_pb2.GetLedgerReportRequest(), timeout=5)
                assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
                assert "--ledger-url" in caught.value.details()
                continue
            await stub.Report(telemetry_pb2.ReportRequest(requests=[summary(f"{i:032x}", now - i) for i in range(5)]),
                              timeout=5)
            deadline = time.monotonic() + 5
            while writer.stats.written < 5:
                assert time.monotonic() < deadline, "rows not written"
                await asyncio.sleep(0.02)
            reply = await stub.GetLedgerReport(telemetry_pb2.GetLedgerReportRequest(), timeout=5)
            report = json.loads(reply.report_json)
            assert report["total"]["requests"] == 5 and report["model"]["fast-cheap"]["requests"] == 5
            later = await stub.GetLedgerReport(telemetry_pb2.GetLedgerReportRequest(since_ms=now + 1), timeout=5)
            assert json.loads(later.report_json)["total"]["requests"] == 0
        finally:
            await channel.close()
            await running.server.stop(0)
            await service.on_stop()
