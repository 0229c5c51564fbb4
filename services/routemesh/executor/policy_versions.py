"""The policy versions an executor keeps, and model names resolved in the version a plan was made with."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from routemesh.common.errors import NotReady, PolicySkew
from routemesh.common.outcomes import AttemptOutcome
from routemesh.common.policy import PolicyVersion
from routemesh.common.policy_watch import PolicyHolder
from routemesh.executor.attempt import AttemptRecord
from routemesh.executor.openai_adapter import ProviderTarget

log = logging.getLogger(__name__)
# Enough for a plan to outlive several quick rollouts while it waits in the router's queues.
POLICY_VERSIONS_KEPT = 8


class PolicyVersions:
    """Finds the version a plan names among those the holder keeps; says which it keeps when it has not got it."""

    def __init__(self, holder: PolicyHolder[PolicyVersion]):
        self.holder = holder

    def for_plan(self, version: int, digest: str) -> PolicyVersion:
        """The version a plan was made with; version 0 (a caller that does not say) means the current one."""
        if not version:
            current = self.holder.current
            if current is None:
                raise NotReady("executor has no policy yet")
            return current
        found = self.holder.get(version, digest)
        if found is None:
            kept = self.holder.held()
            held = ", ".join(f"{v} ({d[:12]})" for v, d in kept) or "none yet"
            message = (f"policy version {version} ({digest[:12] or 'no digest'}) is not held by this executor; "
                       f"it holds {held}")
            # Expected for a moment in each rollout (the router retries); a steady stream of these is not.
            log.info("POLICY_SKEW: %s", message)
            raise PolicySkew(
                message,
                metadata={"policy_version": str(version), "policy_digest": digest,
                          "held_versions": ",".join(str(v) for v, _ in kept)})
        return found


def resolve(policy: PolicyVersion, name: str,
            environ: Mapping[str, str]) -> tuple[ProviderTarget | None, AttemptRecord]:
    """The provider target of a model name in `policy`, or None with a config_error record saying why."""
    model = policy.policy.models.get(name)
    if model is None:
        return None, AttemptRecord(model=name, provider="", outcome=AttemptOutcome.CONFIG_ERROR,
                                   error=f"model {name!r} is not in policy version {policy.version}")
    provider = policy.policy.providers[model.provider]
    record = AttemptRecord(model=name, provider=model.provider)
    key = None
    if provider.api_key_env:
        key = environ.get(provider.api_key_env)
        if not key:
            record.outcome = AttemptOutcome.CONFIG_ERROR
            record.error = f"environment variable {provider.api_key_env} (API key of {model.provider}) is not set"
            return None, record
    return ProviderTarget(
        provider=model.provider, model=name, upstream_model=model.upstream_model, base_url=provider.base_url,
        api_key=key, connect_timeout_s=provider.timeouts.connect_s,
        first_token_timeout_s=provider.timeouts.first_token_s,
        between_tokens_timeout_s=provider.timeouts.between_tokens_s, api=provider.api,
        api_version=provider.api_version,
    ), record


def cost_in(policy: PolicyVersion, model: str, input_tokens: int, output_tokens: int) -> float:
    """USD for the tokens at the model's price in `policy` (0 for a model it does not name)."""
    spec = policy.policy.models.get(model)
    return spec.estimated_cost(input_tokens, output_tokens) if spec else 0.0
