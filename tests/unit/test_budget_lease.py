"""LeasedBudgetLedger against a real Redis: few round trips, never overspent, leases given back and expiring.

The BudgetLedger behaviours it shares with the other ledgers run in test_budget.py ("leased").
"""

from __future__ import annotations

import asyncio
import random
from uuid import uuid4

from routemesh.router.admission.budget import BudgetExceeded, BudgetScope
from routemesh.router.admission.budget_lease import LeasedBudgetLedger
from routemesh.router.admission.budget_redis import RedisBudgetLedger
from tests.unit.test_budget import MONTHLY, FakeClock, delete_keys, require_redis
from tests.unit.test_telemetry_store import REDIS_URL

import pytest

DAILY = BudgetScope("per-tenant-daily", "tenant=acme", "day", limit_usd=100.0)


@pytest.fixture
async def prefix():
    """A Redis key prefix of this test's own, its keys deleted afterwards."""
    await require_redis()
    prefix = f"rmtest:{uuid4().hex}:"
    yield prefix
    await delete_keys(prefix)


async def in_redis(prefix: str, scope: BudgetScope, clock: FakeClock) -> tuple[float, float]:
    """(spent, reserved) as every other router and telemetry read it."""
    plain = RedisBudgetLedger(REDIS_URL, prefix=prefix, clock=clock)
    try:
        status = (await plain.status([scope]))[scope.account]
        return round(status.spent_usd, 6), round(status.reserved_usd, 6)
    finally:
        await plain.close()


async def test_many_requests_take_few_round_trips_and_every_charge_reaches_redis(prefix):
    clock = FakeClock()
    ledger = LeasedBudgetLedger(REDIS_URL, prefix=prefix, clock=clock)
    try:
        for _ in range(200):
            reservation = await ledger.reserve([DAILY], 0.01)
            assert (await ledger.status([DAILY]))[DAILY.account].reserved_usd == pytest.approx(0.01)
            await ledger.settle(reservation, 0.004)
        # 5 % of $100 leased at a time: a few scripts serve 200 requests (two each without leases, plus status).
        assert ledger.syncs <= 3
        status = (await ledger.status([DAILY]))[DAILY.account]
        assert (round(status.spent_usd, 6), round(status.reserved_usd, 6)) == (0.8, 0.0)
        spent, reserved = await in_redis(prefix, DAILY, clock)
        assert spent < 0.8 and reserved >= 4.9  # not flushed yet; the lease is held
        await ledger.flush()
        spent, reserved = await in_redis(prefix, DAILY, clock)
        assert spent == 0.8 and 4.9 <= reserved <= 5.0
    finally:
        await ledger.close()
    assert await in_redis(prefix, DAILY, clock) == (0.8, 0.0)  # closing gives the lease back


async def test_routers_sharing_a_budget_never_overspend_and_use_nearly_all_of_it(prefix):
    clock = FakeClock()
    routers = [LeasedBudgetLedger(REDIS_URL, prefix=prefix, clock=clock, flush_s=0.01) for _ in range(3)]
    rnd = random.Random(7)

    async def one(i: int) -> bool:
        ledger = routers[i % len(routers)]
        try:
            reservation = await ledger.reserve([MONTHLY], 0.01)
        except BudgetExceeded:
            return False
        await asyncio.sleep(rnd.random() * 0.02)
        await ledger.settle(reservation, 0.01)
        return True

    try:
        granted = await asyncio.gather(*(one(i) for i in range(150)))
    finally:
        for ledger in routers:
            await ledger.close()
    spent, reserved = await in_redis(prefix, MONTHLY, clock)
    assert reserved == 0.0 and spent == round(sum(granted) * 0.01, 6)
    assert 95 <= sum(granted) <= 100  # $1.00 at $0.01: leases near the limit shrink to the request


async def test_an_idle_lease_is_given_back_and_a_dead_routers_lease_expires(prefix):
    clock = FakeClock()
    ledger = LeasedBudgetLedger(REDIS_URL, prefix=prefix, clock=clock, flush_s=0.05, idle_release_s=0.2)
    dead = LeasedBudgetLedger(REDIS_URL, prefix=prefix, clock=clock, ttl_s=30)
    try:
        await ledger.settle(await ledger.reserve([DAILY], 0.01), 0.01)
        await dead.reserve([DAILY], 0.01)
        spent, reserved = await in_redis(prefix, DAILY, clock)
        assert reserved > 9  # two leases of about $5
        await asyncio.sleep(0.6)
        spent, reserved = await in_redis(prefix, DAILY, clock)
        assert spent == 0.01 and 4.5 < reserved < 5.1  # the idle one went back; the other has an open reservation
        dead._flusher.cancel()  # a router that stops without closing: its lease lapses in Redis by itself
        clock.now += 31
        assert await in_redis(prefix, DAILY, clock) == (0.01, 0.0)
    finally:
        await ledger.close()
        dead._leases.clear()
        await dead.close()


async def test_a_lowered_limit_refuses_at_the_next_sync_and_leases_never_exceed_the_limit(prefix):
    clock = FakeClock()
    ledger = LeasedBudgetLedger(REDIS_URL, prefix=prefix, clock=clock, fraction=1.0, cap_usd=1000)
    try:
        await ledger.reserve([MONTHLY], 0.1)
        assert (await in_redis(prefix, MONTHLY, clock))[1] == 1.0  # all the headroom, never more
        lower = BudgetScope(MONTHLY.budget, MONTHLY.key, "month", limit_usd=0.15)
        with pytest.raises(BudgetExceeded) as caught:
            await ledger.reserve([lower], 0.1)
        assert "$0.050000 left" in str(caught.value)
        assert (await in_redis(prefix, MONTHLY, clock))[1] == 0.1  # the lease shrank to the open reservation
    finally:
        await ledger.close()


async def test_charges_whose_reply_was_lost_are_sent_again_and_counted_once(prefix):
    clock = FakeClock()
    ledger = LeasedBudgetLedger(REDIS_URL, prefix=prefix, clock=clock, flush_s=60)
    real_run = ledger._run
    lost = {"replies": 1}

    async def run_then_lose_the_reply(*args, **kwargs):
        reply = await real_run(*args, **kwargs)
        if lost["replies"]:
            lost["replies"] -= 1
            raise asyncio.CancelledError  # as when the request whose sync it was goes away
        return reply

    try:
        await ledger.settle(await ledger.reserve([DAILY], 0.01), 0.01)
        ledger._run = run_then_lose_the_reply  # type: ignore[method-assign]
        with pytest.raises(asyncio.CancelledError):
            await ledger.flush()
        assert (await in_redis(prefix, DAILY, clock))[0] == 0.01  # the script ran
        await ledger.flush()  # the same charge, sent again under its number
        assert (await in_redis(prefix, DAILY, clock))[0] == 0.01
        # The lease is not used until a sync said its size again.
        await ledger.settle(await ledger.reserve([DAILY], 0.02), 0.02)
    finally:
        await ledger.close()
    assert await in_redis(prefix, DAILY, clock) == (0.03, 0.0)
