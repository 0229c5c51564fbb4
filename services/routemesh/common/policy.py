"""The routing policy: a validated, immutable description of providers, models and routes."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

TASK_TYPES = (
    "chat",
    "code",
    "math",
    "summarization",
    "translation",
    "extraction",
    "creative_writing",
    "question_answering",
)
CAPABILITIES = ("streaming", "tools", "json", "vision")
AUTO = "auto"
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$"
_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Timeouts(_Strict):
    """Per-provider HTTP timeouts in seconds."""

    connect_s: float = Field(2.0, gt=0, le=60)
    first_token_s: float = Field(20.0, gt=0, le=600)
    between_tokens_s: float = Field(20.0, gt=0, le=600)


class Provider(_Strict):
    """An HTTP endpoint speaking one provider API."""

    api: Literal["openai"] = "openai"
    base_url: str
    api_key_env: str | None = Field(None, pattern=_ENV_NAME)
    timeouts: Timeouts = Timeouts()

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"must be an http:// or https:// URL, got {value!r}")
        return value.rstrip("/")


class Pricing(_Strict):
    """Price in USD per million tokens."""

    input_per_mtok: float = Field(ge=0, le=10_000)
    output_per_mtok: float = Field(ge=0, le=10_000)


class Limits(_Strict):
    """Requests and tokens per minute the deployment allows; 0 means unlimited."""

    rpm: int = Field(0, ge=0)
    tpm: int = Field(0, ge=0)


class Model(_Strict):
    """One model deployment a route can choose."""

    provider: str
    upstream_model: str = Field(min_length=1)
    pricing: Pricing
    context_window: int = Field(gt=0, le=10_000_000)
    max_output_tokens: int = Field(4096, gt=0, le=1_000_000)
    capabilities: tuple[Literal["streaming", "tools", "json", "vision"], ...] = ("streaming",)
    limits: Limits = Limits()
    quality: float = Field(0.5, ge=0, le=1, description="prior quality, 0..1")
    enabled: bool = True
    description: str = ""

    def estimated_cost(self, input_tokens: int, output_tokens: int) -> float:
        """USD for the given token counts."""
        return (input_tokens * self.pricing.input_per_mtok + output_tokens * self.pricing.output_per_mtok) / 1e6


class RuleCondition(_Strict):
    """All given fields must match (logical AND); an empty condition always matches."""

    task_types: tuple[str, ...] = ()
    min_input_tokens: int | None = Field(None, ge=0)
    max_input_tokens: int | None = Field(None, ge=0)
    min_complexity: float | None = Field(None, ge=0, le=1)
    has_code: bool | None = None
    languages: tuple[str, ...] = ()
    metadata: dict[str, str] = {}

    @field_validator("task_types")
    @classmethod
    def _known_tasks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [t for t in value if t not in TASK_TYPES]
        if unknown:
            raise ValueError(f"unknown task type(s) {unknown}; known: {list(TASK_TYPES)}")
        return value


Strategy = Literal["cheapest", "ordered"]


class Rule(_Strict):
    """When the condition matches, the route chooses among these models (with its own strategy, if given)."""

    name: str = Field(pattern=_NAME)
    when: RuleCondition = RuleCondition()
    models: tuple[str, ...] = Field(min_length=1)
    strategy: Strategy | None = None


class Route(_Strict):
    """A named pool of models with rules and fallbacks."""

    description: str = ""
    strategy: Strategy = "cheapest"
    models: tuple[str, ...] = Field(min_length=1)
    rules: tuple[Rule, ...] = ()
    fallbacks: tuple[str, ...] = ()


class HealthGate(_Strict):
    """When telemetry says a model is unhealthy, routes skip it (pinned requests do not)."""

    max_error_rate: float = Field(0.5, ge=0, le=1)
    min_samples: int = Field(10, ge=1)


class Defaults(_Strict):
    """Values used when a request leaves them out."""

    route: str = AUTO
    max_tokens: int = Field(512, gt=0, le=1_000_000)


class Policy(_Strict):
    """The whole routing policy."""

    defaults: Defaults = Defaults()
    health: HealthGate = HealthGate()
    providers: dict[str, Provider] = Field(min_length=1)
    models: dict[str, Model] = Field(min_length=1)
    routes: dict[str, Route] = Field(min_length=1)

    @model_validator(mode="after")
    def _references(self) -> Policy:
        # One problem per line as "field.path: message"; _violations splits them back into (field, message).
        problems: list[str] = []
        sections = {"providers": self.providers, "models": self.models, "routes": self.routes}
        for section, names in sections.items():
            for name in names:
                if not re.match(_NAME, name):
                    problems.append(f"{section}: name {name!r} must match {_NAME}")
        for name, model in self.models.items():
            if model.provider not in self.providers:
                problems.append(
                    f"models.{name}.provider: unknown provider {model.provider!r}; "
                    f"defined: {sorted(self.providers)}"
                )
        for name in set(self.models) & set(self.routes):
            problems.append(f"models.{name}: a model and a route share the name {name!r}")
        for rname, route in self.routes.items():
            refs = [("models", m) for m in route.models] + [("fallbacks", m) for m in route.fallbacks]
            refs += [(f"rules.{r.name}.models", m) for r in route.rules for m in r.models]
            for where, model in refs:
                if model not in self.models:
                    problems.append(f"routes.{rname}.{where}: unknown model {model!r}; defined: {sorted(self.models)}")
        if self.defaults.route not in self.routes:
            problems.append(f"defaults.route: unknown route {self.defaults.route!r}; defined: {sorted(self.routes)}")
        if problems:
            raise ValueError("\n".join(problems))
        return self


class PolicyError(ValueError):
    """A policy document is not valid; `violations` lists (field path, what is wrong)."""

    def __init__(self, violations: list[tuple[str, str]]):
        self.violations = violations
        super().__init__("invalid policy: " + "; ".join(f"{f}: {m}" if f else m for f, m in violations))


def expand_env(value: str, environ: dict[str, str] | None = None) -> str:
    """Expand ${VAR} and ${VAR:-default} references (used for provider base URLs only, never for keys)."""
    env = os.environ if environ is None else environ

    def sub(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env and env[name] != "":
            return env[name]
        if default is not None:
            return default
        raise PolicyError([("", f"environment variable {name} is not set and has no default")])

    return _ENV_REF.sub(sub, value)


def _violations(err: ValidationError) -> list[tuple[str, str]]:
    out = []
    for item in err.errors():
        loc = ".".join(str(p) for p in item["loc"])
        msg = item["msg"].removeprefix("Value error, ")
        if not loc:
            for part in msg.split("\n"):
                field, sep, text = part.partition(": ")
                out.append((field, text) if sep and " " not in field else ("", part))
        else:
            out.append((loc, msg))
    return out


def parse_policy(text: str, environ: dict[str, str] | None = None) -> Policy:
    """Parse and validate a YAML (or JSON) policy document; raise PolicyError naming every bad field."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise PolicyError([("", f"not valid YAML: {where}{getattr(exc, 'problem', exc)}")]) from None
    if not isinstance(raw, dict):
        raise PolicyError([("", "the policy must be a mapping with providers, models and routes")])
    env_problems: list[tuple[str, str]] = []
    providers = raw.get("providers")
    if isinstance(providers, dict):
        for name, prov in providers.items():
            if isinstance(prov, dict) and isinstance(prov.get("base_url"), str):
                try:
                    prov["base_url"] = expand_env(prov["base_url"], environ)
                except PolicyError as exc:
                    env_problems.extend((f"providers.{name}.base_url", m) for _, m in exc.violations)
    try:
        policy = Policy.model_validate(raw)
    except ValidationError as exc:
        # An unexpanded ${VAR} also fails the URL check; report the missing variable once, not twice.
        env_fields = {f for f, _ in env_problems}
        raise PolicyError(env_problems + [v for v in _violations(exc) if v[0] not in env_fields]) from None
    if env_problems:
        raise PolicyError(env_problems)
    return policy


def policy_from_json(text: str) -> Policy:
    """Load a policy from the canonical JSON the control plane pushes."""
    try:
        return Policy.model_validate_json(text)
    except ValidationError as exc:
        raise PolicyError(_violations(exc)) from None


def canonical_json(policy: Policy) -> str:
    """Stable JSON form of a policy: what is versioned, digested and pushed."""
    return json.dumps(policy.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


def digest(policy_json: str) -> str:
    """SHA-256 hex of the canonical JSON."""
    return hashlib.sha256(policy_json.encode()).hexdigest()


@dataclass(frozen=True)
class PolicyVersion:
    """A validated policy with its version metadata, as the data plane holds it."""

    policy: Policy
    version: int
    digest: str
    source: str = ""


def load_default_policy_text() -> str:
    """The policy shipped with routemesh: simulated models only, no API keys needed."""
    from importlib import resources

    return resources.files("routemesh").joinpath("policies/default.yaml").read_text()


def as_dict(policy: Policy) -> dict[str, Any]:
    """Plain dict form (for printing)."""
    return policy.model_dump(mode="json")
