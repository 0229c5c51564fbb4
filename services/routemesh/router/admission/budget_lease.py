"""A Redis budget ledger that serves reservations from leased headroom: Redis once per lease, not per request.

Each router holds, per budget account, one hold of its own in Redis (a lease: `h:lease:{router}` beside the
per-request holds) sized to what its open reservations need plus a share of the headroom left. Reservations
that fit in the lease are taken and settled in memory; a background task moves the settled charges to the
account's `spent` and resizes the lease in one script per account every `flush_s` (1 s by default). Quota
leasing of this kind is how shared rate and spend limits are usually kept off the request path (Google's
Doorman, Envoy's rate-limit quota service).

What it changes against RedisBudgetLedger (`--budget-lease 0` keeps that one):
- Never overspends: every reservation is covered by a hold in Redis, checked against the limit by the script.
- A lease takes `fraction` (5 %) of the headroom left, at most `cap_usd`, so near a limit leases shrink to the
  request itself and every reservation goes to Redis, as without leases. Another router can be refused while
  this one still holds a lease's unused part; an idle lease is given back after `idle_release_s` (5 s) and
  expires in Redis after `ttl_s` (30 s) if the router dies.
- Spent is written to Redis up to `flush_s` late; telemetry's budget alerts and other routers see it then.
  Other routers count a lease as reserved spend (soft limits may trip a little earlier there).
- A router that dies loses the charges of its last `flush_s` (the Redis ledger loses a settlement whose script
  fails); its lease expires by itself. Charges are numbered per lease: a batch whose reply was lost (a timeout,
  a cancelled caller) is sent again under its number, and the script counts a number once.
- Status answers from the last sync (at most `flush_s` old while an account is active, `max_age_s` otherwise).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from routemesh.common.redis_client import RedisUnavailable
from routemesh.router.admission.budget import (
    BudgetExceeded,
    BudgetScope,
    BudgetStatus,
    BudgetUnavailable,
    FinishedIds,
    Reservation,
    drop_expired,
    _check_amount,
    _ms,
    _scope_periods,
    status_of,
    to_micros,
    unique_scopes,
)
from routemesh.router.admission.budget_redis import _SWEEP, RedisBudgetLedger

log = logging.getLogger(__name__)

# KEYS: account, holds. ARGV: now_ms, lease hold id, charge, committed, amount, fraction, cap, limit, expires_ms, ttl_s,
# charge's sequence number. Moves `charge` (settled in memory) to spent unless this lease's charge of that number
# was moved already (a reply lost to a timeout or a cancelled caller: the router sends it again), then sizes the
# lease: `committed + amount` plus a share of what is left when that fits, else just `committed` (what open
# reservations hold already). Returns ok, lease, spent, reserved by others.
_LEASE = _SWEEP + """
local account, holds, now, id = KEYS[1], KEYS[2], tonumber(ARGV[1]), ARGV[2]
local charge, committed, amount = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local fraction, cap, limit = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
sweep(account, holds, now)
local held = tonumber(redis.call('HGET', account, 'h:' .. id) or '0')
local spent, reserved = balance(account)
local seq = tonumber(ARGV[11])
if charge > 0 and seq > tonumber(redis.call('HGET', account, 'f:' .. id) or '0') then
  redis.call('HINCRBY', account, 'spent', charge); redis.call('HSET', account, 'f:' .. id, seq)
  spent = spent + charge
end
local others = reserved - held
local room = limit - spent - others
local need = committed + amount
local ok = need <= room
local lease = committed
if ok then lease = need + math.min(cap, math.floor((room - need) * fraction)) end
if lease ~= held then redis.call('HINCRBY', account, 'reserved', lease - held) end
if lease > 0 then
  redis.call('HSET', account, 'h:' .. id, lease); redis.call('ZADD', holds, ARGV[9], id)
elseif held > 0 then
  redis.call('HDEL', account, 'h:' .. id); redis.call('ZREM', holds, id)
end
redis.call('EXPIRE', account, ARGV[10]); redis.call('EXPIRE', holds, ARGV[10])
return {ok and 1 or 0, lease, spent, others}
"""


@dataclass
class _Lease:
    """This router's side of one account in one period (all integer micro-USD)."""

    scope: BudgetScope
    period_id: str
    lease: int = 0  # the hold in Redis, as of the last sync
    committed: int = 0  # open reservations, inside the lease
    unflushed: int = 0  # settled here, not yet in Redis's spent
    # Charges on their way to Redis, as charge number `seq`: sent again, with the same number, until a reply
    # says they arrived (the script moves a number once).
    sending: int = 0
    seq: int = 0
    spent: int = 0  # Redis's spent at the last sync
    others: int = 0  # reserved by everyone else at the last sync
    valid_until_ms: int = 0  # the lease is used until a margin before its expiry in Redis
    synced_at: float = -1e9  # monotonic
    used_at: float = 0.0  # monotonic, last reserve or settle
    holds: dict[str, tuple[int, int]] = field(default_factory=dict)  # reservation id -> (micros, expires_ms)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def free(self, now_ms: int) -> int:
        return self.lease - self.committed - self.unflushed - self.sending if now_ms < self.valid_until_ms else 0

    def sweep(self, now_ms: int) -> None:
        self.committed -= drop_expired(self.holds, now_ms)

    def status(self) -> BudgetStatus:
        return status_of(self.scope, self.spent + self.unflushed + self.sending, self.others + self.committed)

    @property
    def empty(self) -> bool:
        return not (self.lease or self.committed or self.unflushed or self.sending or self.holds)


class LeasedBudgetLedger(RedisBudgetLedger):
    """RedisBudgetLedger's accounts and guarantees, with Redis reached once per lease instead of per request."""

    def __init__(self, url: str, prefix: str = "routemesh:", *, fraction: float = 0.05, cap_usd: float = 10.0,
                 flush_s: float = 1.0, ttl_s: float = 30.0, idle_release_s: float = 5.0, max_age_s: float = 2.0,
                 **kwargs: object):
        super().__init__(url, prefix, **kwargs)  # type: ignore[arg-type]
        if not 0 < fraction <= 1:
            raise ValueError(f"a lease's fraction of the headroom must be in (0, 1], got {fraction}")
        self.fraction, self.cap = fraction, to_micros(cap_usd)
        self.flush_s, self.ttl_s, self.idle_release_s, self.max_age_s = flush_s, ttl_s, idle_release_s, max_age_s
        self.syncs = 0  # scripts run, for tests and the bench
        self._id = f"lease:{uuid.uuid4().hex[:16]}"
        self._lease_script = self._redis.register_script(_LEASE)
        self._leases: dict[tuple[str, str], _Lease] = {}
        self._finished = FinishedIds()
        self._next_prune_ms = 0
        self._flusher: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def status(self, scopes: Sequence[BudgetScope]) -> dict[str, BudgetStatus]:
        now = datetime.fromtimestamp(self._clock(), UTC)
        now_ms, out = _ms(now), {}
        for scope in unique_scopes(scopes):
            lease = self._lease(scope, scope.period_id(now))
            lease.sweep(now_ms)
            if time.monotonic() - lease.synced_at > (self.flush_s if lease.lease else self.max_age_s):
                try:
                    async with lease.lock:
                        await self._sync(lease, 0, grow=bool(lease.lease))
                except RedisUnavailable as exc:
                    self._guard.warn(f"budget status unknown: {exc}")
                    return {}
            out[scope.account] = lease.status()
        self._start_flusher()
        return out

    async def reserve(self, scopes: Sequence[BudgetScope], amount_usd: float, ttl_s: float = 600) -> Reservation:
        _check_amount(amount_usd)
        scopes = unique_scopes(scopes)
        now = datetime.fromtimestamp(self._clock(), UTC)
        now_ms, amount = _ms(now), to_micros(amount_usd)
        reservation = Reservation(id=uuid.uuid4().hex, scopes=scopes, amount_usd=amount_usd,
                                  expires_at_ms=now_ms + int(ttl_s * 1000),
                                  period_ids=tuple(scope.period_id(now) for scope in scopes))
        leases = [self._lease(scope, period_id) for scope, period_id in zip(scopes, reservation.period_ids, strict=True)]
        for lease in leases:
            lease.sweep(now_ms)
        self._start_flusher()
        self._prune(now_ms)
        # The fast path: every lease has room and none is being synced (a sync may shrink what it read before).
        if all(lease.free(now_ms) >= amount and not lease.lock.locked() for lease in leases):
            return self._commit(reservation, leases, amount)
        try:
            async with contextlib.AsyncExitStack() as stack:
                for lease in sorted(leases, key=lambda x: (x.scope.account, x.period_id)):
                    await stack.enter_async_context(lease.lock)
                for _ in range(3):  # a charge settled above its reservation can eat what a sync just granted
                    short = [lease for lease in leases if lease.free(now_ms) < amount]
                    if not short:
                        return self._commit(reservation, leases, amount)
                    for lease in short:
                        await self._sync(lease, amount, grow=True, raise_exceeded=True)
        except RedisUnavailable as exc:
            if self.fail_open:
                self._guard.warn(f"budgets unchecked (fail_open): {exc}")
                return Reservation(reservation.id, scopes, amount_usd, reservation.expires_at_ms,
                                   reservation.period_ids, unchecked=True)
            self._guard.warn(f"budget spend refused (fail closed): {exc}")
            raise BudgetUnavailable(scopes[0], amount_usd, str(exc)) from None
        lease = next(lease for lease in leases if lease.free(now_ms) < amount)
        raise BudgetExceeded(lease.scope, lease.status(), amount_usd, lease.period_id)

    async def settle(self, reservation: Reservation, actual_usd: float) -> None:
        _check_amount(actual_usd)
        self._finish(reservation, to_micros(actual_usd))

    async def release(self, reservation: Reservation) -> None:
        self._finish(reservation, 0)

    async def flush(self, *, release: bool = False) -> None:
        """Charges settled here to Redis, leases resized (given back when idle or `release`); failures retry later."""
        now = time.monotonic()
        for lease in list(self._leases.values()):
            stale = now - lease.synced_at >= self.flush_s
            idle = now - lease.used_at >= self.idle_release_s
            expiring = lease.lease and now - lease.synced_at >= self.ttl_s / 3
            if lease.empty and idle:
                self._leases.pop((lease.scope.account, lease.period_id), None)
                continue
            if not (release or lease.unflushed or lease.sending or (lease.lease > lease.committed and idle) or expiring
                    or (stale and lease.used_at > lease.synced_at)):
                continue
            try:
                async with lease.lock:
                    await self._sync(lease, 0, grow=not (release or idle), respect_backoff=False)
            except RedisUnavailable as exc:
                self._guard.warn(f"budget charges of ${(lease.unflushed + lease.sending) / 1e6:.6f} on "
                                 f"{lease.scope.account} "
                                 f"not written yet (kept, retried): {exc}")

    async def close(self) -> None:
        # Not cancelled: a cancel landing in a Redis call can be taken for that call's failure (and a flush's
        # charges are retried anyway). The task sees the stop within its current flush.
        self._stopping.set()
        if self._flusher is not None:
            await asyncio.wait([self._flusher])  # however it ended
            self._flusher = None
        await self.flush(release=True)
        await super().close()

    # ---- inside ----------------------------------------------------------------------------------------

    def _lease(self, scope: BudgetScope, period_id: str) -> _Lease:
        key = (scope.account, period_id)
        lease = self._leases.get(key)
        if lease is None:
            lease = self._leases[key] = _Lease(scope, period_id)
        elif lease.scope != scope:  # a policy change (a new limit): the lease is sized again before it is used
            lease.scope = scope
            lease.synced_at, lease.valid_until_ms = -1e9, 0
        return lease

    def _commit(self, reservation: Reservation, leases: list[_Lease], amount: int) -> Reservation:
        now = time.monotonic()
        for lease in leases:
            lease.committed += amount
            lease.holds[reservation.id] = (amount, reservation.expires_at_ms)
            lease.used_at = now
        return reservation

    def _finish(self, reservation: Reservation, charge: int) -> None:
        now = datetime.fromtimestamp(self._clock(), UTC)
        now_ms = _ms(now)
        if not self._finished.first(reservation.id, now_ms):
            return
        for scope, period_id in _scope_periods(reservation, now):
            lease = self._lease(scope, period_id)
            lease.sweep(now_ms)
            held = lease.holds.pop(reservation.id, None)
            if held is not None:
                lease.committed -= held[0]
            lease.unflushed += charge
            lease.used_at = time.monotonic()
        self._start_flusher()

    async def _sync(self, lease: _Lease, amount: int, *, grow: bool, raise_exceeded: bool = False,
                    respect_backoff: bool = True) -> None:
        """One script: the unflushed charges to spent, the lease resized; BudgetExceeded when `amount` did not fit."""
        now = datetime.fromtimestamp(self._clock(), UTC)
        now_ms = _ms(now)
        lease.sweep(now_ms)
        keys = self._scope_keys([(lease.scope, lease.period_id)])
        if not lease.sending and lease.unflushed:
            lease.seq += 1
            lease.sending, lease.unflushed = lease.unflushed, 0
        expires = now_ms + int(self.ttl_s * 1000)
        args: list[int | str] = [now_ms, self._id, lease.sending, lease.committed, amount, repr(self.fraction),
                                 self.cap if grow else 0, to_micros(lease.scope.limit_usd), expires,
                                 lease.scope.account_ttl_s(now), lease.seq]
        self.syncs += 1
        # Unusable until a reply says how large the lease is now: a sync whose caller was cancelled may have
        # resized it in Redis. With Redis failing it stays usable until its expiry margin: a hold in Redis may then
        # be smaller than this router counts by at most what one script could shrink it (a share of the headroom).
        valid_until, lease.valid_until_ms = lease.valid_until_ms, 0
        try:
            reply = await self._run(self._lease_script, keys, args, respect_backoff=respect_backoff)
        except RedisUnavailable:
            lease.valid_until_ms = valid_until
            raise
        ok, granted, spent, others = (int(x) for x in reply)
        lease.sending = 0
        lease.lease = granted
        lease.spent, lease.others = spent, others
        lease.valid_until_ms = expires - int(self.ttl_s * 1000 / 3)
        lease.synced_at = time.monotonic()
        if not ok and raise_exceeded:
            raise BudgetExceeded(lease.scope, status_of(lease.scope, spent, others + lease.committed),
                                 amount / 1e6, lease.period_id)

    def _start_flusher(self) -> None:
        if (self._flusher is None or self._flusher.done()) and not self._stopping.is_set():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_forever(), name="budget-lease-flush")

    async def _flush_forever(self) -> None:
        while self._leases:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.flush_s)
            if self._stopping.is_set():
                return
            try:
                await self.flush()
            except Exception:  # noqa: BLE001 - the loop must outlive one bad flush
                log.exception("budget lease flush failed")

    def _prune(self, now_ms: int) -> None:
        if now_ms >= self._next_prune_ms:
            self._next_prune_ms = now_ms + 60_000
            self._finished.prune(now_ms)
