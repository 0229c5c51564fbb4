"""Budget ledgers: spend reserved from an estimate before a call and settled to its cost after, never overspent."""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol


log = logging.getLogger(__name__)

MICROS_PER_USD = 1_000_000
# Accounts outlive their period by this much so late settlements and reports still find them.
ACCOUNT_GRACE_S = 2 * 24 * 3600
# How long a settled reservation id is remembered: a second settle within it charges nothing.
SETTLED_MEMORY_S = 24 * 3600


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


class FinishedIds:
    """Reservation ids settled or released lately: the first settle or release of an id wins, later ones do nothing
    (remembered SETTLED_MEMORY_S)."""

    def __init__(self) -> None:
        self._forget_at: dict[str, int] = {}  # reservation id -> forget at ms

    def first(self, reservation_id: str, now_ms: int) -> bool:
        """Whether this is the first finish of `reservation_id` (and from now on, it is finished)."""
        if self._forget_at.get(reservation_id, 0) > now_ms:
            return False
        self._forget_at[reservation_id] = now_ms + SETTLED_MEMORY_S * 1000
        return True

    def prune(self, now_ms: int) -> None:
        self._forget_at = {k: t for k, t in self._forget_at.items() if t > now_ms}


def drop_expired(holds: dict[str, tuple[int, int]], now_ms: int) -> int:
    """Remove the holds (id -> (micros, expires_at_ms)) expired at `now_ms`; the micros they held."""
    freed = 0
    for hold_id, (micros, expires) in list(holds.items()):
        if expires <= now_ms:
            del holds[hold_id]
            freed += micros
    return freed


@dataclass
class _Account:
    spent: int = 0
    reserved: int = 0
    holds: dict[str, tuple[int, int]] = field(default_factory=dict)  # id -> (micros, expires_at_ms)
    forget_at_ms: int = 0

    def sweep(self, now_ms: int) -> None:
        self.reserved -= drop_expired(self.holds, now_ms)


class InMemoryBudgetLedger:
    """A ledger for one process; every operation runs without awaiting, so asyncio tasks cannot interleave."""

    def __init__(self, *, clock: Callable[[], float] = time.time):
        self._clock = clock
        self._accounts: dict[tuple[str, str], _Account] = {}
        self._finished = FinishedIds()
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
        if not self._finished.first(reservation.id, now_ms):
            return
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
        self._finished.prune(now_ms)


def _scope_periods(reservation: Reservation, now: datetime) -> list[tuple[BudgetScope, str]]:
    """Each scope with the period it was reserved in, so a call spanning midnight is charged where it was held."""
    periods = reservation.period_ids or tuple(scope.period_id(now) for scope in reservation.scopes)
    return list(zip(reservation.scopes, periods, strict=True))


def _ms(now: datetime) -> int:
    return int(now.timestamp() * 1000)
