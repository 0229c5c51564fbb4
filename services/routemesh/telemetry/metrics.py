"""Telemetry's Prometheus metrics: the ledger writer's account, the breakers of its snapshot, the policy version.

All read at scrape time from memory: the writer's stats object, and the health snapshot a loop task takes
every few seconds (common.metrics.LoopReadings; from the store's snapshot cache, as watching routers get it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from routemesh.common.metrics import (
    BREAKER_CLOSED,
    BREAKER_HALF_OPEN,
    BREAKER_OPEN,
    FunctionCollector,
    LoopReadings,
    breaker_family,
    policy_version_gauge,
)
from routemesh.common.outcomes import CircuitState
from routemesh.telemetry.ledger.writer import LedgerStats
from routemesh.v1 import telemetry_pb2

BREAKER_VALUES = {CircuitState.OPEN: BREAKER_OPEN, CircuitState.HALF_OPEN: BREAKER_HALF_OPEN}


def ledger_families(stats: LedgerStats) -> list[GaugeMetricFamily | CounterMetricFamily]:
    backlog = GaugeMetricFamily("routemesh_ledger_backlog_rows", "Ledger rows buffered, not yet written",
                                value=stats.buffered)
    dropped = CounterMetricFamily("routemesh_ledger_dropped_rows", "Ledger rows dropped (buffer full while the "
                                  "database was down or slow)", value=stats.dropped)
    written = CounterMetricFamily("routemesh_ledger_written_rows", "Ledger rows written to the database",
                                  value=stats.written)
    healthy = GaugeMetricFamily("routemesh_ledger_healthy", "1 while the ledger's database answers, else 0",
                                value=1.0 if stats.healthy else 0.0)
    return [backlog, dropped, written, healthy]


def breaker_states(snapshot: telemetry_pb2.GetSnapshotResponse | None) -> list[tuple[str, int]]:
    if snapshot is None:
        return []
    return [(m.model, BREAKER_VALUES.get(m.circuit_state, BREAKER_CLOSED)) for m in snapshot.models]


def register_telemetry_metrics(registry: CollectorRegistry, policy_version: Callable[[], int],
                               ledger: Callable[[], LedgerStats | None],
                               snapshot: Callable[[], Awaitable[telemetry_pb2.GetSnapshotResponse]]) -> LoopReadings:
    """Register the collectors; the returned readings (the snapshot) run on the loop from start to stop."""
    policy_version_gauge(registry, policy_version)
    async def read() -> telemetry_pb2.GetSnapshotResponse | None:
        # Before the policy arrives a snapshot names no model: read again shortly instead of an interval later.
        return await snapshot() if policy_version() else None

    readings = LoopReadings({"snapshot": read})

    def collect() -> list:
        stats = ledger()
        held = readings.values.get("snapshot")
        families = ledger_families(stats) if stats is not None else []
        return [*families, breaker_family(breaker_states(held))]  # type: ignore[arg-type]

    registry.register(FunctionCollector("telemetry", collect))
    return readings
