"""Two router processes contest one Redis budget: together they never spend a micro-dollar past the limit."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import redis.asyncio as aioredis

from routemesh.router.admission.budget import BudgetScope
from routemesh.router.admission.budget_redis import RedisBudgetLedger
from tests.unit.test_telemetry_store import REDIS_URL, delete_keys, require_redis

REPO = Path(__file__).resolve().parents[2]
LIMIT_MICROS = 1_000_000


async def run_router(prefix: str, seed: int, start_at: float) -> list[dict]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.unit.budget_hammer", "--url", REDIS_URL, "--prefix", prefix,
        "--limit", str(LIMIT_MICROS / 1e6), "--requests", "300", "--concurrency", "16", "--seed", str(seed),
        "--start-at", str(start_at), cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=15)
    finally:
        if process.returncode is None:
            process.kill()
    assert process.returncode == 0, stderr.decode()
    return [json.loads(line) for line in stdout.decode().splitlines()]


async def test_two_processes_never_overspend_one_budget():
    await require_redis()
    prefix = f"rmtest:{uuid4().hex}:"
    try:
        start_at = time.time() + 1.2
        one, two = await asyncio.gather(run_router(prefix, 1, start_at), run_router(prefix, 2, start_at))
        summaries = [one.pop(), two.pop()]
        records = one + two
        scope = BudgetScope("contested", "tenant=acme", "month", limit_usd=LIMIT_MICROS / 1e6)
        ledger = RedisBudgetLedger(REDIS_URL, prefix=prefix)
        try:
            status = (await ledger.status([scope]))[scope.account]
            account = ledger.account_key(scope, scope.period_id(datetime.now(UTC)))
        finally:
            await ledger.close()
        client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
        try:
            raw = await client.hgetall(account)
            holds = await client.zcard(f"{account}:holds")
        finally:
            await client.aclose()
    finally:
        await delete_keys(prefix)

    assert len(records) == 600 and summaries == [{"failed_settlements": 0}] * 2
    assert not [r for r in records if r.get("unavailable")], "Redis must answer every reserve in this test"
    charged = sum(round(r["actual"] * 1e6) for r in records if r["allowed"])
    assert int(raw["spent"]) == charged <= LIMIT_MICROS
    assert int(raw["reserved"]) == 0 and holds == 0 and set(raw) == {"spent", "reserved"}
    assert (round(status.spent_usd * 1e6), status.reserved_usd) == (charged, 0.0)
    allowed = [r for r in one if r["allowed"]], [r for r in two if r["allowed"]]
    assert all(allowed), "both processes must have won some of the budget"
    assert sum(not r["allowed"] for r in records) > 50, "the budget must really have been contested"
    demand = sum(round(r["estimate"] * 1e6) for r in records)
    assert demand > 3 * LIMIT_MICROS
