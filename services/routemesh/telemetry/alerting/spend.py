"""Budget spend for alerting: the routers' Redis budget ledger when telemetry shares their Redis."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from routemesh.common.redis_client import FailFast, RedisUnavailable, create_client
from routemesh.router.admission.budget import BudgetScope
from routemesh.router.admission.budget_redis import RedisBudgetLedger
from routemesh.telemetry.alerting.tallies import MAX_ACCOUNTS

log = logging.getLogger(__name__)
# Tenant/project pairs seen by any replica, kept this long after the last one was added.
PAIRS_TTL_S = 35 * 24 * 3600
_SEPARATOR = "\x1f"


class SharedSpend:
    """Reads spend from the ledger routers write (same Redis, same prefix) and shares the accounts seen.

    Spend is what was settled (`spent`); holds of requests in flight are not counted. The tenant/project
    pairs each replica saw in request summaries go to one Redis set, so every replica knows every account
    of a "*" budget, whichever replica the requests were reported to.
    """

    def __init__(self, url: str, prefix: str):
        self.ledger = RedisBudgetLedger(url, prefix)
        self._redis = create_client(url, max_connections=4)
        self._key = f"{prefix}alerts:budget-pairs"
        self._shared: set[tuple[str, str]] = set()
        self._guard = FailFast(log)

    async def pairs(self, local: set[tuple[str, str]]) -> set[tuple[str, str]]:
        """Every pair any replica has seen (this replica's when Redis cannot be read)."""
        new = [f"{tenant}{_SEPARATOR}{project}" for tenant, project in local - self._shared]
        try:
            if new:
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.sadd(self._key, *new)
                    pipe.expire(self._key, PAIRS_TTL_S)
                    await self._guard.run(pipe.execute())
                self._shared |= local
            members = await self._guard.run(self._redis.srandmember(self._key, MAX_ACCOUNTS))
        except RedisUnavailable as exc:
            self._guard.warn(f"alerting: budget accounts of other replicas unknown: {exc}")
            return set(local)
        found = {tuple(member.split(_SEPARATOR, 1)) for member in members if _SEPARATOR in member}
        return set(local) | found  # type: ignore[arg-type]

    async def spent(self, scopes: Sequence[BudgetScope]) -> dict[str, float] | None:
        """Settled spend this period per account; None when the ledger cannot be read."""
        if not scopes:
            return {}
        statuses = await self.ledger.status(scopes)
        if not statuses:
            return None
        return {account: status.spent_usd for account, status in statuses.items()}

    async def close(self) -> None:
        await self.ledger.close()
        await self._redis.aclose()
