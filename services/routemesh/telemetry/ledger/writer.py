"""LedgerWriter: rows buffered in memory, written in batches by a background task, never on a request's path.

The database down or slow: rows wait in the buffer (up to `max_buffered`), the writer retries with backoff,
and the backlog drains when the database is back. Past the bound, new rows are dropped and counted, with a
log line at most every 10 s (never silence). stop() writes what is buffered, within a deadline; what it cannot
write is counted as dropped and logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from routemesh.common.tasks import cancel_and_wait
from routemesh.telemetry.ledger.stores import LedgerStore, TextRow

log = logging.getLogger(__name__)
DEFAULT_MAX_BUFFERED = 100_000
DEFAULT_BATCH_ROWS = 1000
DEFAULT_INTERVAL_S = 0.2
# How often kept conversations past their retention are deleted (also right after the first write).
PURGE_EVERY_S = 600.0
WARN_EVERY_S = 10.0


@dataclass
class LedgerStats:
    """What the writer did: rows written, waiting, dropped; whether the database answers now."""

    written: int = 0
    buffered: int = 0
    dropped: int = 0
    healthy: bool = False
    last_error: str = ""


class LedgerWriter:
    """add() appends to a bounded buffer; a task inserts batches of up to `batch_rows` every `interval_s`."""

    def __init__(self, store: LedgerStore, *, max_buffered: int = DEFAULT_MAX_BUFFERED,
                 batch_rows: int = DEFAULT_BATCH_ROWS, interval_s: float = DEFAULT_INTERVAL_S,
                 write_timeout_s: float = 5.0, max_backoff_s: float = 5.0):
        self.store = store
        self.max_buffered = max_buffered
        self.batch_rows = batch_rows
        self.interval_s = interval_s
        self.write_timeout_s = write_timeout_s
        self.max_backoff_s = max_backoff_s
        self.stats = LedgerStats()
        # Each buffered request: its row, and its kept conversation where its route stores text.
        self._rows: deque[tuple[tuple[Any, ...], TextRow | None]] = deque()
        self._purged_at = 0.0
        self._opened = False
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._last_warning = 0.0

    def add(self, rows: Sequence[tuple[Any, ...]], texts: Mapping[str, TextRow] | None = None) -> None:
        """Queue rows (and the conversations kept for some, by decision id) for the database; rows past the
        buffer's bound are dropped and counted."""
        room = self.max_buffered - len(self._rows)
        if room < len(rows):
            dropped = len(rows) - max(room, 0)
            self.stats.dropped += dropped
            self._warn(f"ledger buffer full ({self.max_buffered:,} rows; database {self.store.url_for_humans}: "
                       f"{self.stats.last_error or 'slow'}): {self.stats.dropped:,} row(s) dropped so far")
            rows = rows[:max(room, 0)]
        self._rows.extend((row, texts.get(row[0]) if texts else None) for row in rows)
        self.stats.buffered = len(self._rows)
        if len(self._rows) >= self.batch_rows:
            self._wake.set()

    @property
    def opened(self) -> bool:
        """Whether the database has been reached (and migrated) since start."""
        return self._opened

    def pending(self, decision_id: str) -> tuple[Any, ...] | None:
        """The row of `decision_id` if it is still buffered (newest first: feedback follows its answer closely)."""
        for row, _ in reversed(self._rows):
            if row[0] == decision_id:
                return row
        return None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ledger-writer")

    async def stop(self, deadline_s: float = 10.0) -> None:
        """Stop the task and write what is buffered within `deadline_s`; the rest is dropped, counted and logged."""
        await cancel_and_wait(self._task)
        self._task = None
        give_up = time.monotonic() + deadline_s
        while self._rows and time.monotonic() < give_up:
            if not await self._write_once(min(self.write_timeout_s, max(give_up - time.monotonic(), 0.1))):
                await asyncio.sleep(0.2)
        if self._rows:
            self.stats.dropped += len(self._rows)
            log.error("ledger: %d buffered row(s) not written at shutdown (database %s: %s)", len(self._rows),
                      self.store.url_for_humans, self.stats.last_error or "no answer")
            self._rows.clear()
            self.stats.buffered = 0
        try:
            await self.store.close()
        except Exception as exc:  # noqa: BLE001 - closing is best effort at shutdown
            log.warning("ledger: closing %s failed: %s", self.store.url_for_humans, exc)

    async def _run(self) -> None:
        backoff = min(self.interval_s, self.max_backoff_s)
        while True:
            # Open (and migrate) first: feedback reads the database before any row needs writing.
            if not self._opened and not await self._open():
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
                continue
            if not self._rows:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), self.interval_s)
                except TimeoutError:
                    pass
                if not self._rows:
                    continue
            if await self._write_once(self.write_timeout_s):
                backoff = min(self.interval_s, self.max_backoff_s)
                if len(self._rows) < self.batch_rows:
                    await asyncio.sleep(self.interval_s)  # let a batch gather
            else:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)

    async def _open(self) -> bool:
        try:
            await asyncio.wait_for(self.store.open(), self.write_timeout_s)
        except Exception as exc:  # noqa: BLE001 - any failure means "not yet"; the message says which
            self._failed(exc)
            return False
        self._opened = True
        self.stats.healthy = True
        log.info("ledger: writing to %s", self.store.url_for_humans)
        return True

    async def _write_once(self, timeout_s: float) -> bool:
        """Insert one batch from the front of the buffer; on failure it stays at the front."""
        if not self._opened and not await self._open():
            return False
        batch = [self._rows.popleft() for _ in range(min(self.batch_rows, len(self._rows)))]
        try:
            await asyncio.wait_for(self.store.insert([row for row, _ in batch],
                                                     [text for _, text in batch if text is not None]), timeout_s)
        except Exception as exc:  # noqa: BLE001
            self._rows.extendleft(reversed(batch))
            self._failed(exc)
            return False
        finally:
            self.stats.buffered = len(self._rows)
        self.stats.written += len(batch)
        await self._purge()
        if not self.stats.healthy:
            log.warning("ledger: %s answers again; %d row(s) still buffered", self.store.url_for_humans,
                        len(self._rows))
        self.stats.healthy = True
        self.stats.last_error = ""
        return True

    async def _purge(self) -> None:
        """Delete kept conversations past their retention, at most every PURGE_EVERY_S."""
        if time.monotonic() - self._purged_at < PURGE_EVERY_S:
            return
        self._purged_at = time.monotonic()
        try:
            purged = await asyncio.wait_for(self.store.purge_texts(int(time.time() * 1000)), self.write_timeout_s)
        except Exception as exc:  # noqa: BLE001 - retried at the next interval
            log.warning("ledger: purging expired conversations failed: %s", exc)
            self._purged_at = 0.0
            return
        if purged:
            log.info("ledger: %d conversation(s) past their retention deleted", purged)

    def _failed(self, exc: BaseException) -> None:
        self.stats.healthy = False
        self.stats.last_error = f"{type(exc).__name__}: {exc}"[:300] if str(exc) else type(exc).__name__
        self._warn(f"ledger: database {self.store.url_for_humans} unavailable ({self.stats.last_error}); "
                   f"{len(self._rows):,} row(s) buffered, {self.stats.dropped:,} dropped so far")

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_warning >= WARN_EVERY_S:
            self._last_warning = now
            log.warning("%s", message)
