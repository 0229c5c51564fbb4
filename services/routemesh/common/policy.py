"""The routing policy: a validated, immutable description of providers, models and routes."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import ValidationError

from routemesh.common.policy_alerts import env_names, masked_header, masked_url
from routemesh.common.policy_schema import (
    AUTO,
    CAPABILITIES,
    TASK_TYPES,
    Model,
    Policy,
    Route,
    Rule,
    RuleCondition,
)

__all__ = [
    "AUTO", "CAPABILITIES", "TASK_TYPES", "Model", "Policy", "PolicyError", "PolicyVersion", "Route", "Rule",
    "RuleCondition", "canonical_json", "digest", "expand_env", "load_default_policy_text", "parse_policy",
    "policy_from_json", "public_json",
]
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# A policy is a few KB (the default about 7 KB); a document past this is a mistake or an attack, refused
# before the YAML parser reads it.
MAX_POLICY_CHARS = 1 << 20


class PolicyError(ValueError):
    """A policy document is not valid; `violations` lists (field path, what is wrong)."""

    def __init__(self, violations: list[tuple[str, str]]):
        self.violations = violations
        super().__init__("invalid policy: " + "; ".join(f"{f}: {m}" if f else m for f, m in violations))


# Which environment variables a policy's ${VAR} may read, as the operator sets it: comma-separated names,
# NAME* for every name with that prefix. A policy must not be a way to read the control plane's secrets, so
# by default only the simulated provider's address and a namespace kept for policies are readable.
ENV_ALLOW_VAR = "ROUTEMESH_POLICY_ENV_ALLOW"
DEFAULT_ENV_ALLOW = ("ROUTEMESH_SIM_URL", "ROUTEMESH_POLICY_*")
# Hosts a provider's base_url may name, as the operator sets it: comma-separated, *.example.com for every
# subdomain; unset, any host.
PROVIDER_HOSTS_VAR = "ROUTEMESH_PROVIDER_HOSTS"


def _listed(env: Mapping[str, str], name: str) -> tuple[str, ...] | None:
    value = env.get(name, "").strip()
    return tuple(item.strip() for item in value.split(",") if item.strip()) if value else None


def env_allowed(name: str, allow: tuple[str, ...]) -> bool:
    """Whether ${name} may be expanded under the allow-list `allow` (names, or prefixes ending in *)."""
    return any(name.startswith(item[:-1]) if item.endswith("*") else name == item for item in allow)


def expand_env(value: str, environ: Mapping[str, str] | None = None) -> str:
    """Expand ${VAR} and ${VAR:-default} references (used for provider base URLs only, never for keys).

    Only variables the operator allows (ROUTEMESH_POLICY_ENV_ALLOW, default DEFAULT_ENV_ALLOW) are read; an
    error names the variable, never a value.
    """
    env = os.environ if environ is None else environ
    allow = _listed(env, ENV_ALLOW_VAR) or DEFAULT_ENV_ALLOW

    def sub(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if not env_allowed(name, allow):
            raise PolicyError([("", f"environment variable {name} may not be read by a policy; the operator "
                                    f"allows {', '.join(allow)} ({ENV_ALLOW_VAR})")])
        if name in env and env[name] != "":
            return env[name]
        if default is not None:
            return default
        raise PolicyError([("", f"environment variable {name} is not set and has no default")])

    return _ENV_REF.sub(sub, value)


def _host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    host = host.lower()
    return any(host.endswith(item[1:].lower()) if item.startswith("*.") else host == item.lower() for item in allowed)


def _provider_host_problems(policy: Policy, env: Mapping[str, str]) -> list[tuple[str, str]]:
    allowed = _listed(env, PROVIDER_HOSTS_VAR)
    if allowed is None:
        return []
    problems = []
    for name, provider in policy.providers.items():
        host = urlsplit(provider.base_url).hostname or ""
        if not _host_allowed(host, allowed):
            problems.append((f"providers.{name}.base_url", f"host {host!r} is not one the operator allows "
                                                           f"({', '.join(allowed)}; {PROVIDER_HOSTS_VAR})"))
    return problems


class _AnchorOrAlias(Exception):
    """Raised by the policy loader at the first anchor or alias; carries where it is and what it is."""

    def __init__(self, what: str, mark: yaml.Mark | None):
        super().__init__(what)
        self.what = what
        self.mark = mark


# libyaml's parser when PyYAML was built with it: about 10x faster than the pure-Python one (default policy:
# 1.7 ms instead of 16 ms). Composer goes ahead of CParser so that its compose_node below is the one used.
_BaseLoader: type = yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader
_LOADER_BASES: tuple[type, ...] = (yaml.composer.Composer, _BaseLoader) if yaml.__with_libyaml__ else (_BaseLoader,)


class _PolicyLoader(*_LOADER_BASES):
    """yaml.safe_load's loader without anchors and aliases.

    An alias makes the constructor reuse a node, so nested aliases grow the document exponentially (a 105 KB
    alias bomb became 29 MB of Python objects). A policy has no need of them: any anchor or alias is refused
    as the composer meets it, before anything is expanded. The composer is PyYAML's Python one (placed ahead
    of CParser's in the MRO) reading libyaml's events, so the check runs per node while scanning and parsing
    stay in C; everything else is SafeLoader's (same tags, same types).
    """

    def __init__(self, stream: str):
        _BaseLoader.__init__(self, stream)
        self.anchors: dict = {}

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise _AnchorOrAlias(f"alias *{event.anchor}", event.start_mark)
        if getattr(event, "anchor", None) is not None:
            raise _AnchorOrAlias(f"anchor &{event.anchor}", event.start_mark)
        return super().compose_node(parent, index)


def _load_yaml(text: str) -> Any:
    """Parse a policy document as yaml.safe_load would, refusing a huge document and anchors or aliases."""
    if len(text) > MAX_POLICY_CHARS:
        raise PolicyError([("", f"the policy is {len(text):,} characters; the limit is {MAX_POLICY_CHARS:,}")])
    loader = _PolicyLoader(text)
    try:
        return loader.get_single_data()
    except _AnchorOrAlias as exc:
        where = f" (line {exc.mark.line + 1}, column {exc.mark.column + 1})" if exc.mark else ""
        raise PolicyError([("", f"YAML anchors and aliases are not allowed in a policy: {exc.what}{where}")]) \
            from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise PolicyError([("", f"not valid YAML: {where}{getattr(exc, 'problem', exc)}")]) from None
    except RecursionError:
        # The composer recurses per level: "[[[[..." some 400 deep exhausts Python's stack before libyaml's own
        # limit (1000 levels) is reached.
        raise PolicyError([("", "not valid YAML: nested too deeply")]) from None
    finally:
        loader.dispose()


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


def parse_policy(text: str, environ: dict[str, str] | None = None,
                 templates: dict[str, str] | None = None) -> Policy:
    """Parse and validate a YAML (or JSON) policy document; raise PolicyError naming every bad field.

    `templates`, when given, receives each provider's base_url as written where ${VAR} expansion changed it.
    """
    raw = _load_yaml(text)
    if not isinstance(raw, dict):
        raise PolicyError([("", "the policy must be a mapping with providers, models and routes")])
    env_problems: list[tuple[str, str]] = []
    expanded: set[str] = set()
    providers = raw.get("providers")
    if isinstance(providers, dict):
        for name, prov in providers.items():
            if isinstance(prov, dict) and isinstance(prov.get("base_url"), str):
                try:
                    value = expand_env(prov["base_url"], environ)
                except PolicyError as exc:
                    env_problems.extend((f"providers.{name}.base_url", m) for _, m in exc.violations)
                    continue
                if value != prov["base_url"]:
                    expanded.add(f"providers.{name}.base_url")
                    if templates is not None:
                        templates[str(name)] = prov["base_url"]
                prov["base_url"] = value
    try:
        policy = Policy.model_validate(raw)
    except ValidationError as exc:
        # An unexpanded ${VAR} also fails the URL check; report the missing variable once, not twice. An
        # expanded URL that fails is not quoted: it came from the environment, and errors never carry it.
        env_fields = {f for f, _ in env_problems}
        found = [(f, "the URL its ${VAR} references expand to is not an http:// or https:// URL")
                 if f in expanded else (f, m) for f, m in _violations(exc) if f not in env_fields]
        raise PolicyError(env_problems + found) from None
    if env_problems:
        raise PolicyError(env_problems)
    env = os.environ if environ is None else environ
    problems = _provider_host_problems(policy, env) + _webhook_env_problems(policy, env)
    if problems:
        raise PolicyError(problems)
    return policy


def _webhook_env_problems(policy: Policy, env: Mapping[str, str]) -> list[tuple[str, str]]:
    """Webhook ${VAR}s are expanded by telemetry when it sends; control refuses names the operator does not allow."""
    allow = _listed(env, ENV_ALLOW_VAR) or DEFAULT_ENV_ALLOW
    return [(f"alerts.webhooks.{hook.name}", f"environment variable {name} may not be read by a policy; the "
                                              f"operator allows {', '.join(allow)} ({ENV_ALLOW_VAR})")
            for hook in policy.alerts.webhooks for name in env_names(hook) if not env_allowed(name, allow)]


def public_json(policy: Policy, templates: Mapping[str, str]) -> str:
    """The policy as an operator may read it back (GetPolicy): canonical JSON where each base_url a ${VAR}
    expanded shows as written, and a password in any base_url as ***. Only the data plane gets the rest.
    Webhooks keep their ${VAR}s (telemetry expands them); literal secrets in them are hidden (masked_url)."""
    document = policy.model_dump(mode="json")
    for name, provider in (document.get("providers") or {}).items():
        url = templates.get(name, provider.get("base_url", ""))
        parts = urlsplit(url) if url and name not in templates else None
        if parts is not None and parts.password is not None:
            host = parts.netloc.rpartition("@")[2]
            url = urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
        provider["base_url"] = url
    for hook in (document.get("alerts") or {}).get("webhooks") or ():
        hook["url"] = masked_url(hook["url"])
        hook["headers"] = {name: masked_header(value) for name, value in hook["headers"].items()}
    return json.dumps(document, sort_keys=True, separators=(",", ":"))


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
