"""Redis frozen behind a proxy: chats go on, rate limits fail open, budgets fail closed; all recovers on thaw."""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import grpc
import pytest

from routemesh.client import RouterClient, RoutemeshError
from routemesh.mesh import Mesh
from routemesh.v1 import common_pb2
from tests.chaos.conftest import REDIS_URL, FaultProxy, base_policy

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

# Every chat must finish within this while Redis hangs (the sim runs at the test time scale).
BOUNDED_S = 2.0
RECOVERY_S = 5.0
FROZEN_S = 3.0
LIMITED_RPM = 3


def redis_fault_policy() -> dict:
    doc = base_policy()
    # Only these tenants have budgets: a catch-all budget would refuse every tenant while Redis is away.
    # "budgeted" is served before Redis goes away (its router then holds a lease of its headroom); the "fresh"
    # ones ask first while Redis is away, with no lease to draw on.
    doc["budgets"] = [{"name": f"{tenant}-daily", "tenant": tenant, "period": "day", "limit_usd": 10.0}
                      for tenant in ("budgeted", "fresh", "fresh-refused")]
    doc["tenants"]["limited"] = {"limits": {"rpm": LIMITED_RPM, "tpm": 0}}
    return doc


@pytest.fixture(scope="module")
def redis_proxy() -> Iterator[FaultProxy]:
    url = urlsplit(REDIS_URL)
    with FaultProxy(url.hostname or "127.0.0.1", url.port or 6379) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def redis_mesh(mesh_factory, redis_proxy) -> Mesh:
    proxied = urlsplit(REDIS_URL)._replace(netloc=redis_proxy.address).geturl()
    return mesh_factory("redis-faults", redis_fault_policy(), redis_url=proxied)


@pytest.fixture
def client(redis_mesh, redis_proxy) -> Iterator[RouterClient]:
    with RouterClient(redis_mesh.layout.address("router"), timeout=30) as c:
        yield c
    redis_proxy.passthrough()


def ask(client: RouterClient, tenant: str = "", prompt: str = "What time is it in Lisbon?") -> tuple[float, object]:
    """(seconds taken, ChatResult or RoutemeshError)."""
    started = time.monotonic()
    metadata = {"tenant": tenant} if tenant else {}
    try:
        result: object = client.complete(prompt, metadata=metadata, max_tokens=32)
    except RoutemeshError as err:
        result = err
    return time.monotonic() - started, result


def assert_complete(result: object) -> None:
    assert not isinstance(result, RoutemeshError), result
    assert result.final.status in (common_pb2.FINISH_STATUS_COMPLETE, common_pb2.FINISH_STATUS_LENGTH)  # type: ignore[attr-defined]


def assert_refused(result: object, reason: str) -> None:
    assert isinstance(result, RoutemeshError), f"expected {reason}, got {result}"
    assert result.code == grpc.StatusCode.RESOURCE_EXHAUSTED and result.reason == reason, result


def test_frozen_redis_degrades_as_documented_and_thaw_recovers(client, redis_proxy, figures):
    # Healthy: the budget is checked and the tenant's rate limit holds.
    assert_complete(ask(client, "budgeted")[1])
    for _ in range(LIMITED_RPM):
        assert_complete(ask(client, "limited")[1])
    assert_refused(ask(client, "limited")[1], "RATE_LIMITED")

    redis_proxy.freeze()
    frozen_at = time.monotonic()
    # Long enough for the routers' Redis back-off (1 s) to expire and Redis to be tried again, frozen.
    plain = []
    while time.monotonic() - frozen_at < FROZEN_S:
        plain.append(ask(client, prompt=f"Question {len(plain)} while Redis hangs?"))
    for _, result in plain:
        assert_complete(result)
    slowest = max(took for took, _ in plain)
    figures.record("frozen Redis: slowest chat", slowest * 1000,
                   note=f"{len(plain)} chats in {FROZEN_S:.0f} s; bound {BOUNDED_S:.0f} s")
    assert slowest < BOUNDED_S
    # Rate limits fail open: the tenant already at its limit is served.
    for took, result in (ask(client, "limited") for _ in range(2)):
        assert_complete(result)
        assert took < BOUNDED_S
    # A tenant whose budget the router holds a lease of is served from it: that headroom is held in Redis.
    took, result = ask(client, "budgeted")
    assert_complete(result)
    assert took < BOUNDED_S
    # Budgets with no lease fail closed, promptly.
    took, result = ask(client, "fresh")
    assert_refused(result, "BUDGET_UNAVAILABLE")
    figures.record("frozen Redis: budgeted tenant refused in", took * 1000, note="a tenant with no lease held")
    assert took < BOUNDED_S
    assert redis_proxy.active > 0, "the frozen connections should still be open"

    redis_proxy.passthrough()
    thawed_at = time.monotonic()
    while True:
        took, result = ask(client, "fresh")
        if not isinstance(result, RoutemeshError):
            break
        assert_refused(result, "BUDGET_UNAVAILABLE")
        assert time.monotonic() - thawed_at < RECOVERY_S, "budgets did not recover after Redis came back"
        time.sleep(0.1)
    assert_complete(result)
    figures.record("Redis thawed: budgeted tenant served again after", (time.monotonic() - thawed_at) * 1000,
                   note=f"frozen for {thawed_at - frozen_at:.1f} s")
    # Rate limits are enforced again (the same minute's counts are still in Redis) once the limiter's
    # own back-off is over: a request served meanwhile is the documented fail-open, not a leak.
    while not isinstance(result := ask(client, "limited")[1], RoutemeshError):
        assert time.monotonic() - thawed_at < RECOVERY_S, "rate limits did not recover after Redis came back"
        time.sleep(0.1)
    assert_refused(result, "RATE_LIMITED")


def test_refused_redis_fails_fast(client, redis_proxy, figures):
    redis_proxy.refuse()
    took, result = ask(client, "fresh-refused")
    assert_refused(result, "BUDGET_UNAVAILABLE")
    plain = [ask(client, prompt=f"Question {i} with Redis down?") for i in range(3)]
    for _, chat in plain:
        assert_complete(chat)
    slowest = max(t for t, _ in plain)
    figures.record("Redis refusing connections: slowest of 3 chats", slowest * 1000)
    assert slowest < BOUNDED_S and took < BOUNDED_S
    redis_proxy.passthrough()
    started = time.monotonic()
    while isinstance(ask(client, "fresh-refused")[1], RoutemeshError):
        assert time.monotonic() - started < RECOVERY_S, "budgets did not recover after Redis came back"
        time.sleep(0.1)
