"""Budget ledgers: spend reserved from an estimate before a call and settled to its cost after, never overspent."""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol

from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from routemesh.common.redis_client import create_client

log = logging.getLogger(__name__)

MICROS_PER_USD = 1_000_000
# Accounts outlive their period by this much so late settlements and reports still find them.
ACCOUNT_GRACE_S = 2 * 24 * 3600
# How long a settled reservation id is remembered: a second settle within it charges nothing.
SETTLED_MEMORY_S = 24 * 3600
# Whole-operation bound: pool wait, connect and reply stay under the ~0.5 s a request may wait.
OPERATION_TIMEOUT_S = 0.45
# After a failure, skip Redis for this long so a dead or frozen server costs each request nothing.
FAILURE_BACKOFF_S = 1.0
WARNING_INTERVAL_S = 10.0
_REDIS_ERRORS = (RedisError, OSError, TimeoutError)


@dataclass(frozen=True)
class BudgetScope:
    """One ledger account: a budget of the policy applied to one tenant/project key."""

    budget: str
    key: str
    period: Literal["day", "month"]
    limit_usd: float
    soft_limit_fraction: float = 0.8

    @property
    def account(self) -> str:
        return f"{self.budget}:{self.key}"

    def period_id(self, now: datetime) -> str:
        """The UTC day ("2026-11-27") or month ("2026-11") containing `now` (naive times are taken as UTC)."""
        now = _as_utc(now)
        return now.strftime("%Y-%m-%d" if self.period == "day" else "%Y-%m")

    def period_end(self, now: datetime) -> datetime:
        now = _as_utc(now)
        if self.period == "day":
            return datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)
        return datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)

    def account_ttl_s(self, now: datetime) -> int:
        return int((self.period_end(now) - _as_utc(now)).total_seconds()) + ACCOUNT_GRACE_S


@dataclass(frozen=True)
class BudgetStatus:
    """One account in the current period; soft_limited and exhausted count reserved spend as spent."""

    spent_usd: float
    reserved_usd: float
    limit_usd: float
    soft_limited: bool
    exhausted: bool

    @property
    def remaining_usd(self) -> float:
        return max(0.0, self.limit_usd - self.spent_usd - self.reserved_usd)


@dataclass(frozen=True)
class Reservation:
    """Spend held on every scope until settled, released or expired; `unchecked` when no ledger was asked."""

    id: str
    scopes: tuple[BudgetScope, ...]
    amount_usd: float
    expires_at_ms: int
    period_ids: tuple[str, ...] = ()
    unchecked: bool = False


class BudgetExceeded(Exception):
    """Reserving `needed_usd` would take `scope` over its limit."""

    def __init__(self, scope: BudgetScope, status: BudgetStatus, needed_usd: float, period_id: str = "",
                 message: str = ""):
        self.scope = scope
        self.status = status
        self.needed_usd = needed_usd
        period = f"{scope.period} {period_id}" if period_id else scope.period
        super().__init__(message or (
            f"budget {scope.budget!r} ({scope.key}, {period}) has ${status.remaining_usd:.6f} left "
            f"of ${scope.limit_usd:.2f}; the request needs up to ${needed_usd:.6f}"))


class BudgetUnavailable(BudgetExceeded):
    """The ledger could not be reached, so spend is refused (fail closed).

    A subclass of BudgetExceeded so that code refusing over-budget requests also refuses these; its
    `status` says exhausted because that is how the request is treated, not what was measured.
    """

    def __init__(self, scope: BudgetScope, needed_usd: float, cause: str):
        self.cause = cause
        super().__init__(scope, BudgetStatus(0.0, 0.0, scope.limit_usd, True, True), needed_usd, message=(
            f"budget {scope.budget!r} ({scope.key}) could not be checked ({cause}); "
            f"refusing spend of ${needed_usd:.6f}"))


class BudgetLedger(Protocol):
    async def status(self, scopes: Sequence[BudgetScope]) -> dict[str, BudgetStatus]:
        """Current-period status keyed by `scope.account`; {} when the ledger cannot be read."""

    async def reserve(self, scopes: Sequence[BudgetScope], amount_usd: float, ttl_s: float = 600) -> Reservation:
        """Hold `amount_usd` on every scope or on none; raises BudgetExceeded naming the first scope over."""

    async def settle(self, reservation: Reservation, actual_usd: float) -> None:
        """Drop the hold and charge `actual_usd` to the reservation's periods, once per reservation id."""

    async def release(self, reservation: Reservation) -> None:
        """Drop the hold without charge; afterwards settle charges nothing (the first of the two wins)."""

    async def close(self) -> None: ...


def to_micros(usd: float) -> int:
    return round(usd * MICROS_PER_USD)


def status_of(scope: BudgetScope, spent: int, reserved: int) -> BudgetStatus:
    used, limit = spent + reserved, to_micros(scope.limit_usd)
    return BudgetStatus(spent_usd=spent / MICROS_PER_USD, reserved_usd=reserved / MICROS_PER_USD,
                        limit_usd=scope.limit_usd, soft_limited=used >= scope.soft_limit_fraction * limit,
                        exhausted=used >= limit)


def unique_scopes(scopes: Sequence[BudgetScope]) -> tuple[BudgetScope, ...]:
    """One scope per account: the same account listed twice must be checked and held once."""
    seen: dict[str, BudgetScope] = {}
    for scope in scopes:
        seen.setdefault(scope.account, scope)
    return tuple(seen.values())


def _as_utc(now: datetime) -> datetime:
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)


def _check_amount(amount_usd: float) -> None:
    if not (math.isfinite(amount_usd) and amount_usd >= 0):
        raise ValueError(f"amounts must be finite and non-negative, got {amount_usd!r}")


@dataclass
class _Account:
    spent: int = 0
    reserved: int = 0
    holds: dict[str, tuple[int, int]] = field(default_factory=dict)  # id -> (micros, expires_at_ms)
    forget_at_ms: int = 0

    def sweep(self, now_ms: int) -> None:
        for hold_id, (micros, expires) in list(self.holds.items()):
            if expires <= now_ms:
                del self.holds[hold_id]
                self.reserved -= micros


class InMemoryBudgetLedger:
    """A ledger for one process; every operation runs without awaiting, so asyncio tasks cannot interleave."""

    def __init__(self, *, clock: Callable[[], float] = time.time):
        self._clock = clock
        self._accounts: dict[tuple[str, str], _Account] = {}
        self._finished: dict[str, int] = {}  # reservation id -> forget at ms
        self._next_prune_ms = 0

    async def status(self, scopes: Sequence[BudgetScope]) -> dict[str, BudgetStatus]:
        now = datetime.fromtimestamp(self._clock(), UTC)
        out: dict[str, BudgetStatus] = {}
        for scope in unique_scopes(scopes):
            account = self._accounts.get((scope.account, scope.period_id(now)), _Account())
            account.sweep(_ms(now))
            out[scope.account] = status_of(scope, account.spent, account.reserved)
        return out

    async def reserve(self, scopes: Sequence[BudgetScope], amount_usd: float, ttl_s: float = 600) -> Reservation:
        _check_amount(amount_usd)
        now = datetime.fromtimestamp(self._clock(), UTC)
        now_ms, amount = _ms(now), to_micros(amount_usd)
        self._prune(now_ms)
        scopes = unique_scopes(scopes)
        accounts = [self._account(scope, now) for scope in scopes]
        for scope, account in zip(scopes, accounts, strict=True):
            account.sweep(now_ms)
            if account.spent + account.reserved + amount > to_micros(scope.limit_usd):
                raise BudgetExceeded(scope, status_of(scope, account.spent, account.reserved), amount_usd,
                                     scope.period_id(now))
        reservation = Reservation(id=uuid.uuid4().hex, scopes=scopes, amount_usd=amount_usd,
                                  expires_at_ms=now_ms + int(ttl_s * 1000),
                                  period_ids=tuple(scope.period_id(now) for scope in scopes))
        for account in accounts:
            account.reserved += amount
            account.holds[reservation.id] = (amount, reservation.expires_at_ms)
        return reservation

    async def settle(self, reservation: Reservation, actual_usd: float) -> None:
        _check_amount(actual_usd)
        self._finish(reservation, to_micros(actual_usd))

    async def release(self, reservation: Reservation) -> None:
        self._finish(reservation, 0)

    async def close(self) -> None:
        pass

    def _finish(self, reservation: Reservation, charge: int) -> None:
        now = datetime.fromtimestamp(self._clock(), UTC)
        now_ms = _ms(now)
        if self._finished.get(reservation.id, 0) > now_ms:
            return
        self._finished[reservation.id] = now_ms + SETTLED_MEMORY_S * 1000
        for scope, period_id in _scope_periods(reservation, now):
            account = self._account(scope, now, period_id)
            account.sweep(now_ms)
            held = account.holds.pop(reservation.id, None)
            if held is not None:
                account.reserved -= held[0]
            account.spent += charge

    def _account(self, scope: BudgetScope, now: datetime, period_id: str = "") -> _Account:
        account = self._accounts.setdefault((scope.account, period_id or scope.period_id(now)), _Account())
        account.forget_at_ms = max(account.forget_at_ms, _ms(now) + scope.account_ttl_s(now) * 1000)
        return account

    def _prune(self, now_ms: int) -> None:
        """Forget accounts and settled ids past their time, at most once a minute."""
        if now_ms < self._next_prune_ms:
            return
        self._next_prune_ms = now_ms + 60_000
        self._accounts = {k: a for k, a in self._accounts.items() if a.forget_at_ms > now_ms}
        self._finished = {k: t for k, t in self._finished.items() if t > now_ms}


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


class _Unavailable(Exception):
    """Redis failed, or failed recently enough to be skipped."""


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
        self._failure_backoff_s = failure_backoff_s
        self._redis = create_client(url, max_connections)
        self._reserve = self._redis.register_script(_RESERVE)
        self._settle = self._redis.register_script(_SETTLE)
        self._status = self._redis.register_script(_STATUS)
        self._skip_until = 0.0
        self._next_warning = 0.0

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
        except _Unavailable as exc:
            self._warn(f"budget status unknown: {exc}")
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
        except _Unavailable as exc:
            if self.fail_open:
                self._warn(f"budgets unchecked (fail_open): {exc}")
                return Reservation(reservation.id, scopes, amount_usd, reservation.expires_at_ms,
                                   reservation.period_ids, unchecked=True)
            self._warn(f"budget spend refused (fail closed): {exc}")
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
        except _Unavailable as exc:
            self.failed_settlements += 1
            self._warn(f"budget settlement of ${charge / MICROS_PER_USD:.6f} lost "
                       f"({self.failed_settlements} so far; holds expire by themselves): {exc}")

    async def _run(self, script: AsyncScript, keys: list[str], args: list[int | str], *,
                   respect_backoff: bool = True) -> list[int]:
        if respect_backoff and time.monotonic() < self._skip_until:
            raise _Unavailable("Redis failed recently")
        try:
            async with asyncio.timeout(OPERATION_TIMEOUT_S):
                return await script(keys=keys, args=args)
        except _REDIS_ERRORS as exc:
            self._skip_until = time.monotonic() + self._failure_backoff_s
            raise _Unavailable(f"Redis unavailable ({type(exc).__name__}: {exc})") from exc

    def _warn(self, message: str) -> None:
        """At most one warning per interval: an outage must not flood the log."""
        now = time.monotonic()
        if now >= self._next_warning:
            self._next_warning = now + WARNING_INTERVAL_S
            log.warning("%s", message)


def _scope_periods(reservation: Reservation, now: datetime) -> list[tuple[BudgetScope, str]]:
    """Each scope with the period it was reserved in, so a call spanning midnight is charged where it was held."""
    periods = reservation.period_ids or tuple(scope.period_id(now) for scope in reservation.scopes)
    return list(zip(reservation.scopes, periods, strict=True))


def _ms(now: datetime) -> int:
    return int(now.timestamp() * 1000)
