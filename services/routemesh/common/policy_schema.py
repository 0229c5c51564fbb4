"""The policy schema: providers, models, routes, strategies, tenants and budgets (pydantic, strict)."""

from __future__ import annotations

import re
from typing import Literal

import re2
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from routemesh.common.policy_alerts import Alerts, reference_problems

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
_SHA256 = r"^[0-9a-f]{64}$"


class _Strict(BaseModel):
    # NaN passes every range check (each comparison is False) and inf passes any one-sided bound; neither is a
    # price, a weight or a timeout. Applies to every float of every model, in dicts and unions too.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _rule_regex_options() -> re2.Options:
    options = re2.Options()
    options.case_sensitive = False
    # A rule only asks whether the text matches: without capture groups RE2 answers with its DFA alone
    # (`(.*a){20}` over 1 MB: 5 ms instead of 450 ms when the groups' spans must be found).
    options.never_capture = True
    # A bad pattern is reported as a PolicyError; RE2 need not also log it to stderr.
    options.log_errors = False
    return options


def compile_rule_regex(pattern: str) -> re2._Regexp:
    """A rule's regular expression on RE2, case-insensitive: time linear in the text, whatever the pattern.

    Python's `re` backtracks: `^(a+)+$` took seconds on 26 characters of caller text, inside the router's event
    loop. RE2 has no backreferences or lookarounds; such a pattern raises re2.error, with RE2's reason as bytes
    in args[0]. The policy is validated and the router matches with these same options, so a pattern that is
    accepted compiles in the router too (including within RE2's default 8 MiB program memory).
    """
    return re2.compile(pattern, _rule_regex_options())


class Timeouts(_Strict):
    """Per-provider HTTP timeouts in seconds."""

    connect_s: float = Field(2.0, gt=0, le=60)
    first_token_s: float = Field(20.0, gt=0, le=600)
    between_tokens_s: float = Field(20.0, gt=0, le=600)


class Provider(_Strict):
    """An HTTP endpoint speaking one provider API."""

    # Wire protocol: the OpenAI chat-completions family, Anthropic Messages, Google Gemini, Azure OpenAI.
    api: Literal["openai", "anthropic", "gemini", "azure_openai"] = "openai"
    api_version: str | None = Field(None, description="Azure OpenAI api-version (default 2024-10-21)")
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


class LatencyPrior(_Strict):
    """What to assume of a model's latency before telemetry has enough fresh samples."""

    ttft_ms: float = Field(500.0, ge=0)
    tpot_ms: float = Field(20.0, ge=0)


def _check_tasks(names: list[str] | tuple[str, ...] | dict[str, object]) -> None:
    unknown = [t for t in names if t not in TASK_TYPES and t != "default"]
    if unknown:
        raise ValueError(f"unknown task type(s) {unknown}; known: {list(TASK_TYPES)} and 'default'")


class Model(_Strict):
    """One model deployment a route can choose."""

    provider: str
    upstream_model: str = Field(min_length=1)
    pricing: Pricing
    context_window: int = Field(gt=0, le=10_000_000)
    max_output_tokens: int = Field(4096, gt=0, le=1_000_000)
    capabilities: tuple[Literal["streaming", "tools", "json", "vision"], ...] = ("streaming",)
    limits: Limits = Limits()
    # Quality 0..1: one number, or per task type with an optional "default".
    quality: float | dict[str, float] = 0.5
    data_classes: tuple[str, ...] = Field((), description="data classes (e.g. confidential) it may receive")
    weight: float = Field(1.0, ge=0, description="share for weighted_random")
    latency_prior: LatencyPrior = LatencyPrior()
    enabled: bool = True
    description: str = ""
    # The quality predictor's output this model's predicted success follows; unset: the output named like the
    # model, if the predictor has one. A model without a prediction keeps its static `quality`.
    predicted_as: str | None = Field(None, min_length=1)

    @field_validator("quality")
    @classmethod
    def _quality_range(cls, value: float | dict[str, float]) -> float | dict[str, float]:
        values = value.values() if isinstance(value, dict) else [value]
        if any(not 0 <= v <= 1 for v in values):
            raise ValueError("quality scores must be between 0 and 1")
        if isinstance(value, dict):
            _check_tasks(value)
        return value

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

    keywords: tuple[str, ...] = Field((), description="any of these words in the last user message")
    regex: str | None = Field(None, description="a regular expression searched in the last user message")

    @field_validator("task_types")
    @classmethod
    def _known_tasks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [t for t in value if t not in TASK_TYPES]
        if unknown:
            raise ValueError(f"unknown task type(s) {unknown}; known: {list(TASK_TYPES)}")
        return value

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                compile_rule_regex(value)
            except re2.error as exc:
                reason = exc.args[0] if exc.args else "rejected"
                if isinstance(reason, bytes):
                    reason = reason.decode("utf-8", "replace")
                raise ValueError(f"not a regular expression RE2 accepts: {reason} (rules match in linear time "
                                 "on RE2: no backreferences or lookarounds; \\z, not \\Z)") from None
        return value


STRATEGIES = ("hybrid", "cost", "latency", "quality", "quality_target", "ordered", "weighted_random",
              "round_robin", "least_in_flight", "least_recent")
Strategy = Literal["hybrid", "cost", "latency", "quality", "quality_target", "ordered", "weighted_random",
                   "round_robin", "least_in_flight", "least_recent"]


class Rule(_Strict):
    """When the condition matches: choose among `models` (or exactly `model`), with its own strategy if given."""

    name: str = Field(pattern=_NAME)
    when: RuleCondition = RuleCondition()
    models: tuple[str, ...] = ()
    model: str | None = None
    strategy: Strategy | None = None

    @model_validator(mode="after")
    def _selects_something(self) -> Rule:
        if self.model and self.models:
            raise ValueError("give either model or models, not both")
        if not (self.model or self.models or self.strategy):
            raise ValueError("a rule must select models, a model, or a strategy")
        return self


class Weights(_Strict):
    """Hybrid scoring weights; they need not sum to 1."""

    cost: float = Field(0.4, ge=0)
    latency: float = Field(0.3, ge=0)
    quality: float = Field(0.3, ge=0)
    load: float = Field(0.0, ge=0)


class LatencySettings(_Strict):
    """How latency routing reads telemetry."""

    percentile: Literal["p50", "p90", "p99"] = "p50"
    tolerance: float = Field(0.10, ge=0, le=10, description="models within this fraction of the best tie")
    freshness_s: float = Field(60.0, gt=0, description="older telemetry falls back to the model's prior")
    min_samples: int = Field(5, ge=1)
    explore_rate: float = Field(0.0, ge=0, le=1, description="share of requests sent to an under-sampled model")


class QualitySettings(_Strict):
    """Quality routing: the best, or the cheapest within `threshold` of the best."""

    threshold: float = Field(0.0, ge=0, le=1)


class Variant(_Strict):
    """One arm of an experiment; unset fields inherit the route's."""

    name: str = Field(pattern=_NAME)
    weight: float = Field(gt=0)
    models: tuple[str, ...] = ()
    strategy: Strategy | None = None
    weights: Weights | None = None


class Experiment(_Strict):
    """Split a route's traffic between variants by weight, sticky by a metadata key."""

    name: str = Field(pattern=_NAME)
    sticky_key: str = "user"
    variants: tuple[Variant, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> Experiment:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be unique, got {names}")
        return self


class Reliability(_Strict):
    """How the executor serves a route's plan: retries, hedging, continuation after a cut stream."""

    max_tries_per_model: int = Field(2, ge=1, le=10, description="tries of the last candidate left")
    backoff_initial_ms: int = Field(100, ge=0)
    backoff_max_ms: int = Field(2000, ge=0)
    hedge_after_ms: int = Field(0, ge=0, description="0 = no hedging")
    continue_on_truncation: bool = False


class Learning(_Strict):
    """Online correction of a model's quality for a task by feedback and automatic signals (kept by telemetry).

    The model's quality for the task (the static table's, or the quality predictor's success for the prompt) is
    the prior, counting as `prior_weight` signals; each signal is a score in [0, 1]. The corrected quality is
    the posterior mean; on an `exploration` share of requests it is a sample of the posterior (Thompson
    sampling), so a model the feedback doubts still gets a bounded share of chances to prove otherwise.
    """

    enabled: bool = True
    prior_weight: float = Field(20.0, ge=1, le=100_000)
    exploration: float = Field(0.0, ge=0, le=0.5)


class StoreText(_Strict):
    """Keep the conversation's text in the outcome ledger (for retraining), for `retention_days`.

    Only requests with no data class, or one of `data_classes`, are kept: a confidential request is not, unless
    its class is listed here. The text goes to the ledger's ledger_texts table, never to spans or logs.
    """

    retention_days: int = Field(30, ge=1, le=3650)
    data_classes: tuple[str, ...] = ()


class Route(_Strict):
    """A named pool of models: filters, rules, a strategy, fallbacks, and optionally an experiment."""

    description: str = ""
    strategy: Strategy = "hybrid"
    models: tuple[str, ...] = Field(min_length=1)
    rules: tuple[Rule, ...] = ()
    fallbacks: tuple[str, ...] = ()
    weights: Weights = Weights()
    latency: LatencySettings = LatencySettings()
    quality: QualitySettings = QualitySettings()
    # Strategy quality_target: the cheapest model expected to keep this share of the best candidate's quality
    # (0.95 = 95 %), judged by the quality predictor's thresholds calibrated for that share.
    quality_target: float = Field(0.95, gt=0, le=1)
    sticky: bool = Field(False, description="keep a conversation on the model chosen for its first request")
    learning: Learning = Learning()
    # Opt-in: keep the text of this route's requests in the ledger (default: only a hash of it).
    store_text: StoreText | None = None
    reliability: Reliability = Reliability()
    experiment: Experiment | None = None
    # Expected output tokens per task type for cost estimates (capped by max_tokens); "default" for the rest.
    expected_output_tokens: dict[str, int] = {"default": 256}

    @field_validator("expected_output_tokens")
    @classmethod
    def _known(cls, value: dict[str, int]) -> dict[str, int]:
        _check_tasks(value)
        if any(v <= 0 for v in value.values()):
            raise ValueError("expected output tokens must be positive")
        return value

    def expected_output(self, task_type: str, max_tokens: int) -> int:
        guess = self.expected_output_tokens.get(task_type, self.expected_output_tokens.get("default", 256))
        return min(guess, max_tokens)


class Tenant(_Strict):
    """What one tenant may use."""

    allowed_models: tuple[str, ...] = Field((), description="empty: every model")
    limits: Limits = Limits()


class Budget(_Strict):
    """Spend cap for a tenant (and optionally one project) per period."""

    name: str = Field(pattern=_NAME)
    tenant: str = Field(min_length=1, description="a tenant name, or * for each tenant separately")
    project: str | None = Field(None, description="a project name, * for each, or unset for all projects")
    period: Literal["day", "month"] = "month"
    limit_usd: float = Field(gt=0)
    soft_limit_fraction: float = Field(0.8, gt=0, le=1, description="past this share, routes go cheapest")


class CircuitSettings(_Strict):
    """Circuit breaker per model deployment: trips on consecutive failures or a failure rate (429s count)."""

    consecutive_failures: int = Field(5, ge=1)
    failure_rate: float = Field(0.5, gt=0, le=1)
    min_samples: int = Field(20, ge=1, description="attempts in the window before the rate can trip")
    window_s: float = Field(30.0, gt=0)
    open_s: float = Field(5.0, gt=0, description="first open period; doubles on each re-open")
    max_open_s: float = Field(60.0, gt=0)
    half_open_probes: int = Field(3, ge=1, description="successful probes in a row that close it")
    probe_fraction: float = Field(0.1, gt=0, le=1, description="share of traffic admitted while half-open")
    ramp_s: float = Field(30.0, ge=0, description="after closing, traffic ramps back over this long")


class HealthGate(_Strict):
    """When telemetry says a model is unhealthy, routes skip it (pinned requests do not)."""

    max_error_rate: float = Field(0.5, ge=0, le=1)
    min_samples: int = Field(10, ge=1)
    circuit: CircuitSettings = CircuitSettings()


class Defaults(_Strict):
    """Values used when a request leaves them out."""

    route: str = AUTO
    max_tokens: int = Field(512, gt=0, le=1_000_000)


class RequestKeys(_Strict):
    """Which request metadata keys carry identity and data class."""

    tenant: str = "tenant"
    project: str = "project"
    user: str = "user"
    conversation: str = "conversation_id"
    data_class: str = "data_class"


class QualityPredictorRef(_Strict):
    """The learned quality predictor the classifier serves and quality_target routing reads."""

    # An absolute file path, or "routemesh:quality/NAME" for an artifact shipped inside routemesh.
    artifact: str = Field(min_length=1)
    # sha256 of the artifact file: a file with other bytes rejects the policy.
    sha256: str = Field(pattern=_SHA256)

    @field_validator("artifact")
    @classmethod
    def _absolute(cls, value: str) -> str:
        # Control, the classifier and the router each read the file: a relative path would mean each one's cwd.
        if not (value.startswith("routemesh:") or value.startswith("/")):
            raise ValueError("must be an absolute path (every service that loads the policy reads it) "
                             "or routemesh:quality/<file> for an artifact shipped with routemesh")
        return value


class Policy(_Strict):
    """The whole routing policy."""

    defaults: Defaults = Defaults()
    health: HealthGate = HealthGate()
    request_keys: RequestKeys = RequestKeys()
    providers: dict[str, Provider] = Field(min_length=1)
    models: dict[str, Model] = Field(min_length=1)
    routes: dict[str, Route] = Field(min_length=1)
    tenants: dict[str, Tenant] = {}
    budgets: tuple[Budget, ...] = ()
    quality_predictor: QualityPredictorRef | None = None
    alerts: Alerts = Alerts()

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
            refs += [(f"rules.{r.name}.model", r.model) for r in route.rules if r.model]
            if route.experiment:
                refs += [(f"experiment.variants.{v.name}.models", m)
                         for v in route.experiment.variants for m in v.models]
            for where, model in refs:
                if model not in self.models:
                    problems.append(f"routes.{rname}.{where}: unknown model {model!r}; defined: {sorted(self.models)}")
        for tname, tenant in self.tenants.items():
            for model in tenant.allowed_models:
                if model not in self.models:
                    problems.append(f"tenants.{tname}.allowed_models: unknown model {model!r}")
        if self.quality_predictor is None:
            problems.extend(f"models.{name}.predicted_as: set, but the policy names no quality_predictor"
                            for name, model in self.models.items() if model.predicted_as)
        names = [b.name for b in self.budgets]
        for name in {n for n in names if names.count(n) > 1}:
            problems.append(f"budgets: the name {name!r} is used twice")
        problems += reference_problems(self.alerts, set(self.models), set(self.routes), set(names))
        if self.defaults.route not in self.routes:
            problems.append(f"defaults.route: unknown route {self.defaults.route!r}; defined: {sorted(self.routes)}")
        if problems:
            raise ValueError("\n".join(problems))
        return self
