"""Redis clients that fail fast: short timeouts, a blocking pool, no retries, so no caller ever hangs."""

from __future__ import annotations

import asyncio
import errno
import inspect
import logging
import time
from collections.abc import Awaitable
from typing import TypeVar

from redis import asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

T = TypeVar("T")
# Whole-operation bound: pool wait, connect and reply stay under the ~0.5 s a request may wait.
OPERATION_TIMEOUT_S = 0.45
# After a failure, skip Redis for this long so a dead or frozen server costs each request nothing.
FAILURE_BACKOFF_S = 1.0
WARNING_INTERVAL_S = 10.0
REDIS_ERRORS = (RedisError, OSError, TimeoutError)


class _ClosedTransportAsOSError:
    """Under uvloop, writing to a transport the server already closed raises RuntimeError ("the handler
    is closed") where asyncio's own loop raises nothing; redis-py only maps OSError to ConnectionError."""

    async def _send_packed_command(self, command):  # type: ignore[no-untyped-def]
        try:
            await super()._send_packed_command(command)  # type: ignore[misc]
        except RuntimeError as exc:
            raise OSError(errno.EPIPE, str(exc)) from exc


_GUARDED = {base: type(f"Guarded{base.__name__}", (_ClosedTransportAsOSError, base), {})
            for base in (aioredis.Connection, aioredis.SSLConnection, aioredis.UnixDomainSocketConnection)}


def create_client(url: str, max_connections: int = 16, timeout_s: float = 0.25) -> aioredis.Redis:
    """An asyncio client with socket, connect and pool timeouts of `timeout_s` and no retries."""
    scheme = url.partition("://")[0]
    base = {"rediss": aioredis.SSLConnection, "unix": aioredis.UnixDomainSocketConnection}.get(
        scheme, aioredis.Connection)
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        connection_class=_GUARDED[base],
        max_connections=max_connections,
        timeout=timeout_s,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )
    return aioredis.Redis.from_pool(pool)


class RedisUnavailable(Exception):
    """Redis failed now, or failed recently enough to be skipped."""


class FailFast:
    """Bounds every Redis operation, skips Redis for a while after a failure, and rate-limits warnings.

    A dead or frozen Redis then costs a request at most one bounded wait, and an outage logs one line
    per interval instead of one per request.
    """

    def __init__(self, logger: logging.Logger, *, timeout_s: float = OPERATION_TIMEOUT_S,
                 backoff_s: float = FAILURE_BACKOFF_S, warning_interval_s: float = WARNING_INTERVAL_S):
        self.log = logger
        self.timeout_s = timeout_s
        self.backoff_s = backoff_s
        self.warning_interval_s = warning_interval_s
        self._skip_until = 0.0
        self._next_warning = 0.0

    async def run(self, operation: Awaitable[T], *, respect_backoff: bool = True) -> T:
        """Await `operation` within the bound; raise RedisUnavailable on any Redis or network failure."""
        if respect_backoff and time.monotonic() < self._skip_until:
            if inspect.iscoroutine(operation):
                operation.close()
            raise RedisUnavailable("Redis failed recently")
        try:
            async with asyncio.timeout(self.timeout_s):
                return await operation
        except REDIS_ERRORS as exc:
            self._skip_until = time.monotonic() + self.backoff_s
            raise RedisUnavailable(f"Redis unavailable ({type(exc).__name__}: {exc})") from exc

    def warn(self, message: str) -> None:
        """Log at most one warning per interval."""
        now = time.monotonic()
        if now >= self._next_warning:
            self._next_warning = now + self.warning_interval_s
            self.log.warning("%s", message)
