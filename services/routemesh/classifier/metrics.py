"""The classifier's Prometheus instruments: classifications by task type, their duration, the policy version."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram

from routemesh.common.metrics import LATENCY_BUCKETS, policy_version_gauge


class ClassifierMetrics:
    """`classified` records one Classify call (its task type is one of the classifier's fixed few)."""

    def __init__(self, registry: CollectorRegistry, policy_version: Callable[[], int]):
        self.classifications = Counter("routemesh_classifications", "Requests classified, by task type", ["task"],
                                       registry=registry)
        self.duration = Histogram("routemesh_classify_duration_seconds", "Time to classify a request (and predict "
                                  "per-model success when the policy names a predictor)", buckets=LATENCY_BUCKETS,
                                  registry=registry)
        policy_version_gauge(registry, policy_version)
        self._tasks: dict[str, Counter] = {}

    def classified(self, task: str, seconds: float) -> None:
        child = self._tasks.get(task)
        if child is None:
            child = self._tasks[task] = self.classifications.labels(task)
        child.inc()
        self.duration.observe(seconds)
