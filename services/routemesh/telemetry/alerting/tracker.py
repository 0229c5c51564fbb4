"""The state of every alert: pending while a condition holds for less than its rule's for_s, then firing, then resolved."""

from __future__ import annotations

import dataclasses
import hashlib
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

PENDING, FIRING, RESOLVED = "pending", "firing", "resolved"
DEFAULT_RESOLVED_KEPT = 200


def fingerprint(rule: str, subject: str) -> str:
    """The stable identity of one rule's alert on one subject (receivers deduplicate on it)."""
    return hashlib.sha256(f"{rule}\0{subject}".encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Reading:
    """One subject of a rule as measured now: whether the condition holds, the value and a line for people."""

    subject: str
    active: bool
    value: float
    threshold: float
    summary: str


@dataclass(frozen=True, slots=True)
class RuleRef:
    """What the tracker needs of a rule."""

    name: str
    kind: str
    severity: str
    for_s: float
    webhooks: tuple[str, ...] = ()


@dataclass(slots=True)
class Alert:
    """One rule's alert on one subject."""

    rule: str
    kind: str
    severity: str
    subject: str
    fingerprint: str
    state: Literal["pending", "firing", "resolved"]
    value: float
    threshold: float
    summary: str
    pending_since_ms: int
    started_at_ms: int = 0
    resolved_at_ms: int = 0
    webhooks: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Transition:
    """An alert that started firing or resolved: one notification, a copy of the alert as it was then."""

    status: Literal["firing", "resolved"]
    alert: Alert


class AlertTracker:
    """Alerts by fingerprint, moved along by readings; plain Python, no I/O, so it is tested without a mesh.

    A reading that is inactive (or a subject missing from a rule's readings) ends a pending alert silently
    and resolves a firing one. A rule whose readings are unknown (None: its data could not be read) keeps
    its alerts as they are. Each alert fires once until it resolves, and resolves once.
    """

    def __init__(self, resolved_kept: int = DEFAULT_RESOLVED_KEPT):
        self.alerts: dict[str, Alert] = {}
        self.resolved: deque[Alert] = deque(maxlen=resolved_kept)

    def update(self, rule: RuleRef, readings: Iterable[Reading] | None, now_ms: int) -> list[Transition]:
        """Fold one evaluation of `rule` in; the transitions to notify, in order."""
        if readings is None:
            return []
        out: list[Transition] = []
        seen: set[str] = set()
        for reading in readings:
            fp = fingerprint(rule.name, reading.subject)
            seen.add(fp)
            alert = self.alerts.get(fp)
            if not reading.active:
                if alert is not None:
                    out += self._end(fp, alert, now_ms, reading)
                continue
            if alert is None:
                alert = self.alerts[fp] = Alert(rule.name, rule.kind, rule.severity, reading.subject, fp, PENDING,
                                                reading.value, reading.threshold, reading.summary, now_ms)
            alert.value, alert.threshold, alert.summary = reading.value, reading.threshold, reading.summary
            alert.severity, alert.webhooks = rule.severity, rule.webhooks
            if alert.state == PENDING and now_ms - alert.pending_since_ms >= rule.for_s * 1000:
                alert.state, alert.started_at_ms = FIRING, now_ms
                out.append(Transition(FIRING, dataclasses.replace(alert)))
        for fp in [fp for fp, alert in self.alerts.items() if alert.rule == rule.name and fp not in seen]:
            out += self._end(fp, self.alerts[fp], now_ms, None, "no longer measured")
        return out

    def retire(self, rules: set[str], now_ms: int) -> list[Transition]:
        """Resolve the alerts of rules no longer in the policy."""
        out: list[Transition] = []
        for fp in [fp for fp, alert in self.alerts.items() if alert.rule not in rules]:
            out += self._end(fp, self.alerts[fp], now_ms, None, "its rule was removed from the policy")
        return out

    def forget(self, fp: str) -> None:
        """Drop an alert without a notification (another replica resolved it)."""
        self.alerts.pop(fp, None)

    def firing(self) -> list[Alert]:
        return [alert for alert in self.alerts.values() if alert.state == FIRING]

    def _end(self, fp: str, alert: Alert, now_ms: int, reading: Reading | None, why: str = "") -> list[Transition]:
        del self.alerts[fp]
        if alert.state != FIRING:
            return []
        alert.state, alert.resolved_at_ms = RESOLVED, now_ms
        if reading is not None:
            alert.value, alert.summary = reading.value, reading.summary
        elif why:
            alert.summary = f"{alert.summary} ({why})"
        self.resolved.appendleft(alert)
        return [Transition(RESOLVED, dataclasses.replace(alert))]
