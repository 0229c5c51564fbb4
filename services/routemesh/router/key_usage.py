"""API-key usage in the router: summed in memory per key and UTC day, written to Redis off the request path."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import date, timedelta

from routemesh.common.keys import KeyStore, KeyUsage
from routemesh.common.redis_client import FailFast, RedisUnavailable
from routemesh.common.tasks import cancel_and_wait

log = logging.getLogger(__name__)
_EPOCH = date(1970, 1, 1)


class KeyUsageRecorder:
    """`add()` is a dict update on the request's path; a task writes the sums every `interval_s`.

    So no request ever waits on Redis, and however many requests a key makes, Redis sees one write of it per
    interval (KeyStore.add_usage: one script call per hundred keys). A write that fails is dropped and counted
    (`lost_requests`), with at most one warning per 10 s: usage is a report, and budgets are enforced by the
    budget ledger, which settles on its own. A router that is killed loses at most its last interval's usage;
    a stopped one writes it first.
    """

    def __init__(self, store: KeyStore, interval_s: float = 1.0, clock: Callable[[], float] = time.time):
        self.store = store
        self.interval_s = interval_s
        self.lost_requests = 0
        self._clock = clock
        # (key id, days since 1970-01-01 UTC) -> usage not yet written; the day as a number is cheaper than a date.
        self._pending: dict[tuple[str, int], KeyUsage] = {}
        self._guard = FailFast(log, timeout_s=2.0, backoff_s=0.0)
        self._task: asyncio.Task[None] | None = None

    def add(self, key_id: str, usage: KeyUsage) -> None:
        """Count one request's usage towards its key's today (UTC)."""
        slot = (key_id, int(self._clock() // 86_400))
        known = self._pending.get(slot)
        self._pending[slot] = usage if known is None else known + usage

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="key-usage")

    async def stop(self) -> None:
        """Stop the task, then write what is pending."""
        await cancel_and_wait(self._task)
        await self.flush()

    async def flush(self) -> None:
        """Write the pending usage now; on failure drop it, count it and warn."""
        if not self._pending:
            return
        batch, self._pending = self._pending, {}
        by_day = {(key_id, _EPOCH + timedelta(days=day)): usage for (key_id, day), usage in batch.items()}
        try:
            await self._guard.run(self.store.add_usage(by_day))
        except RedisUnavailable as exc:
            self.lost_requests += sum(usage.requests for usage in batch.values())
            self._guard.warn(f"API key usage of {len(batch)} key(s) not recorded "
                             f"({self.lost_requests} requests so far): {exc}")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.flush()
            except Exception:  # never let one bad write end the recording for good
                log.warning("recording API key usage failed", exc_info=True)
