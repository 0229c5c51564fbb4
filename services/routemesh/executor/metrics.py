"""The executor's Prometheus instruments: every attempt of every execution, recorded when the execution ends.

Model labels are the policy's model names (what the router's metrics and the plan name), not the provider's
upstream names; both are bounded by the policy (a plan names at most its version's models).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from routemesh.common.metrics import LATENCY_BUCKETS, policy_version_gauge
from routemesh.common.outcomes import AttemptOutcome
from routemesh.executor.attempt import AttemptRecord

# Attempts that never called the provider: counted, but they have no operation duration.
NOT_CALLED = frozenset({AttemptOutcome.CIRCUIT_OPEN, AttemptOutcome.CONFIG_ERROR,
                        AttemptOutcome.RETRY_BUDGET_EXHAUSTED})


class ExecutorMetrics:
    """`attempts_done` records one execution's attempts; in-flight streams and the policy version are read at scrape."""

    def __init__(self, registry: CollectorRegistry, policy_version: Callable[[], int]):
        labels = ["gen_ai_provider_name", "gen_ai_request_model"]
        self.attempts = Counter("routemesh_provider_attempts", "Attempts of a model at its provider, by outcome",
                                [*labels, "outcome"], registry=registry)
        self.duration = Histogram("gen_ai_client_operation_duration_seconds", "Duration of a provider call "
                                  "(error_type: the attempt's outcome when it did not succeed)",
                                  [*labels, "error_type"], buckets=LATENCY_BUCKETS, registry=registry)
        self.inflight = Gauge("routemesh_executor_inflight_streams", "Execute streams in progress in this executor",
                              registry=registry)
        policy_version_gauge(registry, policy_version)
        # (provider, model, outcome) -> its counter child and duration child (None: not timed); labels() once.
        self._children: dict[tuple[str, str, AttemptOutcome], tuple[Counter, Histogram | None]] = {}

    def watch_streams(self, count: Callable[[], int]) -> None:
        self.inflight.set_function(lambda: float(count()))

    def attempts_done(self, attempts: Sequence[AttemptRecord]) -> None:
        """One execution's attempts, each final (the engine calls this once it has awaited them all)."""
        for record in attempts:
            key = (record.provider, record.model, record.outcome)
            children = self._children.get(key)
            if children is None:
                children = self._children[key] = self._labelled(*key)
            counted, timed = children
            counted.inc()
            if timed is not None:
                timed.observe(record.duration_ms / 1000)

    def _labelled(self, provider: str, model: str, outcome: AttemptOutcome) -> tuple[Counter, Histogram | None]:
        label = outcome.label if outcome else "unspecified"
        error_type = "" if outcome == AttemptOutcome.SUCCESS else label
        return (self.attempts.labels(provider, model, label),
                None if outcome in NOT_CALLED else self.duration.labels(provider, model, error_type))
