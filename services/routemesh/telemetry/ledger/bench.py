"""How many ledger rows per second the telemetry service sustains: `python -m routemesh.telemetry.ledger.bench`.

Starts a control plane and a telemetry service with --ledger-url (SQLite in a temporary file, and PostgreSQL
when --postgres-url names one: a schema of its own, dropped after), sends Report calls carrying request
summaries as routers send them (batches of 200 with a full decision: candidates, features, final), and times
from the first call until every row is in the database. Prints rows/s per database.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path

import grpc

from routemesh.mesh import Mesh, MeshLayout
from routemesh.telemetry.ledger.stores import LedgerStore, ledger_store
from routemesh.v1 import common_pb2, router_pb2, telemetry_pb2, telemetry_pb2_grpc

BATCH = 200
TARGET_ROWS_PER_S = 2000


def summaries(run: str, start: int, count: int) -> list[telemetry_pb2.RequestSummary]:
    """Summaries shaped like a router's for the default policy: 4 candidates, features, 1 attempt."""
    features = common_pb2.Features(input_tokens=420, task_type=common_pb2.TASK_TYPE_CHAT, language="en",
                                   complexity=0.3, source="classifier")
    features.predicted_success.update({"fast-cheap": 0.78, "strong": 0.86})
    candidates = [router_pb2.Candidate(model=m, provider="sim", eligible=True, rank=i + 1, score=0.9 - i / 10,
                                       estimated_cost_usd=0.0001 * (i + 1),
                                       factors={"cost": 0.5, "latency": 0.7, "quality": 0.8, "error_rate": 0.0})
                  for i, m in enumerate(("fast-cheap", "strong", "balanced", "long-context"))]
    out = []
    for i in range(start, start + count):
        decision_id = f"{run}-{i}"
        decision = router_pb2.Decision(decision_id=decision_id, model="fast-cheap", provider="sim",
                                       strategy="quality_target", route="auto", fallbacks=["strong"],
                                       features=features, policy_version=1, candidates=candidates,
                                       estimated_cost_usd=0.0001, trace_id="ab" * 16)
        final = router_pb2.Final(status=common_pb2.FINISH_STATUS_COMPLETE, cost_usd=0.00012, model="fast-cheap",
                                 usage=common_pb2.Usage(input_tokens=420, output_tokens=80),
                                 attempts=[common_pb2.Attempt(model="fast-cheap", outcome=1)],
                                 decision_id=decision_id)
        out.append(telemetry_pb2.RequestSummary(
            decision_id=decision_id, route="auto", model="fast-cheap", status=common_pb2.FINISH_STATUS_COMPLETE,
            ttft_ms=40.0, duration_ms=300.0, cost_usd=0.00012, tenant="acme", timestamp_ms=int(time.time() * 1000),
            decision=decision, final=final, project="web", user="u-1", prompt_sha256="e" * 64))
    return out


async def _count(url: str) -> int:
    store: LedgerStore = ledger_store(url)
    try:
        await store.open()
        return await store.count()
    except Exception:  # noqa: BLE001 - not there yet
        return 0
    finally:
        await store.close()


async def _send(address: str, run: str, rows: int, concurrency: int) -> float:
    """Send `rows` summaries in batches over `concurrency` calls at a time; the seconds it took."""
    batches = [summaries(run, start, min(BATCH, rows - start)) for start in range(0, rows, BATCH)]
    async with grpc.aio.insecure_channel(address) as channel:
        stub = telemetry_pb2_grpc.TelemetryServiceStub(channel)
        queue = list(batches)
        started = time.perf_counter()

        async def worker() -> None:
            while queue:
                await stub.Report(telemetry_pb2.ReportRequest(requests=queue.pop()), timeout=30)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started


def measure(url: str, rows: int, concurrency: int, workdir: Path) -> dict[str, float]:
    mesh = Mesh(MeshLayout.free(), services=("control", "telemetry"), log_dir=workdir / "logs",
                extra_args={"telemetry": ["--ledger-url", url]})
    mesh.start()
    try:
        run = uuid.uuid4().hex[:8]
        started = time.perf_counter()
        sent_s = asyncio.run(_send(mesh.layout.address("telemetry"), run, rows, concurrency))
        while (written := asyncio.run(_count(url))) < rows:
            if time.perf_counter() - started > 300:
                raise SystemExit(f"only {written} of {rows} rows written after 300 s")
            time.sleep(0.05)
        total_s = time.perf_counter() - started
    finally:
        mesh.stop()
    return {"rows": rows, "accepted_s": round(sent_s, 2), "written_s": round(total_s, 2),
            "rows_per_s": round(rows / total_s)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m routemesh.telemetry.ledger.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=4, help="Report calls in flight (routers)")
    parser.add_argument("--postgres-url", default="",
                        help="e.g. postgresql://postgres@127.0.0.1:5432/test (a schema of its own is made)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="routemesh-ledger-bench-") as tmp:
        workdir = Path(tmp)
        targets = {"sqlite": f"sqlite:///{workdir / 'ledger.db'}"}
        schema = f"ledger_bench_{uuid.uuid4().hex[:8]}"
        if args.postgres_url:
            targets["postgresql"] = f"{args.postgres_url}?schema={schema}"
        failed = False
        for name, url in targets.items():
            result = measure(url, args.rows, args.concurrency, workdir / name)
            ok = result["rows_per_s"] >= TARGET_ROWS_PER_S
            failed |= not ok
            print(f"{name:<11} {result['rows']:,} rows: accepted in {result['accepted_s']} s, all written in "
                  f"{result['written_s']} s: {result['rows_per_s']:,} rows/s "
                  f"(target >= {TARGET_ROWS_PER_S:,}) {'ok' if ok else 'BELOW TARGET'}", flush=True)
        if args.postgres_url:
            asyncio.run(_drop_schema(args.postgres_url, schema))
    return 1 if failed else 0


async def _drop_schema(url: str, schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url, timeout=5)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


if __name__ == "__main__":
    sys.exit(main())
