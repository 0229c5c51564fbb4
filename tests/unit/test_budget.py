"""The BudgetLedger behaviours, run against the in-memory ledger and RedisBudgetLedger alike."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from uuid import uuid4

import pytest

from routemesh.router.admission.budget_lease import LeasedBudgetLedger
from routemesh.router.admission.budget_redis import RedisBudgetLedger
from routemesh.router.admission.budget import (
    ACCOUNT_GRACE_S,
    BudgetExceeded,
    BudgetScope,
    BudgetUnavailable,
    InMemoryBudgetLedger,
)
from tests.unit.test_telemetry_store import REDIS_URL, FreezableProxy, delete_keys, redis_keys, require_redis

# Midday, so only the rollover test crosses a period boundary.
NOON = datetime(2026, 11, 27, 12, 0, tzinfo=UTC).timestamp()
MONTHLY = BudgetScope("acme-monthly", "tenant=acme", "month", limit_usd=1.0, soft_limit_fraction=0.8)
PROJECT = BudgetScope("web-daily", "tenant=acme/project=web", "day", limit_usd=0.3)


class FakeClock:
    def __init__(self, now: float = NOON):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "redis", "leased"])
async def new_ledger(request):
    """A factory of ledgers of one kind; Redis ledgers share one unique prefix, deleted afterwards."""
    kind = request.param
    prefix = f"rmtest:{uuid4().hex}:"
    if kind != "memory":
        await require_redis()
    created = []

    def factory(clock=None, **kwargs):
        clock = clock or FakeClock()
        ledger = (InMemoryBudgetLedger(clock=clock) if kind == "memory"
                  else RedisBudgetLedger(REDIS_URL, prefix=prefix, clock=clock, **kwargs) if kind == "redis"
                  else LeasedBudgetLedger(REDIS_URL, prefix=prefix, clock=clock, **kwargs))
        created.append(ledger)
        return ledger

    yield factory
    for ledger in created:
        await ledger.close()
    if kind != "memory":
        await delete_keys(prefix)


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def ledger(new_ledger, clock):
    return new_ledger(clock)


async def spent_reserved(ledger, scope=MONTHLY) -> tuple[float, float]:
    status = (await ledger.status([scope]))[scope.account]
    return round(status.spent_usd, 6), round(status.reserved_usd, 6)


def test_period_ids_and_ends_are_utc_days_and_months():
    now = datetime(2026, 12, 31, 23, 30, tzinfo=UTC)
    assert (PROJECT.period_id(now), MONTHLY.period_id(now)) == ("2026-12-31", "2026-12")
    assert PROJECT.period_end(now) == datetime(2027, 1, 1, tzinfo=UTC) == MONTHLY.period_end(now)
    assert MONTHLY.period_id(datetime(2026, 11, 30, 23, 30)) == "2026-11"
    assert PROJECT.account_ttl_s(now) == 1800 + ACCOUNT_GRACE_S


async def test_reserve_within_the_limit_holds_the_amount(ledger):
    reservation = await ledger.reserve([MONTHLY], 0.4)
    assert (reservation.scopes, reservation.amount_usd, reservation.unchecked) == ((MONTHLY,), 0.4, False)
    assert reservation.expires_at_ms == NOON * 1000 + 600_000
    assert await spent_reserved(ledger) == (0.0, 0.4)


async def test_reserve_over_the_limit_names_the_budget_and_what_is_left(ledger):
    await ledger.reserve([MONTHLY], 0.7)
    with pytest.raises(BudgetExceeded) as caught:
        await ledger.reserve([MONTHLY], 0.4)
    assert caught.value.scope == MONTHLY and caught.value.needed_usd == 0.4
    assert "'acme-monthly'" in str(caught.value) and "$0.300000 left" in str(caught.value)
    assert not isinstance(caught.value, BudgetUnavailable)
    await ledger.reserve([MONTHLY], 0.3)
    assert await spent_reserved(ledger) == (0.0, 1.0)


async def test_status_flags_soft_limit_and_exhaustion_counting_reserved_spend(ledger):
    first = await ledger.reserve([MONTHLY], 0.5)
    status = (await ledger.status([MONTHLY]))[MONTHLY.account]
    assert (status.soft_limited, status.exhausted, status.limit_usd) == (False, False, 1.0)
    await ledger.settle(first, 0.5)
    await ledger.reserve([MONTHLY], 0.3)
    status = (await ledger.status([MONTHLY]))[MONTHLY.account]
    assert (status.soft_limited, status.exhausted) == (True, False)
    await ledger.reserve([MONTHLY], 0.2)
    assert (await ledger.status([MONTHLY]))[MONTHLY.account].exhausted


async def test_settle_charges_the_actual_cost_and_frees_the_rest(ledger):
    reservation = await ledger.reserve([MONTHLY], 0.5)
    await ledger.settle(reservation, 0.2)
    assert await spent_reserved(ledger) == (0.2, 0.0)
    await ledger.reserve([MONTHLY], 0.8)
    with pytest.raises(BudgetExceeded):
        await ledger.reserve([MONTHLY], 0.000001)


async def test_settling_twice_or_after_release_charges_once(ledger):
    settled = await ledger.reserve([MONTHLY], 0.5)
    await ledger.settle(settled, 0.2)
    await ledger.settle(settled, 0.2)
    await ledger.release(settled)
    released = await ledger.reserve([MONTHLY], 0.5)
    await ledger.release(released)
    await ledger.settle(released, 0.3)
    assert await spent_reserved(ledger) == (0.2, 0.0)


async def test_release_frees_without_charge(ledger):
    reservation = await ledger.reserve([MONTHLY], 0.9)
    await ledger.release(reservation)
    assert await spent_reserved(ledger) == (0.0, 0.0)
    await ledger.reserve([MONTHLY], 0.9)


async def test_expired_reservations_are_swept_and_settling_one_still_charges(ledger, clock):
    expired = await ledger.reserve([MONTHLY], 0.9, ttl_s=60)
    clock.now += 59
    assert await spent_reserved(ledger) == (0.0, 0.9)
    clock.now += 1
    assert await spent_reserved(ledger) == (0.0, 0.0)
    await ledger.reserve([MONTHLY], 0.9)
    await ledger.settle(expired, 0.05)
    assert await spent_reserved(ledger) == (0.05, 0.9)


async def test_several_scopes_are_reserved_all_or_nothing(ledger):
    both = [MONTHLY, PROJECT]
    first = await ledger.reserve(both, 0.2)
    with pytest.raises(BudgetExceeded) as caught:
        await ledger.reserve(both, 0.2)
    assert caught.value.scope == PROJECT and "'web-daily'" in str(caught.value)
    assert await spent_reserved(ledger, MONTHLY) == (0.0, 0.2)
    await ledger.reserve([MONTHLY], 0.75)
    with pytest.raises(BudgetExceeded) as caught:
        await ledger.reserve(both, 0.1)
    assert caught.value.scope == MONTHLY
    assert await spent_reserved(ledger, PROJECT) == (0.0, 0.2)
    await ledger.settle(first, 0.15)
    status = await ledger.status(both)
    assert set(status) == {"acme-monthly:tenant=acme", "web-daily:tenant=acme/project=web"}
    assert [round(s.spent_usd, 6) for s in status.values()] == [0.15, 0.15]


async def test_a_new_period_starts_empty_and_late_settles_charge_the_reserved_period(ledger, clock):
    clock.now = datetime(2026, 11, 27, 23, 59, 30, tzinfo=UTC).timestamp()
    await ledger.settle(await ledger.reserve([PROJECT], 0.2), 0.2)
    late = await ledger.reserve([PROJECT], 0.1)
    clock.now += 60
    assert await spent_reserved(ledger, PROJECT) == (0.0, 0.0)
    await ledger.reserve([PROJECT], 0.3)
    await ledger.settle(late, 0.1)
    assert await spent_reserved(ledger, PROJECT) == (0.0, 0.3)
    clock.now -= 60
    assert await spent_reserved(ledger, PROJECT) == (0.3, 0.0)


async def test_concurrent_reserves_never_overspend(new_ledger):
    first = new_ledger()
    # Two Redis ledgers stand for two routers; in-memory ledgers share nothing, so one stands for itself.
    ledgers = [first] if isinstance(first, InMemoryBudgetLedger) else [first, new_ledger()]

    async def one(i: int) -> bool:
        try:
            await ledgers[i % len(ledgers)].reserve([MONTHLY], 0.1)
            return True
        except BudgetExceeded:
            return False

    granted = await asyncio.gather(*(one(i) for i in range(50)))
    assert sum(granted) == 10
    assert await spent_reserved(first) == (0.0, 1.0)


async def test_negative_amounts_are_refused(ledger):
    with pytest.raises(ValueError):
        await ledger.reserve([MONTHLY], -0.1)
    with pytest.raises(ValueError):
        await ledger.settle(await ledger.reserve([MONTHLY], 0.1), float("nan"))


async def test_redis_keys_are_under_the_prefix_and_expire_after_their_period(clock):
    await require_redis()
    prefix = f"rmtest:{uuid4().hex}:"
    ledger = RedisBudgetLedger(REDIS_URL, prefix=prefix, clock=clock)
    try:
        reservation = await ledger.reserve([MONTHLY, PROJECT], 0.1)
        await ledger.reserve([PROJECT], 0.1)
        await ledger.settle(reservation, 0.05)
        keys = await redis_keys(prefix)
    finally:
        await ledger.close()
        await delete_keys(prefix)
    base = f"{prefix}budget:"
    month, day = f"{base}acme-monthly:tenant=acme:2026-11", f"{base}web-daily:tenant=acme/project=web:2026-11-27"
    assert set(keys) == {month, day, f"{day}:holds", f"{base}settled:{reservation.id}"}
    assert keys[month] == 3 * 86400 + 12 * 3600 + ACCOUNT_GRACE_S
    assert keys[day] == keys[f"{day}:holds"] == 12 * 3600 + ACCOUNT_GRACE_S


async def test_redis_down_fails_closed_quickly():
    ledger = RedisBudgetLedger("redis://127.0.0.1:1", prefix=f"rmtest:{uuid4().hex}:")
    try:
        for _ in range(2):
            began = time.monotonic()
            with pytest.raises(BudgetUnavailable) as caught:
                await ledger.reserve([MONTHLY], 0.1)
            assert await ledger.status([MONTHLY]) == {}
            assert time.monotonic() - began < 1.0
        assert isinstance(caught.value, BudgetExceeded) and caught.value.status.exhausted
        assert "'acme-monthly'" in str(caught.value) and "could not be checked" in str(caught.value)
        unchecked = BudgetScope("b", "k", "day", 1.0)
        await ledger.release(await InMemoryBudgetLedger().reserve([unchecked], 0.1))
        assert ledger.failed_settlements == 1
    finally:
        await ledger.close()


async def test_frozen_redis_fails_closed_or_open_within_a_second(redis_prefix, caplog):
    host, port = REDIS_URL.removeprefix("redis://").split("/")[0].split(":")
    proxy = FreezableProxy(host, int(port))
    url = f"redis://127.0.0.1:{await proxy.start()}/0"
    closed = RedisBudgetLedger(url, prefix=redis_prefix, failure_backoff_s=0.1)
    opened = RedisBudgetLedger(url, prefix=redis_prefix, fail_open=True, failure_backoff_s=0.1)
    try:
        await closed.reserve([MONTHLY], 0.1)
        await opened.reserve([MONTHLY], 0.1)
        proxy.thawed.clear()
        began = time.monotonic()
        with pytest.raises(BudgetUnavailable):
            await closed.reserve([MONTHLY], 0.1)
        assert time.monotonic() - began < 1.0
        unchecked = []
        with caplog.at_level(logging.WARNING, logger="routemesh.router.admission.budget"):
            for _ in range(3):
                began = time.monotonic()
                unchecked.append(await opened.reserve([MONTHLY], 0.1))
                assert time.monotonic() - began < 1.0
        assert all(r.unchecked for r in unchecked)
        assert len([r for r in caplog.records if "fail_open" in r.message]) == 1
        proxy.thawed.set()
        await asyncio.sleep(0.15)
        await opened.settle(unchecked[0], 0.05)
        status = (await closed.status([MONTHLY]))[MONTHLY.account]
        assert (round(status.spent_usd, 6), round(status.reserved_usd, 6)) == (0.05, 0.2)
    finally:
        await closed.close()
        await opened.close()
        await proxy.close()


@pytest.fixture
async def redis_prefix():
    await require_redis()
    prefix = f"rmtest:{uuid4().hex}:"
    yield prefix
    await delete_keys(prefix)
