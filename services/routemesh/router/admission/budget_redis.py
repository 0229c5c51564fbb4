"""The Redis budget ledger: every reserve, settle and status is one Lua script, shared by all routers."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from redis.commands.core import AsyncScript

from routemesh.common.redis_client import FAILURE_BACKOFF_S, FailFast, RedisUnavailable, create_client
from routemesh.router.admission.budget import (
    MICROS_PER_USD,
    SETTLED_MEMORY_S,
    BudgetExceeded,
    BudgetScope,
    BudgetStatus,
    BudgetUnavailable,
    Reservation,
    _check_amount,
    _ms,
    _scope_periods,
    status_of,
    to_micros,
    unique_scopes,
)

log = logging.getLogger(__name__)


# Holds expire by themselves: each script first releases the holds on its accounts that are past expiry.
_SWEEP = """
local function sweep(account, holds, now)
  local expired = redis.call('ZRANGEBYSCORE', holds, '-inf', now)
  if #expired == 0 then return end
  local freed = 0
  for _, hold_id in ipairs(expired) do
    local micros = redis.call('HGET', account, 'h:' .. hold_id)
    if micros then freed = freed + tonumber(micros); redis.call('HDEL', account, 'h:' .. hold_id) end
  end
  redis.call('ZREMRANGEBYSCORE', holds, '-inf', now)
  if freed ~= 0 then redis.call('HINCRBY', account, 'reserved', -freed) end
end
local function balance(account)
  local v = redis.call('HMGET', account, 'spent', 'reserved')
  return tonumber(v[1] or '0'), tonumber(v[2] or '0')
end
"""

# KEYS: account, holds per scope. ARGV: now_ms, micros, id, expires_ms, then limit_micros, ttl_s per scope.
_RESERVE = _SWEEP + """
local now, amount, id, expires = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4]
local n = #KEYS / 2
for i = 1, n do
  sweep(KEYS[2 * i - 1], KEYS[2 * i], now)
  local spent, reserved = balance(KEYS[2 * i - 1])
  if spent + reserved + amount > tonumber(ARGV[3 + 2 * i]) then return {0, i, spent, reserved} end
end
for i = 1, n do
  local account, holds, ttl = KEYS[2 * i - 1], KEYS[2 * i], ARGV[4 + 2 * i]
  redis.call('HINCRBY', account, 'reserved', amount)
  redis.call('HSET', account, 'h:' .. id, amount)
  redis.call('ZADD', holds, expires, id)
  redis.call('EXPIRE', account, ttl); redis.call('EXPIRE', holds, ttl)
end
return {1}
"""

# KEYS: account, holds per scope, then the settled marker. ARGV: now_ms, charge_micros, id, marker_ttl_s,
# then ttl_s per scope. The marker makes a second settle (or a settle after release) a no-op.
_SETTLE = _SWEEP + """
local now, charge, id = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
if not redis.call('SET', KEYS[#KEYS], '1', 'NX', 'EX', ARGV[4]) then return 0 end
for i = 1, (#KEYS - 1) / 2 do
  local account, holds = KEYS[2 * i - 1], KEYS[2 * i]
  sweep(account, holds, now)
  local held = redis.call('HGET', account, 'h:' .. id)
  if held then
    redis.call('HDEL', account, 'h:' .. id); redis.call('ZREM', holds, id)
    redis.call('HINCRBY', account, 'reserved', -tonumber(held))
  end
  if charge > 0 then
    redis.call('HINCRBY', account, 'spent', charge)
    redis.call('EXPIRE', account, ARGV[4 + i])
  end
end
return 1
"""

# KEYS: account, holds per scope. ARGV: now_ms. Returns spent, reserved per scope.
_STATUS = _SWEEP + """
local out = {}
for i = 1, #KEYS / 2 do
  sweep(KEYS[2 * i - 1], KEYS[2 * i], tonumber(ARGV[1]))
  local spent, reserved = balance(KEYS[2 * i - 1])
  table.insert(out, spent); table.insert(out, reserved)
end
return out
"""


class RedisBudgetLedger:
    """A ledger shared by every router using the same Redis and prefix; each operation is one Lua script.

    Keys (all under `{prefix}budget:`): `{budget}:{key}:{period_id}` a hash of integer micro-USD
    `spent`, `reserved` and `h:{reservation id}` (each hold's amount); `...:{period_id}:holds` a zset of
    reservation id by expiry in ms; `settled:{reservation id}` the settle-once marker. Account keys
    expire 2 days after their period ends. Scripts touch several accounts, so with Redis Cluster the
    prefix needs a hash tag (e.g. "{routemesh}:").
    When Redis is unreachable, reserve raises BudgetUnavailable, or with fail_open=True returns an
    unchecked reservation; settle and release log and count the failure (`failed_settlements`). A hold
    whose reply was lost (timeout) stays until its expiry: budgets may under-spend then, never overspend.
    """

    def __init__(self, url: str, prefix: str = "routemesh:", *, fail_open: bool = False,
                 clock: Callable[[], float] = time.time, failure_backoff_s: float = FAILURE_BACKOFF_S,
                 max_connections: int = 16):
        self.fail_open = fail_open
        self.failed_settlements = 0
        self._base = f"{prefix}budget:"
        self._clock = clock
        self._redis = create_client(url, max_connections)
        self._reserve = self._redis.register_script(_RESERVE)
        self._settle = self._redis.register_script(_SETTLE)
        self._status = self._redis.register_script(_STATUS)
        self._guard = FailFast(log, backoff_s=failure_backoff_s)

    def account_key(self, scope: BudgetScope, period_id: str) -> str:
        return f"{self._base}{scope.account}:{period_id}"

    def _scope_keys(self, pairs: Sequence[tuple[BudgetScope, str]]) -> list[str]:
        keys: list[str] = []
        for scope, period_id in pairs:
            account = self.account_key(scope, period_id)
            keys += [account, f"{account}:holds"]
        return keys

    async def status(self, scopes: Sequence[BudgetScope]) -> dict[str, BudgetStatus]:
        scopes = unique_scopes(scopes)
        if not scopes:
            return {}
        now = datetime.fromtimestamp(self._clock(), UTC)
        keys = self._scope_keys([(scope, scope.period_id(now)) for scope in scopes])
        try:
            reply = await self._run(self._status, keys, [_ms(now)])
        except RedisUnavailable as exc:
            self._guard.warn(f"budget status unknown: {exc}")
            return {}
        return {scope.account: status_of(scope, int(reply[2 * i]), int(reply[2 * i + 1]))
                for i, scope in enumerate(scopes)}

    async def reserve(self, scopes: Sequence[BudgetScope], amount_usd: float, ttl_s: float = 600) -> Reservation:
        _check_amount(amount_usd)
        scopes = unique_scopes(scopes)
        now = datetime.fromtimestamp(self._clock(), UTC)
        reservation = Reservation(id=uuid.uuid4().hex, scopes=scopes, amount_usd=amount_usd,
                                  expires_at_ms=_ms(now) + int(ttl_s * 1000),
                                  period_ids=tuple(scope.period_id(now) for scope in scopes))
        if not scopes:
            return reservation
        keys = self._scope_keys(list(zip(scopes, reservation.period_ids, strict=True)))
        args: list[int | str] = [_ms(now), to_micros(amount_usd), reservation.id, reservation.expires_at_ms]
        for scope in scopes:
            args += [to_micros(scope.limit_usd), scope.account_ttl_s(now)]
        try:
            reply = await self._run(self._reserve, keys, args)
        except RedisUnavailable as exc:
            if self.fail_open:
                self._guard.warn(f"budgets unchecked (fail_open): {exc}")
                return Reservation(reservation.id, scopes, amount_usd, reservation.expires_at_ms,
                                   reservation.period_ids, unchecked=True)
            self._guard.warn(f"budget spend refused (fail closed): {exc}")
            raise BudgetUnavailable(scopes[0], amount_usd, str(exc)) from None
        if int(reply[0]) != 1:
            scope = scopes[int(reply[1]) - 1]
            raise BudgetExceeded(scope, status_of(scope, int(reply[2]), int(reply[3])), amount_usd,
                                 scope.period_id(now))
        return reservation

    async def settle(self, reservation: Reservation, actual_usd: float) -> None:
        _check_amount(actual_usd)
        await self._finish(reservation, to_micros(actual_usd))

    async def release(self, reservation: Reservation) -> None:
        await self._finish(reservation, 0)

    async def close(self) -> None:
        await self._redis.aclose()

    async def _finish(self, reservation: Reservation, charge: int) -> None:
        now = datetime.fromtimestamp(self._clock(), UTC)
        pairs = _scope_periods(reservation, now)
        if not pairs:
            return
        keys = self._scope_keys(pairs) + [f"{self._base}settled:{reservation.id}"]
        args: list[int | str] = [_ms(now), charge, reservation.id, SETTLED_MEMORY_S]
        args += [scope.account_ttl_s(now) for scope, _ in pairs]
        try:
            # Always tried, even during backoff: a skipped settlement is a charge lost for good.
            await self._run(self._settle, keys, args, respect_backoff=False)
        except RedisUnavailable as exc:
            self.failed_settlements += 1
            self._guard.warn(f"budget settlement of ${charge / MICROS_PER_USD:.6f} lost "
                       f"({self.failed_settlements} so far; holds expire by themselves): {exc}")

    async def _run(self, script: AsyncScript, keys: list[str], args: list[int | str], *,
                   respect_backoff: bool = True) -> list[int]:
        return await self._guard.run(script(keys=keys, args=args), respect_backoff=respect_backoff)
