"""Simulated model profiles: latency, throughput and fault rates, with validated runtime changes."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# Fault names, both for the per-request `x-sim-fault` header and for a profile's `fault` field.
FAULTS = frozenset({"500", "503", "429", "cut", "stall", "hang", "slow-first-token", "malformed", "no-done"})


@dataclass(frozen=True)
class ModelProfile:
    """How one simulated model behaves; every delay is multiplied by the server's time scale."""

    name: str
    ttft_ms: float = 150.0
    tokens_per_s: float = 100.0
    jitter: float = 0.2  # each delay is scaled by a uniform factor in [1 - jitter, 1 + jitter]
    error_rate: float = 0.0  # probability of HTTP 500
    rate_limit_rate: float = 0.0  # probability of HTTP 429 with Retry-After
    retry_after_s: float = 1.0
    outage: bool = False  # every request answers 503
    stall_rate: float = 0.0  # probability of pausing mid-stream for stall_s
    stall_s: float = 30.0  # scaled for random stalls; a stall injected by header always lasts stall_s
    cut_rate: float = 0.0  # probability of closing the connection mid-stream
    min_tokens: int = 20
    max_tokens: int = 120
    # One of FAULTS applied to each request with probability fault_rate, as if sent in x-sim-fault
    # (routers do not forward that header, so tests reach the sim through a profile instead).
    fault: str = ""
    fault_rate: float = 1.0

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


DEFAULT_PROFILES: tuple[ModelProfile, ...] = (
    ModelProfile("sim-fast", ttft_ms=60, tokens_per_s=200, min_tokens=15, max_tokens=80),
    ModelProfile("sim-balanced", ttft_ms=150, tokens_per_s=100, min_tokens=20, max_tokens=120),
    ModelProfile("sim-strong", ttft_ms=400, tokens_per_s=50, min_tokens=30, max_tokens=160),
    ModelProfile("sim-long", ttft_ms=250, tokens_per_s=80, min_tokens=40, max_tokens=200),
    ModelProfile(
        "sim-flaky",
        ttft_ms=100,
        tokens_per_s=150,
        error_rate=0.25,
        rate_limit_rate=0.1,
        cut_rate=0.1,
        min_tokens=15,
        max_tokens=80,
    ),
)

_PROBABILITIES = {"jitter", "error_rate", "rate_limit_rate", "stall_rate", "cut_rate", "fault_rate"}
_POSITIVE = {"tokens_per_s"}
_FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(ModelProfile)}


class ProfileError(ValueError):
    """A profile change names an unknown field or gives a value of the wrong type or range."""


def default_profiles() -> dict[str, ModelProfile]:
    return {p.name: p for p in DEFAULT_PROFILES}


def _checked_value(field: str, value: Any) -> Any:
    kind = _FIELD_TYPES[field]
    # bool is an int subclass, so it is rejected explicitly for numeric fields.
    if kind == "bool":
        if not isinstance(value, bool):
            raise ProfileError(f"{field} must be a boolean, got {type(value).__name__}")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ProfileError(f"{field} must be an integer, got {type(value).__name__}")
        if value < 1:
            raise ProfileError(f"{field} must be at least 1, got {value}")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ProfileError(f"{field} must be a number, got {type(value).__name__}")
        value = float(value)
        if value != value or value < 0:
            raise ProfileError(f"{field} must be a non-negative number, got {value}")
        if field in _PROBABILITIES and value > 1:
            raise ProfileError(f"{field} must be between 0 and 1, got {value}")
        if field in _POSITIVE and value == 0:
            raise ProfileError(f"{field} must be greater than 0")
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise ProfileError(f"{field} must be a string, got {type(value).__name__}")
        value = value.strip().lower()
        if value and value not in FAULTS:
            raise ProfileError(f"{field} must be empty or one of {', '.join(sorted(FAULTS))}, got {value!r}")
        return value
    raise ProfileError(f"{field} cannot be changed")


def apply_changes(profile: ModelProfile, changes: Any) -> ModelProfile:
    """Return `profile` with `changes` (a mapping of field name to value) applied, or raise ProfileError."""
    if not isinstance(changes, dict):
        raise ProfileError("profile changes must be a JSON object of field names to values")
    updates: dict[str, Any] = {}
    for field, value in changes.items():
        if field == "name":
            if value != profile.name:
                raise ProfileError("name cannot be changed")
            continue
        if field not in _FIELD_TYPES:
            known = ", ".join(sorted(n for n in _FIELD_TYPES if n != "name"))
            raise ProfileError(f"unknown profile field {field!r}; known fields: {known}")
        updates[field] = _checked_value(field, value)
    changed = dataclasses.replace(profile, **updates)
    if changed.min_tokens > changed.max_tokens:
        raise ProfileError(f"min_tokens ({changed.min_tokens}) exceeds max_tokens ({changed.max_tokens})")
    return changed


def merge_profiles(base: dict[str, ModelProfile], overrides: Any) -> dict[str, ModelProfile]:
    """Apply a mapping of model name to field changes; names not in `base` become new profiles."""
    if not isinstance(overrides, dict):
        raise ProfileError("a profiles file must hold a mapping of model name to profile fields")
    merged = dict(base)
    for name, changes in overrides.items():
        if not isinstance(name, str) or not name:
            raise ProfileError(f"model names must be non-empty strings, got {name!r}")
        try:
            merged[name] = apply_changes(merged.get(name, ModelProfile(name)), changes or {})
        except ProfileError as err:
            raise ProfileError(f"{name}: {err}") from None
    return merged


def load_profiles_file(path: str | Path) -> dict[str, ModelProfile]:
    """Defaults merged with the YAML or JSON file at `path`."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        data = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as err:
        raise ProfileError(f"{path}: cannot parse: {err}") from None
    return merge_profiles(default_profiles(), data or {})
