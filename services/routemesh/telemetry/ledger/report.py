"""The ledger report telemetry serves (GetLedgerReport): `routemesh report --ledger --format json`'s shape."""

from __future__ import annotations

from routemesh.common.policy_watch import PolicyHolder
from routemesh.telemetry.ledger.writer import LedgerWriter


async def ledger_report_json(ledger: LedgerWriter, holder: PolicyHolder, since_ms: int) -> str:
    """The report over the ledger's rows that ended at or after `since_ms`, priced with the held policy."""
    raise NotImplementedError
