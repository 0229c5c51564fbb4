"""Mutable simulator state: current profiles, the seeded fault dice, and per-model outcome counts."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass

from aiohttp import web

from routemesh.sim.profiles import FAULTS, ModelProfile, default_profiles

__all__ = ["FAULTS", "FAULT_AFTER_TOKENS", "STATE", "Plan", "SimState"]

# Header-injected faults that hit mid-stream do so after this many content tokens.
FAULT_AFTER_TOKENS = 3
_SLOW_FIRST_TOKEN_FACTOR = 20.0


@dataclass
class Plan:
    """What one request will do, decided up front so the fault dice are rolled once per request."""

    outcome: str  # recorded in the stats when the request ends: "ok" or the fault that happened
    status: int = 200
    ttft_s: float = 0.0
    token_interval_s: float = 0.0
    jitter: float = 0.0
    cut_at: int | None = None  # content-token index before which the connection is closed
    stall_at: int | None = None
    stall_s: float = 0.0
    malformed_at: int | None = None
    send_done: bool = True
    hang: bool = False
    timing: random.Random | None = None

    def jittered(self, seconds: float) -> float:
        if seconds <= 0 or self.jitter <= 0 or self.timing is None:
            return seconds
        return seconds * self.timing.uniform(1.0 - self.jitter, 1.0 + self.jitter)


class SimState:
    """Everything the handlers share; reset() restores the profiles the server started with."""

    def __init__(self, *, seed: int, time_scale: float, profiles: dict[str, ModelProfile] | None = None):
        self.seed = seed
        self.time_scale = time_scale
        self.initial_profiles = dict(profiles if profiles is not None else default_profiles())
        self.profiles: dict[str, ModelProfile] = {}
        self.outcomes: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._dice = random.Random(seed)
        self._fault_dice = random.Random(f"{seed}:profile-fault")
        self._next_id = 0
        self.reset()

    def reset(self) -> None:
        self.profiles = dict(self.initial_profiles)
        self.outcomes.clear()
        self._dice = random.Random(self.seed)
        self._fault_dice = random.Random(f"{self.seed}:profile-fault")
        self._next_id = 0

    def completion_id(self) -> str:
        self._next_id += 1
        return f"chatcmpl-sim{self._next_id:010d}"

    def record(self, model: str, outcome: str) -> None:
        self.outcomes[model][outcome] += 1

    def stats(self) -> dict[str, object]:
        return {
            "models": {
                model: {"requests": sum(counts.values()), "outcomes": dict(sorted(counts.items()))}
                for model, counts in sorted(self.outcomes.items())
            }
        }

    def plan(self, profile: ModelProfile, fault: str, n_tokens: int, scale: float | None) -> Plan:
        """Roll the dice for one request: header `fault`, else the profile's fault, else the profile's rates."""
        # Always draw the same number of values so later requests see the same dice whatever happens here.
        error_roll, limit_roll, cut_roll, stall_roll = (self._dice.random() for _ in range(4))
        timing = random.Random(self._dice.getrandbits(64))
        # A separate generator, so setting a profile fault leaves every other model's dice unchanged.
        if not fault and profile.fault and self._fault_dice.random() < profile.fault_rate:
            fault = profile.fault
        scale = self.time_scale if scale is None else scale
        plan = Plan(
            outcome="ok",
            ttft_s=profile.ttft_ms / 1000.0 * scale,
            token_interval_s=scale / profile.tokens_per_s,
            jitter=profile.jitter,
            timing=timing,
        )
        random_point = timing.randint(1, n_tokens - 1) if n_tokens > 1 else 0
        if fault:
            _apply_fault(plan, fault, profile, mid_stream=min(FAULT_AFTER_TOKENS, max(0, n_tokens - 1)))
        elif profile.outage:
            plan.outcome, plan.status = "503", 503
        elif error_roll < profile.error_rate:
            plan.outcome, plan.status = "500", 500
        elif limit_roll < profile.rate_limit_rate:
            plan.outcome, plan.status = "429", 429
        elif cut_roll < profile.cut_rate:
            plan.outcome, plan.cut_at = "cut", random_point
        elif stall_roll < profile.stall_rate:
            plan.outcome, plan.stall_at, plan.stall_s = "stall", random_point, profile.stall_s * scale
        return plan


def _apply_fault(plan: Plan, fault: str, profile: ModelProfile, mid_stream: int) -> None:
    """Make `plan` fail the way the named fault does (mid-stream faults hit after `mid_stream` tokens)."""
    plan.outcome = fault
    if fault in ("500", "503", "429"):
        plan.status = int(fault)
    elif fault == "cut":
        plan.cut_at = mid_stream
    elif fault == "stall":
        # An injected stall ignores the time scale: it exists to trip the caller's timeouts.
        plan.stall_at, plan.stall_s = mid_stream, profile.stall_s
    elif fault == "hang":
        plan.hang = True
    elif fault == "slow-first-token":
        plan.ttft_s *= _SLOW_FIRST_TOKEN_FACTOR
    elif fault == "malformed":
        plan.malformed_at = mid_stream
    elif fault == "no-done":
        plan.send_done = False


STATE = web.AppKey("routemesh_sim_state", SimState)
