"""Alerting's Prometheus metrics: alerts firing by rule and severity, webhook deliveries by outcome."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from routemesh.common.metrics import FunctionCollector

if TYPE_CHECKING:
    from routemesh.telemetry.alerts import AlertEngine


def alert_families(engine: AlertEngine) -> list[GaugeMetricFamily | CounterMetricFamily]:
    """Read at scrape time (another thread) from values the engine replaces whole after each evaluation."""
    firing = GaugeMetricFamily("routemesh_alerts_firing", "Alerts firing now (0 for a rule with none), by rule "
                               "and severity", labels=["rule", "severity"])
    for (rule, severity), count in engine.firing_counts.items():
        firing.add_metric([rule, severity], count)
    deliveries = CounterMetricFamily("routemesh_alert_deliveries", "Webhook notifications by outcome: delivered, "
                                     "retried (one per retry), failed (gave up), dropped (queue full or webhook "
                                     "unusable)", labels=["outcome"])
    for outcome, count in dict(engine.sender.counts).items():
        deliveries.add_metric([outcome], count)
    return [firing, deliveries]


def register_alert_metrics(registry: CollectorRegistry, engine: AlertEngine) -> None:
    registry.register(FunctionCollector("alerts", lambda: alert_families(engine)))
