"""Rate limiters: requests and tokens per minute per deployment or tenant, over a sliding 60 s window."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar


from routemesh.common.redis_client import FAILURE_BACKOFF_S, FailFast, RedisUnavailable, create_client

log = logging.getLogger(__name__)

WINDOW_S = 60
KEY_TTL_S = 2 * WINDOW_S
# What headroom reports for a dimension with no limit, so "remaining >= needed" checks simply pass.
UNLIMITED = sys.maxsize

# Per-second counts of one limit key: second -> [requests, tokens].
Buckets = dict[int, list[int]]
T = TypeVar("T")


@dataclass(frozen=True)
class RateLimit:
    """Requests and tokens per minute allowed under `key` (e.g. "model:fast-cheap", "tenant:acme"); 0 = unlimited."""

    key: str
    rpm: int = 0
    tpm: int = 0

    @property
    def unlimited(self) -> bool:
        return self.rpm <= 0 and self.tpm <= 0


@dataclass(frozen=True)
class RateDecision:
    """Whether a request may go now; when not, which limit said no and how long until it would not."""

    allowed: bool
    key: str = ""
    reason: str = ""
    retry_after_s: float = 0.0
    unchecked: bool = False


class RateLimiter(Protocol):
    async def acquire(self, limits: Sequence[RateLimit], tokens: int, now_ms: int | None = None) -> RateDecision:
        """Count 1 request and `tokens` against every limit if all have room, else count nothing."""

    async def headroom(self, limits: Sequence[RateLimit], now_ms: int | None = None) -> dict[str, tuple[int, int]]:
        """Remaining (requests, tokens) per key in the current window; UNLIMITED where there is no limit."""

    async def adjust_tokens(self, limit: RateLimit, delta_tokens: int, now_ms: int | None = None) -> None:
        """Correct an estimate once the real token count is known (delta may be negative)."""

    async def close(self) -> None: ...


def live_buckets(buckets: Buckets, now_ms: int) -> list[tuple[int, int, int]]:
    """(second, requests, tokens) inside the window ending at now, oldest first."""
    oldest = now_ms // 1000 - WINDOW_S + 1
    return sorted((s, r, t) for s, (r, t) in buckets.items() if s >= oldest)


def usage(live: Sequence[tuple[int, int, int]]) -> tuple[int, int]:
    # Negative adjustments can outlive the estimates they corrected; usage never goes below zero.
    return max(0, sum(r for _, r, _ in live)), max(0, sum(t for _, _, t in live))


def remaining(limit: RateLimit, buckets: Buckets, now_ms: int) -> tuple[int, int]:
    requests, tokens = usage(live_buckets(buckets, now_ms))
    return (max(0, limit.rpm - requests) if limit.rpm > 0 else UNLIMITED,
            max(0, limit.tpm - tokens) if limit.tpm > 0 else UNLIMITED)


def _wait_s(live: Sequence[tuple[int, int, int]], column: int, excess: int, now_ms: int) -> float:
    """Time until the oldest buckets leaving the window free at least `excess` of one column."""
    freed = 0
    for bucket in live:
        freed += bucket[column]
        if freed >= excess:
            return max(0.0, ((bucket[0] + WINDOW_S) * 1000 - now_ms) / 1000)
    return float(WINDOW_S)


def denial(limit: RateLimit, buckets: Buckets, tokens: int, now_ms: int) -> tuple[str, float] | None:
    """Why one more request of `tokens` would break the limit, and when it would not; None when it fits."""
    live = live_buckets(buckets, now_ms)
    requests, used = usage(live)
    found: list[tuple[float, str]] = []
    if limit.rpm > 0 and requests + 1 > limit.rpm:
        found.append((_wait_s(live, 1, requests + 1 - limit.rpm, now_ms), f"rpm {limit.rpm} reached"))
    if limit.tpm > 0 and tokens > limit.tpm:
        found.append((float(WINDOW_S), f"request of {tokens} tokens exceeds tpm {limit.tpm}"))
    elif limit.tpm > 0 and used + tokens > limit.tpm:
        found.append((_wait_s(live, 2, used + tokens - limit.tpm, now_ms), f"tpm {limit.tpm} reached"))
    if not found:
        return None
    wait, reason = max(found, key=lambda f: f[0])
    return reason, wait


def _now_ms(now_ms: int | None) -> int:
    return int(time.time() * 1000) if now_ms is None else now_ms


def _limited(limits: Sequence[RateLimit]) -> list[RateLimit]:
    return [limit for limit in limits if not limit.unlimited]


def _check_tokens(tokens: int) -> None:
    if tokens < 0:
        raise ValueError(f"tokens must not be negative, got {tokens}")


class InMemoryRateLimiter:
    """Limits for one process; no operation awaits, so asyncio tasks cannot interleave inside one."""

    def __init__(self) -> None:
        self._buckets: dict[str, Buckets] = {}
        self._next_prune_ms = 0

    async def acquire(self, limits: Sequence[RateLimit], tokens: int, now_ms: int | None = None) -> RateDecision:
        _check_tokens(tokens)
        now, limits = _now_ms(now_ms), _limited(limits)
        self._prune(now)
        worst: tuple[float, str, str] | None = None
        for limit in limits:
            denied = denial(limit, self._buckets.get(limit.key, {}), tokens, now)
            if denied is not None and (worst is None or denied[1] > worst[0]):
                worst = (denied[1], limit.key, denied[0])
        if worst is not None:
            return RateDecision(False, worst[1], worst[2], worst[0])
        for limit in limits:
            bucket = self._buckets.setdefault(limit.key, {}).setdefault(now // 1000, [0, 0])
            bucket[0] += 1
            bucket[1] += tokens
        return RateDecision(True)

    async def headroom(self, limits: Sequence[RateLimit], now_ms: int | None = None) -> dict[str, tuple[int, int]]:
        now = _now_ms(now_ms)
        return {limit.key: remaining(limit, self._buckets.get(limit.key, {}), now) for limit in limits}

    async def adjust_tokens(self, limit: RateLimit, delta_tokens: int, now_ms: int | None = None) -> None:
        if limit.tpm <= 0 or delta_tokens == 0:
            return
        now = _now_ms(now_ms)
        self._buckets.setdefault(limit.key, {}).setdefault(now // 1000, [0, 0])[1] += delta_tokens

    async def close(self) -> None:
        pass

    def _prune(self, now_ms: int) -> None:
        """Drop buckets that left the window, at most once a second."""
        if now_ms < self._next_prune_ms:
            return
        self._next_prune_ms = now_ms + 1000
        oldest = now_ms // 1000 - WINDOW_S + 1
        for key, buckets in list(self._buckets.items()):
            for second in [s for s in buckets if s < oldest]:
                del buckets[second]
            if not buckets:
                del self._buckets[key]


# KEYS: one hash per limit, fields r:<second> and t:<second>. ARGV: now_ms, tokens, then rpm, tpm per limit.
# Returns {1} when counted, else {0, limit index, reason code, wait ms}: 1 rpm, 2 tpm, 3 larger than tpm.
# Mirrors denial() above; every check happens before any count, so the last slot goes to one caller only.
_ACQUIRE = """
local now_ms, tokens = tonumber(ARGV[1]), tonumber(ARGV[2])
local window, ttl = tonumber(ARGV[3]), ARGV[4]
local now_s = math.floor(now_ms / 1000)
local oldest = now_s - window + 1
local function load(key)
  local flat = redis.call('HGETALL', key)
  local seconds, counts, stale = {}, {r = {}, t = {}}, {}
  for i = 1, #flat, 2 do
    local name = flat[i]
    local kind, s = string.sub(name, 1, 1), tonumber(string.sub(name, 3))
    if s < oldest then
      stale[#stale + 1] = name
    else
      if counts.r[s] == nil then counts.r[s], counts.t[s] = 0, 0; seconds[#seconds + 1] = s end
      counts[kind][s] = counts[kind][s] + tonumber(flat[i + 1])
    end
  end
  if #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
  table.sort(seconds)
  return seconds, counts
end
local function total(seconds, column)
  local sum = 0
  for _, s in ipairs(seconds) do sum = sum + column[s] end
  return math.max(0, sum)
end
local function wait_ms(seconds, column, excess)
  local freed = 0
  for _, s in ipairs(seconds) do
    freed = freed + column[s]
    if freed >= excess then return math.max(0, (s + window) * 1000 - now_ms) end
  end
  return window * 1000
end
local worst = nil
for i = 1, #KEYS do
  local rpm, tpm = tonumber(ARGV[3 + 2 * i]), tonumber(ARGV[4 + 2 * i])
  local seconds, counts = load(KEYS[i])
  local found = {}
  local requests, used = total(seconds, counts.r), total(seconds, counts.t)
  if rpm > 0 and requests + 1 > rpm then found[#found + 1] = {wait_ms(seconds, counts.r, requests + 1 - rpm), 1} end
  if tpm > 0 and tokens > tpm then
    found[#found + 1] = {window * 1000, 3}
  elseif tpm > 0 and used + tokens > tpm then
    found[#found + 1] = {wait_ms(seconds, counts.t, used + tokens - tpm), 2}
  end
  for _, f in ipairs(found) do
    if worst == nil or f[1] > worst[3] then worst = {i, f[2], f[1]} end
  end
end
if worst ~= nil then return {0, worst[1], worst[2], worst[3]} end
for i = 1, #KEYS do
  redis.call('HINCRBY', KEYS[i], 'r:' .. now_s, 1)
  if tokens ~= 0 then redis.call('HINCRBY', KEYS[i], 't:' .. now_s, tokens) end
  redis.call('EXPIRE', KEYS[i], ttl)
end
return {1}
"""


class RedisRateLimiter:
    """Limits shared by every router using the same Redis and prefix.

    Keys: `{prefix}ratelimit:{limit key}`, a hash of per-second counts `r:{unix second}` (requests) and
    `t:{unix second}` (tokens), expiring 2 minutes after the last write; fields older than the window
    are deleted by the acquire script. When Redis is unreachable every request is allowed and flagged
    `unchecked` (fail open): provider-side limits still apply, while refusing all traffic would not help.
    """

    def __init__(self, url: str, prefix: str = "routemesh:", *, failure_backoff_s: float = FAILURE_BACKOFF_S,
                 max_connections: int = 16):
        self._base = f"{prefix}ratelimit:"
        self._redis = create_client(url, max_connections)
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._guard = FailFast(log, backoff_s=failure_backoff_s)

    def redis_key(self, limit_key: str) -> str:
        return f"{self._base}{limit_key}"

    async def acquire(self, limits: Sequence[RateLimit], tokens: int, now_ms: int | None = None) -> RateDecision:
        _check_tokens(tokens)
        limits = _limited(limits)
        if not limits:
            return RateDecision(True)
        args: list[int] = [_now_ms(now_ms), tokens, WINDOW_S, KEY_TTL_S]
        for limit in limits:
            args += [max(0, limit.rpm), max(0, limit.tpm)]
        keys = [self.redis_key(limit.key) for limit in limits]
        try:
            reply = await self._run(self._acquire(keys=keys, args=args))
        except RedisUnavailable as exc:
            self._guard.warn(f"rate limits unchecked (fail open): {exc}")
            return RateDecision(True, reason=f"rate limits unchecked: {exc}", unchecked=True)
        if int(reply[0]) == 1:
            return RateDecision(True)
        limit, code = limits[int(reply[1]) - 1], int(reply[2])
        reason = {1: f"rpm {limit.rpm} reached", 2: f"tpm {limit.tpm} reached",
                  3: f"request of {tokens} tokens exceeds tpm {limit.tpm}"}[code]
        return RateDecision(False, limit.key, reason, int(reply[3]) / 1000)

    async def headroom(self, limits: Sequence[RateLimit], now_ms: int | None = None) -> dict[str, tuple[int, int]]:
        if not limits:
            return {}
        now = _now_ms(now_ms)
        pipe = self._redis.pipeline(transaction=False)
        for limit in limits:
            pipe.hgetall(self.redis_key(limit.key))
        try:
            replies = await self._run(pipe.execute())
        except RedisUnavailable as exc:
            self._guard.warn(f"rate limit headroom unknown: {exc}")
            return {}
        return {limit.key: remaining(limit, decode_buckets(fields), now)
                for limit, fields in zip(limits, replies, strict=True)}

    async def adjust_tokens(self, limit: RateLimit, delta_tokens: int, now_ms: int | None = None) -> None:
        if limit.tpm <= 0 or delta_tokens == 0:
            return
        key = self.redis_key(limit.key)
        pipe = self._redis.pipeline(transaction=False)
        pipe.hincrby(key, f"t:{_now_ms(now_ms) // 1000}", delta_tokens)
        pipe.expire(key, KEY_TTL_S)
        try:
            await self._run(pipe.execute())
        except RedisUnavailable as exc:
            self._guard.warn(f"rate limit token correction of {delta_tokens} for {limit.key} lost: {exc}")

    async def close(self) -> None:
        await self._redis.aclose()

    async def _run(self, operation: Coroutine[Any, Any, T]) -> T:
        return await self._guard.run(operation)


def decode_buckets(fields: Mapping[str, str]) -> Buckets:
    """Buckets from a hash of r:<second> and t:<second> fields, skipping any that do not parse."""
    buckets: Buckets = {}
    for name, value in fields.items():
        try:
            column = {"r": 0, "t": 1}[name[0]]
            buckets.setdefault(int(name[2:]), [0, 0])[column] += int(value)
        except (KeyError, ValueError, IndexError):
            continue
    return buckets
