"""The ledger report telemetry serves (GetLedgerReport): `routemesh report --ledger --format json`'s shape."""

from __future__ import annotations

import asyncio
import datetime
import time

from routemesh.common.errors import LedgerUnavailable, NotReady
from routemesh.common.policy_watch import PolicyHolder
from routemesh.ledger_report import ledger_report, report_json, store_rows
from routemesh.telemetry.ledger.writer import LedgerWriter

# How long the database may take to hand over the rows of a report.
READ_TIMEOUT_S = 10.0


def since_label(since_ms: int) -> str:
    """The report's "since": the CLI writes what it was given (7d); telemetry the UTC time it starts at."""
    moment = datetime.datetime.fromtimestamp(since_ms / 1000, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


async def ledger_report_json(ledger: LedgerWriter, holder: PolicyHolder, since_ms: int) -> str:
    """The report over the ledger's rows that ended at or after `since_ms`, priced with the held policy."""
    held = holder.current
    if held is None:
        raise NotReady("telemetry has no policy yet, and the report's prices come from it; retry shortly")
    if not ledger.opened:
        raise LedgerUnavailable("the ledger's database has not answered yet; retry later", retry_after_s=1.0)
    until_ms = int(time.time() * 1000) + 1
    try:
        rows = await asyncio.wait_for(store_rows(ledger.store, since_ms, until_ms), READ_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - the database's trouble, told as such
        raise LedgerUnavailable(f"the ledger's database did not answer ({type(exc).__name__}); retry later",
                                retry_after_s=1.0) from None
    # Rows buffered and not yet written are not in it: they arrive within the writer's interval.
    # A day of rows is aggregated off the event loop, which keeps serving reports and snapshots meanwhile.
    report = await asyncio.to_thread(ledger_report, rows, held.policy, since_label(since_ms))
    return report_json(report)
