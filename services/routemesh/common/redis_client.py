"""Redis clients that fail fast: short timeouts, a blocking pool, no retries, so no caller ever hangs."""

from __future__ import annotations

from redis import asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff


def create_client(url: str, max_connections: int = 16, timeout_s: float = 0.25) -> aioredis.Redis:
    """An asyncio client with socket, connect and pool timeouts of `timeout_s` and no retries."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout_s,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )
    return aioredis.Redis.from_pool(pool)
