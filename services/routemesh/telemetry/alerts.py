"""Alerting: the policy's alert rules, evaluated off the request path, delivered to webhooks (firing and
resolved, deduplicated, retried with backoff)."""

from __future__ import annotations

from collections.abc import Sequence

from routemesh.v1 import telemetry_pb2


class AlertEngine:
    """Evaluates the policy's alert rules; the telemetry servicer feeds it request summaries."""

    def observe_requests(self, summaries: Sequence[telemetry_pb2.RequestSummary]) -> None:
        """Take note of finished requests (failovers, TTFT); cheap and never waits."""
        raise NotImplementedError

    def list(self, resolved_limit: int) -> telemetry_pb2.ListAlertsResponse:
        """Alerts firing now, and the newest `resolved_limit` resolved ones."""
        raise NotImplementedError
