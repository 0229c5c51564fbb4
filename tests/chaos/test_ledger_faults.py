"""PostgreSQL stopped for 30 s under load (a proxy refusing and resetting it): no request fails, no row is lost.

Telemetry writes the ledger through a fault proxy in front of the real PostgreSQL. While the proxy refuses,
rows wait in telemetry's buffer (well within its bound); once it passes again, the backlog drains, and the
ledger then holds exactly the requests the load sent, with the cost the callers were told.
"""

from __future__ import annotations

import asyncio
import threading
import time
from urllib.parse import urlsplit

import asyncpg
import grpc
import pytest

from routemesh.client import RouterClient, RoutemeshError
from routemesh.v1 import telemetry_pb2, telemetry_pb2_grpc
from tests.chaos.conftest import FaultProxy

pytestmark = [pytest.mark.chaos, pytest.mark.integration]
DOWN_S = 30.0
WORKERS = 4


def ledger_totals(url: str) -> tuple[int, float]:
    async def query() -> tuple[int, float]:
        base, _, query_text = url.partition("?")
        schema = query_text.rpartition("schema=")[2]
        conn = await asyncpg.connect(base, timeout=5)
        try:
            row = await conn.fetchrow(f'SELECT count(*) AS n, coalesce(sum(cost_usd), 0) AS cost '
                                      f'FROM "{schema}".ledger_requests')
            return int(row["n"]), float(row["cost"])
        finally:
            await conn.close()

    try:
        return asyncio.run(query())
    except asyncpg.UndefinedTableError:
        return 0, 0.0


def ledger_status(mesh) -> telemetry_pb2.LedgerStatus:
    with grpc.insecure_channel(mesh.layout.address("telemetry")) as channel:
        return telemetry_pb2_grpc.TelemetryServiceStub(channel).GetSnapshot(
            telemetry_pb2.GetSnapshotRequest(), timeout=5).ledger


def test_postgres_down_for_30_s_loses_no_request_and_no_row(mesh_factory, pg_ledger_url, figures) -> None:
    real = urlsplit(pg_ledger_url)
    with FaultProxy(real.hostname or "127.0.0.1", real.port or 5432) as proxy:
        proxied = real._replace(netloc=f"{real.username}@{proxy.address}").geturl()
        mesh = mesh_factory("ledger-faults", extra_args={"telemetry": ["--ledger-url", proxied]})
        results: list[float] = []
        failures: list[str] = []
        stop = threading.Event()

        def load() -> None:
            with RouterClient(mesh.layout.address("router"), timeout=30) as client:
                while not stop.is_set():
                    try:
                        results.append(client.complete("What time is it in Lisbon?", max_tokens=16).final.cost_usd)
                    except RoutemeshError as err:
                        failures.append(str(err))

        workers = [threading.Thread(target=load) for _ in range(WORKERS)]
        for worker in workers:
            worker.start()
        try:
            time.sleep(2)
            proxy.refuse()  # new connections refused, open ones reset: the database is gone
            went_down = time.monotonic()
            sent_before = len(results)
            time.sleep(DOWN_S / 2)
            while_down = ledger_status(mesh)
            time.sleep(DOWN_S / 2)
            during = len(results) - sent_before
            proxy.passthrough()
            came_back = time.monotonic()
            time.sleep(2)
        finally:
            stop.set()
            for worker in workers:
                worker.join(timeout=60)
        sent, cost = len(results), sum(results)
        deadline = time.monotonic() + 30
        while (totals := ledger_totals(pg_ledger_url))[0] < sent and time.monotonic() < deadline:
            time.sleep(0.2)
        drained = time.monotonic() - came_back
    after = ledger_status(mesh)
    assert not failures, failures[:3]
    # The writer's own account, as `routemesh top` shows it: rows waiting while down, none dropped.
    assert not while_down.healthy and while_down.buffered > 0 and while_down.last_error
    assert after.healthy and after.buffered == 0 and after.dropped == 0 and after.written >= sent
    assert during > 100, f"only {during} requests while the database was down"
    assert totals[0] == sent, f"{sent} requests sent, {totals[0]} ledger rows"
    assert totals[1] == pytest.approx(cost, rel=1e-9, abs=1e-9)
    figures.record("ledger: requests served while PostgreSQL was down", during, "requests",
                   f"{came_back - went_down:.0f} s down, {WORKERS} streams")
    figures.record("ledger: every row in PostgreSQL after it returned", drained * 1000, "ms",
                   f"{sent} rows in all, 0 lost; the load ran 2 s more")
