"""The Prometheus metric contract: every name (and its labels) the alert rules and the dashboard in deploy/ may use.

docs/metrics.md describes them; tests/unit/test_deploy_monitoring.py checks deploy/ against this list, and a
scrape of a real mesh can be checked against it too (`missing_from_scrape`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_ROUTE_MODEL = ("route", "gen_ai_response_model")
# name as exposed (counters with _total; histograms by their base name) -> labels
METRICS: dict[str, tuple[str, ...]] = {
    # router
    "routemesh_requests_total": ("route", "model", "status", "tenant"),
    "routemesh_rejections_total": ("reason", "route", "tenant"),
    "gen_ai_server_time_to_first_token_seconds": _ROUTE_MODEL,
    "gen_ai_server_time_per_output_token_seconds": _ROUTE_MODEL,
    "gen_ai_server_request_duration_seconds": _ROUTE_MODEL,
    "gen_ai_client_token_usage": ("gen_ai_token_type", "route", "gen_ai_response_model", "tenant"),
    "routemesh_spend_usd_total": ("route", "model", "tenant"),
    "routemesh_failovers_total": ("route", "reason"),
    "routemesh_errors_total": ("route", "model", "reason"),
    "routemesh_inflight_streams": (),
    "routemesh_policy_version": (),
    "routemesh_breaker_state": ("model",),
    "routemesh_budget_limit_usd": ("budget",),
    "routemesh_budget_remaining_usd": ("budget",),
    # executor
    "routemesh_provider_attempts_total": ("gen_ai_provider_name", "gen_ai_request_model", "outcome"),
    "gen_ai_client_operation_duration_seconds": ("gen_ai_provider_name", "gen_ai_request_model", "error_type"),
    "routemesh_executor_inflight_streams": (),
    # telemetry
    "routemesh_ledger_backlog_rows": (),
    "routemesh_ledger_dropped_rows_total": (),
    "routemesh_ledger_written_rows_total": (),
    "routemesh_ledger_healthy": (),
    "routemesh_alerts_firing": ("rule", "severity"),
    "routemesh_alert_deliveries_total": ("outcome",),
    # control
    "routemesh_policy_changes_total": ("action",),
    # classifier
    "routemesh_classifications_total": ("task",),
    "routemesh_classify_duration_seconds": (),
    # gateway
    "routemesh_http_requests_total": ("path", "code"),
    "routemesh_http_inflight_requests": (),
    # every service (prometheus_client's process collector)
    "process_cpu_seconds_total": (),
    "process_resident_memory_bytes": (),
    # Prometheus itself, per scrape target
    "up": (),
}
HISTOGRAMS = frozenset({
    "gen_ai_server_time_to_first_token_seconds", "gen_ai_server_time_per_output_token_seconds",
    "gen_ai_server_request_duration_seconds", "gen_ai_client_token_usage", "gen_ai_client_operation_duration_seconds",
    "routemesh_classify_duration_seconds",
})
# Labels Prometheus adds to every series (job, instance) or to histogram buckets (le).
TARGET_LABELS = frozenset({"job", "instance"})
JOBS = ("routemesh-router", "routemesh-classifier", "routemesh-telemetry", "routemesh-executor",
        "routemesh-control", "routemesh-gateway")

_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
                       "group_right", "inf", "nan", "atan2"})
_STRING = re.compile(r'"(?:\\.|[^"\\])*"' + r"|'(?:\\.|[^'\\])*'")
_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.$:])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])(?!\s*\()")


def series_names(name: str) -> set[str]:
    """The names a metric's series carry: a histogram's _bucket, _sum and _count, else the name itself."""
    return {f"{name}_bucket", f"{name}_sum", f"{name}_count"} if name in HISTOGRAMS else {name}


def known_series() -> dict[str, frozenset[str]]:
    """Every series name of the contract -> the labels it may be selected by."""
    out: dict[str, frozenset[str]] = {}
    for name, labels in METRICS.items():
        for series in series_names(name):
            extra = {"le"} if series.endswith("_bucket") and name in HISTOGRAMS else set()
            out[series] = frozenset(labels) | TARGET_LABELS | extra
    return out


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (functions, keywords, labels and durations left out)."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = _GROUPING.sub(" ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    return {name for name in _IDENTIFIER.findall(text) if name.lower() not in _KEYWORDS}


def selector_labels(expr: str) -> list[tuple[str, str]]:
    """(metric, label) for every label matcher written on a metric: `m{a="x"}` gives ("m", "a")."""
    text = _STRING.sub('""', expr)
    return [(m.group(1), label) for m in _SELECTOR.finditer(text) for label in _MATCHER.findall(m.group(2))]


def missing_from_scrape(exposition: Iterable[str]) -> set[str]:
    """Contract series names absent from scraped text lines (for a check against a real mesh)."""
    seen = {re.split(r"[{\s]", line, maxsplit=1)[0] for line in exposition if line and not line.startswith("#")}
    return {name for name in known_series() if name not in seen} - {"up"}
