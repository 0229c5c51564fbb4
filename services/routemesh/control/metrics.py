"""The control plane's Prometheus metrics: the policy version in force and the changes applied or refused."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily

from routemesh.common.metrics import FunctionCollector, policy_version_gauge
from routemesh.control.registry import PolicyRegistry


def register_control_metrics(registry: CollectorRegistry, policies: PolicyRegistry) -> None:
    """Everything is read from the policy registry at scrape time: nothing is recorded as changes happen."""
    policy_version_gauge(registry, lambda: policies.current.version if policies.current is not None else 0)

    def changes() -> list[CounterMetricFamily]:
        family = CounterMetricFamily("routemesh_policy_changes", "Policy loads applied (a new version) or refused "
                                     "(invalid), from the file or the API", labels=["action"])
        for action, count in list(policies.changes.items()):
            family.add_metric([action], count)
        return [family]

    registry.register(FunctionCollector("policy_changes", changes))
