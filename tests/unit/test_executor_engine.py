"""The execution engine against the real simulated provider: failover, retries, hedging, breakers, cancel, versions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest
import yaml

from routemesh.common.errors import PolicySkew, UpstreamUnavailable
from routemesh.common.outcomes import AttemptOutcome, FinishStatus
from routemesh.common.policy import canonical_json, digest, parse_policy
from routemesh.common.policy_watch import PolicyHolder
from routemesh.executor.engine import (
    AttemptRecord,
    ExecutionEngine,
    ExecutionInput,
    ExecutionOutcome,
    ExecutionSettings,
    _Execution,
)
from routemesh.executor.http import HttpClient
from routemesh.executor.policy_versions import POLICY_VERSIONS_KEPT
from routemesh.sim import start_sim
from routemesh.v1 import control_pb2

MESSAGES = [{"role": "user", "content": "Tell me about lighthouses and their keepers."}]
UPSTREAM = {"a": "sim-fast", "b": "sim-balanced", "c": "sim-long"}
# Nothing listens on port 1: a provider moved there refuses every connection.
UNREACHABLE_URL = "http://127.0.0.1:1/v1"


def policy_for(sim_url: str, models: tuple[str, ...] = ("a", "b", "c"), output_per_mtok: float = 2) -> str:
    return yaml.safe_dump({
        "health": {"circuit": {"consecutive_failures": 3, "open_s": 30}},
        "providers": {"sim": {"base_url": sim_url,
                              "timeouts": {"connect_s": 1, "first_token_s": 2, "between_tokens_s": 1}}},
        "models": {name: {"provider": "sim", "upstream_model": UPSTREAM[name],
                          "pricing": {"input_per_mtok": 1, "output_per_mtok": output_per_mtok},
                          "context_window": 16000}
                   for name in models},
        "routes": {"auto": {"models": list(models)}},
    })


def apply_policy(holder: PolicyHolder, version: int, policy_yaml: str) -> str:
    """Push a policy version as control would; returns its digest."""
    text = canonical_json(parse_policy(policy_yaml))
    policy_digest = digest(text)
    assert holder.apply(control_pb2.Policy(version=version, digest=policy_digest, policy_json=text))
    return policy_digest


class Harness:
    def __init__(self, sim, engine: ExecutionEngine, observed: list[tuple[AttemptRecord, bool]]):
        self.sim = sim
        self.engine = engine
        self.observed = observed

    async def patch(self, model: str, **fields: object) -> None:
        async with httpx.AsyncClient() as client:
            (await client.patch(f"{self.sim.root_url}/admin/profiles/{model}", json=fields)).raise_for_status()

    async def stats(self) -> dict:
        async with httpx.AsyncClient() as client:
            return (await client.get(f"{self.sim.root_url}/admin/stats")).json()

    async def run(self, plan: list[str], settings: ExecutionSettings | None = None,
                  deadline_s: float = 20.0, version: tuple[int, str] = (0, "")) -> tuple[str, ExecutionOutcome]:
        request = ExecutionInput(messages=MESSAGES, plan=plan, max_tokens=20, estimated_input_tokens=12,
                                 settings=settings or ExecutionSettings(), policy_version=version[0],
                                 policy_digest=version[1])
        text = []
        outcome = None
        async for item in self.engine.execute(request, time.monotonic() + deadline_s):
            if isinstance(item, str):
                text.append(item)
            else:
                outcome = item
        assert outcome is not None
        return "".join(text), outcome


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    sim = await start_sim(time_scale=0.05, seed=3)
    holder = PolicyHolder(keep=POLICY_VERSIONS_KEPT)
    apply_policy(holder, 1, policy_for(sim.url))
    observed: list[tuple[AttemptRecord, bool]] = []
    client = HttpClient()
    engine = ExecutionEngine(holder, client, lambda r, finished, _id: observed.append((r, finished)))
    try:
        yield Harness(sim, engine, observed)
    finally:
        await client.aclose()
        await sim.close()


def outcomes(outcome: ExecutionOutcome) -> list[tuple[str, AttemptOutcome]]:
    return [(a.model, a.outcome) for a in outcome.attempts]


async def test_failover_before_the_first_token(harness):
    await harness.patch("sim-fast", outage=True)
    text, outcome = await harness.run(["a", "b"])
    assert outcomes(outcome) == [("a", AttemptOutcome.UPSTREAM_ERROR), ("b", AttemptOutcome.SUCCESS)]
    assert outcome.status in (FinishStatus.COMPLETE, FinishStatus.LENGTH) and outcome.model == "b" and text


async def test_last_candidate_is_retried_with_backoff_honouring_retry_after(harness):
    await harness.patch("sim-fast", rate_limit_rate=1.0, retry_after_s=0.3)
    started = time.monotonic()
    with pytest.raises(UpstreamUnavailable) as err:
        await harness.run(["a"], ExecutionSettings(max_tries_per_model=2, backoff_initial_ms=10))
    assert time.monotonic() - started >= 0.3  # Retry-After, not the 10 ms backoff
    assert "a: rate_limited" in str(err.value)
    assert (await harness.stats())["models"]["sim-fast"]["requests"] == 2


async def test_another_candidate_is_preferred_to_a_retry(harness):
    await harness.patch("sim-fast", rate_limit_rate=1.0, retry_after_s=5)
    started = time.monotonic()
    _, outcome = await harness.run(["a", "b"])
    assert outcomes(outcome) == [("a", AttemptOutcome.RATE_LIMITED), ("b", AttemptOutcome.SUCCESS)]
    assert time.monotonic() - started < 2  # switched at once instead of waiting out Retry-After


async def test_retry_budget_stops_a_retry_storm(harness):
    await harness.patch("sim-fast", error_rate=1.0)
    spent = 0
    for _ in range(40):
        try:
            await harness.run(["a"], ExecutionSettings(max_tries_per_model=3, backoff_initial_ms=1, backoff_max_ms=1))
        except UpstreamUnavailable as exc:
            spent += "retry_budget_exhausted" in str(exc)
    requests = (await harness.stats())["models"]["sim-fast"]["requests"]
    # Without a budget 40 requests x 3 tries = 120 calls; the breaker (3 failures) and budget keep it far lower.
    assert requests < 60, requests


async def test_hedging_takes_the_first_token_and_cancels_the_loser(harness):
    await harness.patch("sim-fast", ttft_ms=20_000)  # 1 s at this time scale: far slower than b
    started = time.monotonic()
    text, outcome = await harness.run(["a", "b"], ExecutionSettings(hedge_after_ms=100))
    assert time.monotonic() - started < 0.9
    assert outcome.model == "b" and text
    assert dict(outcomes(outcome)) == {"a": AttemptOutcome.HEDGE_LOST, "b": AttemptOutcome.SUCCESS}
    assert [a.hedge for a in outcome.attempts] == [False, True]


async def test_continuation_completes_a_cut_answer_on_the_next_candidate(harness):
    await harness.patch("sim-fast", fault="cut")
    _, truncated = await harness.run(["a", "b"])
    assert truncated.status == FinishStatus.TRUNCATED_UPSTREAM
    text, outcome = await harness.run(["a", "b"], ExecutionSettings(continue_on_truncation=True))
    assert outcome.status == FinishStatus.CONTINUED and outcome.model == "b"
    assert outcomes(outcome) == [("a", AttemptOutcome.TRUNCATED), ("b", AttemptOutcome.SUCCESS)]
    assert outcome.output_tokens == sum(a.output_tokens for a in outcome.attempts)


async def test_local_breaker_opens_and_skips_the_model(harness):
    await harness.patch("sim-fast", outage=True)
    for _ in range(3):
        await harness.run(["a", "b"])
    before = (await harness.stats())["models"]["sim-fast"]["requests"]
    _, outcome = await harness.run(["a", "b"])
    assert outcomes(outcome)[0] == ("a", AttemptOutcome.CIRCUIT_OPEN)
    assert (await harness.stats())["models"]["sim-fast"]["requests"] == before


async def test_cancellation_closes_the_provider_call_quickly_and_records_usage(harness):
    await harness.patch("sim-balanced", tokens_per_s=2.0)  # 40 tok/s at this scale: a ~0.5 s answer
    request = ExecutionInput(messages=MESSAGES, plan=["b"], max_tokens=200, estimated_input_tokens=12)

    async def consume() -> None:
        async for item in harness.engine.execute(request, None):
            if isinstance(item, str):
                await asyncio.sleep(0)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.3)
    cancelled_at = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    finished = [r for r, done in harness.observed if done and r.model == "b"]
    assert finished and finished[-1].outcome == AttemptOutcome.CANCELLED
    assert finished[-1].output_tokens > 0 and finished[-1].usage_estimated
    deadline = time.monotonic() + 1
    while time.monotonic() < deadline:
        if (await harness.stats())["models"]["sim-balanced"]["outcomes"].get("disconnected"):
            break
        await asyncio.sleep(0.02)
    assert time.monotonic() - cancelled_at < 0.5 + 0.1, "the provider connection was not closed within 500 ms"


async def test_context_length_error_moves_to_a_longer_context_model_first(harness):
    # "b" (sim-balanced) says the prompt is too long; "c" has a larger window than "a", so it goes next.
    current = harness.engine.holder.current
    policy = current.policy.model_copy(update={"models": {
        **current.policy.models,
        "c": current.policy.models["c"].model_copy(update={"context_window": 64000}),
    }})
    text = canonical_json(policy)
    harness.engine.holder.apply(control_pb2.Policy(version=2, digest=digest(text), policy_json=text))
    b_record = AttemptRecord(model="b", provider="sim", outcome=AttemptOutcome.UPSTREAM_ERROR, reason="context_length")
    run = _Execution(harness.engine, ExecutionInput(messages=MESSAGES, plan=["b", "a", "c"], max_tokens=20),
                     harness.engine.holder.current, None)
    run.pending.popleft()
    run.last_failed = b_record
    run._prefer_longer_context()
    assert list(run.pending) == ["c", "a"]


# ---- the plan's policy version ---------------------------------------------------------------------------


def version_one(harness: Harness) -> tuple[int, str]:
    held = harness.engine.holder.current
    assert held.version == 1
    return 1, held.digest


async def test_a_plan_resolves_against_its_own_version_after_a_newer_one_arrived(harness):
    v1 = version_one(harness)
    # Version 2 drops model "a" and moves the provider somewhere unreachable.
    apply_policy(harness.engine.holder, 2, policy_for(UNREACHABLE_URL, models=("b", "c")))
    text, outcome = await harness.run(["a", "b"], version=v1)
    assert outcomes(outcome) == [("a", AttemptOutcome.SUCCESS)] and text
    # Version 2 really differs: a plan made with it cannot use "a", nor reach the provider.
    with pytest.raises(UpstreamUnavailable) as err:
        await harness.run(["a", "b"], version=(2, harness.engine.holder.current.digest))
    assert "'a' is not in policy version 2" in str(err.value) and "b: connect_error" in str(err.value)


async def test_the_price_is_the_plans_even_when_a_newer_version_arrives_mid_answer(harness):
    await harness.patch("sim-balanced", tokens_per_s=2.0)  # 40 tok/s at this scale: the rollout lands mid-answer
    request = ExecutionInput(messages=MESSAGES, plan=["b"], max_tokens=20, estimated_input_tokens=12,
                             policy_version=1, policy_digest=version_one(harness)[1])
    outcome = None
    async for item in harness.engine.execute(request, time.monotonic() + 20):
        if isinstance(item, str) and harness.engine.holder.current.version == 1:
            apply_policy(harness.engine.holder, 2, policy_for(harness.sim.url, output_per_mtok=200))
        elif isinstance(item, ExecutionOutcome):
            outcome = item
    assert outcome is not None and outcome.status in (FinishStatus.COMPLETE, FinishStatus.LENGTH)
    assert harness.engine.holder.current.version == 2
    at_version_one = (outcome.input_tokens * 1 + outcome.output_tokens * 2) / 1e6
    assert outcome.cost_usd == pytest.approx(at_version_one)


async def test_a_request_without_a_version_uses_the_current_policy(harness):
    apply_policy(harness.engine.holder, 2, policy_for(harness.sim.url, output_per_mtok=200))
    _, outcome = await harness.run(["b"])
    assert outcome.cost_usd == pytest.approx((outcome.input_tokens * 1 + outcome.output_tokens * 200) / 1e6)


async def test_a_version_not_held_is_policy_skew_naming_the_versions_held(harness):
    v1 = version_one(harness)
    with pytest.raises(PolicySkew) as err:
        await harness.run(["a"], version=(2, "f" * 64))
    assert f"policy version 2 ({'f' * 12}) is not held" in str(err.value)
    assert f"holds 1 ({v1[1][:12]})" in str(err.value)
    assert err.value.code.name == "FAILED_PRECONDITION" and err.value.reason == "POLICY_SKEW"
    with pytest.raises(PolicySkew):  # the right number with another digest is another policy
        await harness.run(["a"], version=(1, "0" * 64))
    # Only the newest versions are kept: after as many rollouts again, version 1 is gone.
    for version in range(2, POLICY_VERSIONS_KEPT + 2):
        apply_policy(harness.engine.holder, version, policy_for(harness.sim.url, output_per_mtok=version))
    with pytest.raises(PolicySkew) as err:
        await harness.run(["a"], version=v1)
    assert err.value.metadata["held_versions"] == ",".join(str(v) for v in range(2, POLICY_VERSIONS_KEPT + 2))
    oldest = harness.engine.versions.holder.held()[0]
    _, outcome = await harness.run(["a"], version=oldest)
    assert oldest[0] == 2 and outcome.status in (FinishStatus.COMPLETE, FinishStatus.LENGTH)
