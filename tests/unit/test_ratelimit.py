"""The RateLimiter behaviours, run against the in-memory limiter and RedisRateLimiter alike."""

from __future__ import annotations

import asyncio
import logging
import time
from uuid import uuid4

import pytest
import redis.asyncio as aioredis

from routemesh.router.admission.ratelimit import (
    KEY_TTL_S,
    UNLIMITED,
    InMemoryRateLimiter,
    RateDecision,
    RateLimit,
    RedisRateLimiter,
)
from tests.unit.test_telemetry_store import REDIS_URL, delete_keys, redis_keys, require_redis

# A minute boundary, so window arithmetic below reads in whole seconds from T0.
T0 = 1_800_000_000_000
MODEL = RateLimit("model:fast-cheap", rpm=10, tpm=1000)
TENANT = RateLimit("tenant:acme", rpm=2)


@pytest.fixture(params=["memory", "redis"])
async def new_limiter(request):
    """A factory of limiters of one kind; Redis limiters share one unique prefix, deleted afterwards."""
    kind = request.param
    prefix = f"rmtest:{uuid4().hex}:"
    if kind == "redis":
        await require_redis()
    created = []

    def factory():
        limiter = InMemoryRateLimiter() if kind == "memory" else RedisRateLimiter(REDIS_URL, prefix=prefix)
        created.append(limiter)
        return limiter

    yield factory
    for limiter in created:
        await limiter.close()
    if kind == "redis":
        await delete_keys(prefix)


@pytest.fixture
def limiter(new_limiter):
    return new_limiter()


async def test_rpm_is_enforced_with_the_time_until_the_oldest_request_leaves(limiter):
    limit = RateLimit("model:m", rpm=3)
    for second in range(3):
        assert await limiter.acquire([limit], 0, T0 + second * 1000) == RateDecision(True)
    denied = await limiter.acquire([limit], 0, T0 + 10_000)
    assert denied == RateDecision(False, "model:m", "rpm 3 reached", 50.0)


async def test_tpm_is_enforced_and_a_request_larger_than_the_limit_never_fits(limiter):
    assert (await limiter.acquire([MODEL], 600, T0)).allowed
    denied = await limiter.acquire([MODEL], 500, T0 + 500)
    assert (denied.allowed, denied.reason, denied.retry_after_s) == (False, "tpm 1000 reached", 59.5)
    assert (await limiter.acquire([MODEL], 400, T0 + 1000)).allowed
    huge = await limiter.acquire([MODEL], 1500, T0 + 61_000)
    assert (huge.allowed, huge.reason, huge.retry_after_s) == (False, "request of 1500 tokens exceeds tpm 1000", 60.0)


async def test_several_limits_are_taken_all_or_nothing(limiter):
    for _ in range(2):
        assert (await limiter.acquire([MODEL, TENANT], 100, T0)).allowed
    denied = await limiter.acquire([MODEL, TENANT], 100, T0 + 1000)
    assert (denied.allowed, denied.key, denied.reason) == (False, "tenant:acme", "rpm 2 reached")
    assert await limiter.headroom([MODEL, TENANT], T0 + 1000) == {
        "model:fast-cheap": (8, 800), "tenant:acme": (0, UNLIMITED)}
    assert (await limiter.acquire([MODEL], 100, T0 + 1000)).allowed


async def test_the_longest_wait_among_denying_limits_is_reported(limiter):
    short = RateLimit("tenant:short", rpm=1)
    await limiter.acquire([short], 0, T0)
    await limiter.acquire([TENANT], 0, T0 + 30_000)
    await limiter.acquire([TENANT], 0, T0 + 40_000)
    denied = await limiter.acquire([short, TENANT], 0, T0 + 45_000)
    assert (denied.key, denied.retry_after_s) == ("tenant:acme", 45.0)


async def test_the_window_slides_second_by_second(limiter):
    limit = RateLimit("model:m", rpm=2)
    await limiter.acquire([limit], 0, T0 + 500)
    await limiter.acquire([limit], 0, T0 + 20_500)
    assert (await limiter.acquire([limit], 0, T0 + 30_000)).retry_after_s == 30.0
    assert not (await limiter.acquire([limit], 0, T0 + 59_999)).allowed
    assert (await limiter.acquire([limit], 0, T0 + 60_000)).allowed
    assert (await limiter.acquire([limit], 0, T0 + 60_000)).retry_after_s == 20.0
    assert await limiter.headroom([limit], T0 + 140_000) == {"model:m": (2, UNLIMITED)}


async def test_adjust_tokens_corrects_the_estimate(limiter):
    await limiter.acquire([MODEL], 800, T0)
    await limiter.adjust_tokens(MODEL, -500, T0 + 2000)
    assert await limiter.headroom([MODEL], T0 + 2000) == {"model:fast-cheap": (9, 700)}
    assert (await limiter.acquire([MODEL], 700, T0 + 3000)).allowed
    await limiter.adjust_tokens(MODEL, 300, T0 + 4000)
    assert await limiter.headroom([MODEL], T0 + 4000) == {"model:fast-cheap": (8, 0)}
    assert not (await limiter.acquire([MODEL], 1, T0 + 5000)).allowed
    assert await limiter.headroom([MODEL], T0 + 61_000) == {"model:fast-cheap": (9, 500)}
    assert await limiter.headroom([MODEL], T0 + 63_000) == {"model:fast-cheap": (10, 700)}


async def test_a_correction_outliving_its_estimate_never_frees_more_than_the_limit(limiter):
    await limiter.acquire([MODEL], 100, T0)
    await limiter.adjust_tokens(MODEL, -100, T0 + 1000)
    assert await limiter.headroom([MODEL], T0 + 60_000) == {"model:fast-cheap": (10, 1000)}
    assert not (await limiter.acquire([MODEL], 1001, T0 + 60_000)).allowed


async def test_unlimited_and_empty_limits_always_allow(limiter):
    free = RateLimit("model:free")
    for _ in range(5):
        assert await limiter.acquire([free], 10**9, T0) == RateDecision(True)
    assert await limiter.acquire([], 5, T0) == RateDecision(True)
    assert await limiter.headroom([free], T0) == {"model:free": (UNLIMITED, UNLIMITED)}
    with pytest.raises(ValueError):
        await limiter.acquire([MODEL], -1, T0)


async def test_concurrent_acquires_take_exactly_the_limit(new_limiter):
    first = new_limiter()
    # Two Redis limiters stand for two routers; in-memory limiters share nothing, so one stands for itself.
    limiters = [first] if isinstance(first, InMemoryRateLimiter) else [first, new_limiter()]
    limit = RateLimit("model:contested", rpm=10)
    now = int(time.time() * 1000)
    decisions = await asyncio.gather(*(limiters[i % len(limiters)].acquire([limit], 1, now) for i in range(50)))
    assert sum(d.allowed for d in decisions) == 10
    assert not any(d.unchecked for d in decisions)
    assert {d.reason for d in decisions if not d.allowed} == {"rpm 10 reached"}


async def test_redis_keys_are_under_the_prefix_expire_and_drop_old_seconds():
    await require_redis()
    prefix = f"rmtest:{uuid4().hex}:"
    limiter = RedisRateLimiter(REDIS_URL, prefix=prefix)
    try:
        now = int(time.time() * 1000)
        await limiter.acquire([MODEL, TENANT], 5, now - 90_000)
        await limiter.acquire([MODEL], 7, now)
        keys = await redis_keys(prefix)
        client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
        fields = await client.hgetall(limiter.redis_key(MODEL.key))
        await client.aclose()
    finally:
        await limiter.close()
        await delete_keys(prefix)
    assert set(keys) == {f"{prefix}ratelimit:model:fast-cheap", f"{prefix}ratelimit:tenant:acme"}
    assert all(0 < ttl <= KEY_TTL_S for ttl in keys.values()), keys
    assert fields == {f"r:{now // 1000}": "1", f"t:{now // 1000}": "7"}


async def test_redis_down_fails_open_quickly_and_warns_once(caplog):
    limiter = RedisRateLimiter("redis://127.0.0.1:1", prefix=f"rmtest:{uuid4().hex}:")
    try:
        with caplog.at_level(logging.WARNING, logger="routemesh.router.admission.ratelimit"):
            for _ in range(3):
                began = time.monotonic()
                decision = await limiter.acquire([MODEL], 10)
                assert (decision.allowed, decision.unchecked) == (True, True)
                assert "Redis" in decision.reason
                assert await limiter.headroom([MODEL]) == {}
                await limiter.adjust_tokens(MODEL, 5)
                assert time.monotonic() - began < 1.0
        assert len([r for r in caplog.records if r.name == "routemesh.router.admission.ratelimit"]) == 1
    finally:
        await limiter.close()
