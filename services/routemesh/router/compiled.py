"""A policy flattened once per version into plain slotted objects, so a decision reads no pydantic fields."""

from __future__ import annotations

from routemesh.common.policy_schema import Model, Policy


class CompiledModel:
    """The fields of one model that decisions read, with prices per token."""

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
        return self.quality.get(task_type, self.quality_default)


class CompiledPolicy:
    """Per policy: compiled models, the health gate and tenant allow-lists."""

    __slots__ = ("models", "max_error_rate", "min_samples", "allowed")

    def __init__(self, policy: Policy):
        self.models = {name: CompiledModel(name, model) for name, model in policy.models.items()}
        self.max_error_rate = policy.health.max_error_rate
        self.min_samples = policy.health.min_samples
        self.allowed = {name: frozenset(t.allowed_models) for name, t in policy.tenants.items() if t.allowed_models}


_CACHE: dict[int, tuple[Policy, CompiledPolicy]] = {}


def compiled(policy: Policy) -> CompiledPolicy:
    """The compiled form of `policy` (kept for the few most recent policies)."""
    hit = _CACHE.get(id(policy))
    if hit is not None and hit[0] is policy:
        return hit[1]
    result = CompiledPolicy(policy)
    if len(_CACHE) >= 8:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[id(policy)] = (policy, result)
    return result
