"""Notification bodies: an Alertmanager-like JSON document, or the shape Slack's incoming webhooks accept."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from routemesh.telemetry.alerting.tracker import FIRING, Transition

# Alertmanager's "no end time" (its Go zero time), for a firing alert.
ZERO_TIME = "0001-01-01T00:00:00Z"
_SLACK_COLORS = {"critical": "#d0021b", "warning": "#f5a623"}
_RESOLVED_COLOR = "#2eb886"


def iso(ms: int) -> str:
    """RFC 3339 UTC with milliseconds, as Alertmanager writes times."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def labels(transition: Transition) -> dict[str, str]:
    alert = transition.alert
    return {"alertname": alert.rule, "rule": alert.rule, "kind": alert.kind, "severity": alert.severity,
            "subject": alert.subject, "service": "routemesh"}


def json_body(transition: Transition, receiver: str) -> dict[str, Any]:
    """Alertmanager's webhook body (version 4) with one alert; extra fields carry the value and the bound."""
    alert = transition.alert
    tags = labels(transition)
    return {
        "version": "4",
        "receiver": receiver,
        "status": transition.status,
        "groupKey": f"routemesh/{alert.fingerprint}",
        "groupLabels": {"alertname": alert.rule},
        "commonLabels": tags,
        "commonAnnotations": {"summary": alert.summary},
        "externalURL": "",
        "truncatedAlerts": 0,
        "alerts": [{
            "status": transition.status,
            "labels": tags,
            "annotations": {"summary": alert.summary},
            "startsAt": iso(alert.started_at_ms),
            "endsAt": iso(alert.resolved_at_ms) if alert.resolved_at_ms else ZERO_TIME,
            "fingerprint": alert.fingerprint,
            "value": alert.value,
            "threshold": alert.threshold,
        }],
    }


def slack_body(transition: Transition) -> dict[str, Any]:
    """Slack's incoming-webhook body: `text` (the notification line) and one colored attachment with fields."""
    alert = transition.alert
    firing = transition.status == FIRING
    mark = ":rotating_light: [FIRING]" if firing else ":white_check_mark: [RESOLVED]"
    text = f"{mark} {alert.rule} ({alert.severity}): {alert.summary}"
    fields = [("Rule", alert.rule), ("Kind", alert.kind), ("Severity", alert.severity), ("Subject", alert.subject),
              ("Started", iso(alert.started_at_ms))]
    if not firing:
        fields.append(("Resolved", iso(alert.resolved_at_ms)))
    return {
        "text": text,
        "attachments": [{
            "color": _SLACK_COLORS.get(alert.severity, "#439fe0") if firing else _RESOLVED_COLOR,
            "fallback": text,
            "title": f"{alert.rule}: {alert.subject}",
            "text": alert.summary,
            "fields": [{"title": title, "value": value, "short": True} for title, value in fields],
            "footer": f"routemesh alert {alert.fingerprint}",
            "ts": (alert.resolved_at_ms or alert.started_at_ms) // 1000,
        }],
    }


def body(transition: Transition, receiver: str, fmt: str) -> dict[str, Any]:
    return slack_body(transition) if fmt == "slack" else json_body(transition, receiver)
