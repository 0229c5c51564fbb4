"""Fixtures shared by every test tier: Redis for this run, under a key prefix of its own."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis

REDIS_URL = os.environ.get("ROUTEMESH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def redis_available() -> bool:
    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=1, socket_connect_timeout=1).ping()
        return True
    except redis.RedisError:
        return False


@pytest.fixture(scope="session")
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test run's own; its keys are deleted at the end."""
    if not redis_available():
        pytest.fail(f"Redis is required at {REDIS_URL} (set ROUTEMESH_TEST_REDIS_URL to use another)")
    prefix = f"rmtest:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(match=prefix + "*", count=1000):
        client.delete(key)


POSTGRES_URL = os.environ.get("ROUTEMESH_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def pg_ledger_url() -> Iterator[str]:
    """A ledger URL in a PostgreSQL schema of this test's own; the schema is dropped at the end."""
    import asyncio

    import asyncpg

    schema = f"rmtest_{uuid.uuid4().hex[:12]}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(POSTGRES_URL, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    try:
        asyncio.run(run("SELECT 1"))
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(f"PostgreSQL is required at {POSTGRES_URL} (set ROUTEMESH_TEST_POSTGRES_URL): {exc}")
    yield f"{POSTGRES_URL}?schema={schema}"
    asyncio.run(run(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
