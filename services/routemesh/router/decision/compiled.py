"""The policy as the router applies it: compiled once per version into plain slotted objects."""

from __future__ import annotations

from collections.abc import Mapping

from routemesh.common.policy import PolicyVersion
from routemesh.common.policy_schema import Budget, Model, Policy, RequestKeys, Route, Tenant
from routemesh.quality.serving import PolicyQuality, policy_quality


class CompiledModel:
    """The fields of one model that decisions and admission read, with prices per token."""

    __slots__ = ("name", "provider", "enabled", "context_window", "max_output_tokens", "capabilities",
                 "data_classes", "weight", "prior_ttft_ms", "prior_tpot_ms", "rpm", "tpm", "in_price",
                 "out_price", "quality", "quality_default")

    def __init__(self, name: str, model: Model):
        self.name = name
        self.provider = model.provider
        self.enabled = model.enabled
        self.context_window = model.context_window
        self.max_output_tokens = model.max_output_tokens
        self.capabilities = frozenset(model.capabilities)
        self.data_classes = frozenset(model.data_classes)
        self.weight = model.weight
        self.prior_ttft_ms = model.latency_prior.ttft_ms
        self.prior_tpot_ms = model.latency_prior.tpot_ms
        self.rpm = model.limits.rpm
        self.tpm = model.limits.tpm
        self.in_price = model.pricing.input_per_mtok / 1e6
        self.out_price = model.pricing.output_per_mtok / 1e6
        if isinstance(model.quality, dict):
            self.quality = dict(model.quality)
            self.quality_default = model.quality.get("default", 0.5)
        else:
            self.quality = {}
            self.quality_default = model.quality

    def estimated_cost(self, input_tokens: int, output_tokens: int) -> float:
        return input_tokens * self.in_price + output_tokens * self.out_price

    def quality_for(self, task_type: str) -> float:
        """The quality score for a task type (falls back to "default", then 0.5)."""
        return self.quality.get(task_type, self.quality_default)


class RoutingPolicy:
    """One policy version as the router's stages read it: the only form the planner and admission see.

    Routes, budgets and request keys are the validated (immutable) policy objects; models are compiled
    for the per-candidate loop; tenant allow-lists are sets; the quality predictor is loaded.
    """

    __slots__ = ("version", "digest", "models", "routes", "default_route", "default_max_tokens", "request_keys",
                 "providers", "tenants", "allowed", "budgets", "max_error_rate", "min_samples", "quality")

    def __init__(self, policy: Policy, version: int = 0, digest: str = ""):
        self.version = version
        self.digest = digest
        self.models: Mapping[str, CompiledModel] = {name: CompiledModel(name, m) for name, m in policy.models.items()}
        self.routes: Mapping[str, Route] = dict(policy.routes)
        self.default_route = policy.defaults.route
        self.default_max_tokens = policy.defaults.max_tokens
        self.request_keys: RequestKeys = policy.request_keys
        self.providers = frozenset(policy.providers)
        self.tenants: Mapping[str, Tenant] = dict(policy.tenants)
        self.allowed = {name: frozenset(t.allowed_models) for name, t in policy.tenants.items() if t.allowed_models}
        self.budgets: tuple[Budget, ...] = policy.budgets
        self.max_error_rate = policy.health.max_error_rate
        self.min_samples = policy.health.min_samples
        # The quality predictor the policy names (loaded once per artifact, shared with other versions): its
        # calibrated thresholds serve quality_target routing, and it predicts when the router classifies itself.
        # PolicyError when the artifact is missing, corrupt or of another digest: the version is rejected.
        self.quality: PolicyQuality | None = policy_quality(policy)

    @classmethod
    def compile(cls, version: PolicyVersion) -> RoutingPolicy:
        """The compiled form of a pushed version (PolicyHolder calls this once per version)."""
        return cls(version.policy, version.version, version.digest)
