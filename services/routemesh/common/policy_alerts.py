"""The policy's `alerts` section: built-in alert rules and the webhooks they notify (telemetry evaluates them)."""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

_NAME = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$"
_SEVERITY = r"^[a-z][a-z0-9_-]{0,31}$"
# A header name is an HTTP token; values may not break the header block.
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$")
# ${VAR} and ${VAR:-default}, as policy.expand_env reads them (telemetry expands webhook values).
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# Headers routemesh sets itself on every delivery.
_RESERVED_HEADERS = frozenset({"content-type", "content-length", "host", "transfer-encoding", "connection"})
KINDS = ("budget", "outage", "error_rate", "latency", "failover_rate")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _check_refs(value: str) -> None:
    """Every `${` must open a well-formed reference: a typo must not reach a receiver as literal text."""
    if value.count("${") != len(ENV_REF.findall(value)):
        raise ValueError("a ${ in it does not open a ${NAME} or ${NAME:-default} reference")


class Webhook(_Strict):
    """Where notifications go: an HTTP(S) endpoint taking JSON (Alertmanager-like) or Slack's shape."""

    name: str = Field(pattern=_NAME)
    # ${VAR} references are expanded by telemetry from its own environment when it sends, so a secret in the
    # URL or a header never passes through control or the rest of the mesh (GetPolicy shows them as written).
    url: str = Field(min_length=1, max_length=2048)
    format: Literal["json", "slack"] = "json"
    headers: dict[str, str] = Field({}, max_length=16)
    timeout_s: float = Field(5.0, gt=0, le=60, description="per delivery attempt")
    max_attempts: int = Field(6, ge=1, le=20, description="first try included; retried with backoff")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        _check_refs(value)
        if not ENV_REF.search(value) and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL (or use ${VAR} references)")
        return value

    @field_validator("headers")
    @classmethod
    def _header_fields(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not _HEADER_NAME.match(name):
                raise ValueError(f"header name {name!r} is not an HTTP token")
            if name.lower() in _RESERVED_HEADERS:
                raise ValueError(f"header {name!r} is set by routemesh")
            if any(c in text for c in "\r\n\0") or len(text) > 4096:
                raise ValueError(f"header {name!r}: a value has no line breaks and at most 4096 characters")
            _check_refs(text)
        return value


class _Rule(_Strict):
    name: str = Field(pattern=_NAME)
    severity: str = Field("warning", pattern=_SEVERITY)
    for_s: float = Field(0.0, ge=0, le=86_400, description="the condition holds this long before it fires")
    webhooks: tuple[str, ...] = Field((), description="send only to these; empty: every webhook")


class BudgetRule(_Rule):
    """A budget account's spend in its current period past `fraction` of its limit."""

    kind: Literal["budget"]
    fraction: float = Field(0.8, gt=0, le=1)
    budget: str | None = Field(None, description="a budget's name; unset: every budget of the policy")


class OutageRule(_Rule):
    """A model's circuit breaker is not closed (open or probing); per provider: all of its models."""

    kind: Literal["outage"]
    per: Literal["model", "provider"] = "model"
    models: tuple[str, ...] = Field((), description="empty: every model")


class ErrorRateRule(_Rule):
    """A model's (or provider's) error rate in telemetry's window above `above`."""

    kind: Literal["error_rate"]
    per: Literal["model", "provider"] = "model"
    models: tuple[str, ...] = ()
    above: float = Field(0.2, ge=0, lt=1)
    min_samples: int = Field(20, ge=1, description="attempts in the window before the rate counts")


class LatencyRule(_Rule):
    """A model's time-to-first-token percentile in telemetry's window above `above_ms`."""

    kind: Literal["latency"]
    models: tuple[str, ...] = ()
    percentile: Literal[50, 90, 99] = 90
    above_ms: float = Field(gt=0, le=3_600_000)
    min_samples: int = Field(10, ge=1)


class FailoverRateRule(_Rule):
    """The share of a route's requests that needed more than one attempt, over `window_s`, above `above`."""

    kind: Literal["failover_rate"]
    routes: tuple[str, ...] = Field((), description="empty: every route")
    above: float = Field(0.1, ge=0, lt=1)
    window_s: float = Field(60.0, ge=1, le=3600)
    min_requests: int = Field(20, ge=1)


AlertRule = Annotated[BudgetRule | OutageRule | ErrorRateRule | LatencyRule | FailoverRateRule,
                      Field(discriminator="kind")]


class Alerts(_Strict):
    """Alert rules evaluated by telemetry every `evaluate_every_s`, and the webhooks they notify."""

    evaluate_every_s: float = Field(10.0, ge=0.1, le=3600)
    webhooks: tuple[Webhook, ...] = Field((), max_length=32)
    rules: tuple[AlertRule, ...] = Field((), max_length=256)


def reference_problems(alerts: Alerts, models: set[str], routes: set[str], budgets: set[str]) -> list[str]:
    """Names used twice, and names the rules give that the policy does not define, as "field.path: message"."""
    problems = []
    for section, names in (("webhooks", [w.name for w in alerts.webhooks]), ("rules", [r.name for r in alerts.rules])):
        problems += [f"alerts.{section}: the name {n!r} is used twice" for n in sorted(set(names))
                     if names.count(n) > 1]
    hooks = {w.name for w in alerts.webhooks}
    for rule in alerts.rules:
        problems += [f"alerts.rules.{rule.name}.webhooks: unknown webhook {name!r}; defined: {sorted(hooks)}"
                     for name in rule.webhooks if name not in hooks]
        where = f"alerts.rules.{rule.name}"
        for model in getattr(rule, "models", ()):
            if model not in models:
                problems.append(f"{where}.models: unknown model {model!r}; defined: {sorted(models)}")
        for route in getattr(rule, "routes", ()):
            if route not in routes:
                problems.append(f"{where}.routes: unknown route {route!r}; defined: {sorted(routes)}")
        if isinstance(rule, BudgetRule) and rule.budget is not None and rule.budget not in budgets:
            problems.append(f"{where}.budget: unknown budget {rule.budget!r}; defined: {sorted(budgets)}")
    return problems


def env_names(webhook: Webhook) -> list[str]:
    """The environment variables a webhook's URL and headers reference."""
    return [m.group(1) for text in (webhook.url, *webhook.headers.values()) for m in ENV_REF.finditer(text)]


def masked_url(url: str) -> str:
    """A webhook URL as GetPolicy shows it: a literal password is ***; the path and query are shown as written
    when the URL takes its secret from ${VAR} references, else hidden, since a literal path is often the
    credential itself (Slack's hooks.slack.com/services/...)."""
    parts = urlsplit(url)
    try:
        password = parts.password
    except ValueError:
        password = None
    if password is not None and not ENV_REF.search(password):
        host = parts.netloc.rpartition("@")[2]
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{host}")
    if not ENV_REF.search(url) and (parts.path.strip("/") or parts.query or parts.fragment):
        parts = parts._replace(path="/***", query="", fragment="")
    return urlunsplit(parts)


def masked_header(value: str) -> str:
    """A header value as GetPolicy shows it: as written when it takes its secret from ${VAR}, else ***."""
    return value if ENV_REF.search(value) else "***"
