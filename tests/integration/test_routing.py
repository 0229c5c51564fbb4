"""The routing engine against a real mesh: live latency shifts, cost routing, A/B splits, budgets, limits."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator

import grpc
import pytest
import yaml

from routemesh.client import AsyncRouterClient, RouterClient, RoutemeshError
from routemesh.common.policy import load_default_policy_text, parse_policy
from routemesh.mesh import Mesh, MeshLayout
from routemesh.v1 import common_pb2, router_pb2
from tests.integration.conftest import REDIS_URL, SIM_TIME_SCALE, SimAdmin

pytestmark = pytest.mark.integration
TELEMETRY_WINDOW_S = 8


def routing_policy() -> str:
    doc = yaml.safe_load(load_default_policy_text())
    # Quick to react for a test: short freshness, few samples, more exploration.
    doc["routes"]["fast"]["latency"] = {"percentile": "p90", "tolerance": 0.10, "freshness_s": 3,
                                        "min_samples": 3, "explore_rate": 0.15}
    doc["tenants"]["tiny-budget"] = {"limits": {"rpm": 0, "tpm": 0}}
    doc["tenants"]["rate-limited"] = {"limits": {"rpm": 5, "tpm": 0}}
    doc["budgets"] = [{"name": "tiny", "tenant": "tiny-budget", "period": "day", "limit_usd": 0.0015,
                       "soft_limit_fraction": 0.5}]
    text = yaml.safe_dump(doc, sort_keys=False)
    parse_policy(text)
    return text


@pytest.fixture(scope="module")
def routing_mesh(tmp_path_factory, redis_prefix) -> Iterator[Mesh]:
    policy = tmp_path_factory.mktemp("routing") / "policy.yaml"
    policy.write_text(routing_policy())
    mesh = Mesh(MeshLayout.free(), policy=str(policy), redis_url=REDIS_URL, redis_prefix=redis_prefix + "routing:",
                sim_time_scale=SIM_TIME_SCALE, log_dir=tmp_path_factory.mktemp("routing-logs"),
                extra_args={"telemetry": ["--window-s", str(TELEMETRY_WINDOW_S)]})
    mesh.start()
    yield mesh
    mesh.stop()


@pytest.fixture
def router(routing_mesh) -> Iterator[RouterClient]:
    with RouterClient(routing_mesh.layout.address("router"), timeout=30) as client:
        yield client


async def _burst(address: str, n: int, concurrency: int = 8, **options) -> list:
    gate = asyncio.Semaphore(concurrency)
    async with AsyncRouterClient(address) as client:
        async def one(i: int):
            async with gate:
                return await client.complete(f"Quick question {i}: what is the capital of France?", **options)
        return await asyncio.gather(*(one(i) for i in range(n)))


def test_latency_routing_leaves_a_slowed_model_and_returns_after_it_recovers(routing_mesh):
    address = routing_mesh.layout.address("router")
    sim = SimAdmin(routing_mesh.layout.sim_url)
    try:
        warm = asyncio.run(_burst(address, 40, model="fast", max_tokens=16))
        assert Counter(r.final.model for r in warm).most_common(1)[0][0] == "fast-cheap"
        sim.patch("sim-fast", ttft_ms=4000)  # 200 ms at the test time scale: now the slowest
        slowed_at = time.monotonic()
        moved_after = None
        while time.monotonic() - slowed_at < 15:
            batch = asyncio.run(_burst(address, 16, model="fast", max_tokens=16))
            share = sum(r.decision.model == "fast-cheap" for r in batch) / len(batch)
            if share <= 0.25:
                moved_after = time.monotonic() - slowed_at
                break
        assert moved_after is not None, "latency routing did not move away from the slowed model"
        sim.reset()
        recovered_at = time.monotonic()
        back_after = None
        while time.monotonic() - recovered_at < TELEMETRY_WINDOW_S + 20:
            batch = asyncio.run(_burst(address, 16, model="fast", max_tokens=16))
            if sum(r.decision.model == "fast-cheap" for r in batch) / len(batch) >= 0.6:
                back_after = time.monotonic() - recovered_at
                break
        assert back_after is not None, "latency routing did not come back after the model recovered"
        print(f"\nlatency routing: moved away {moved_after:.1f} s after the slowdown, "
              f"back {back_after:.1f} s after recovery")
    finally:
        sim.reset()


def test_cost_routing_on_a_mixed_workload(router):
    prompts = [
        "What time does the store open?",
        "Write a Python function that checks whether a string is a palindrome.",
        "Summarize the following notes: the team met, agreed on the plan, and set a deadline for Friday.",
        "Translate into German: where is the train station?",
        "Solve 12 * (3 + 4) and explain.",
        "Tell me a short story about a brave mouse.",
    ]
    spent = baseline = 0.0
    policy = parse_policy(routing_policy())
    for prompt in prompts * 2:
        result = router.complete(prompt, routing=router_pb2.RoutingOptions(strategy="cost"), max_tokens=64)
        route = policy.routes["auto"]
        rule = next((r for r in route.rules if r.name == result.decision.rule), None)
        pool = set(rule.models if rule and rule.models else route.models)
        eligible_pool = [c for c in result.decision.candidates if c.eligible and c.model in pool]
        assert result.decision.strategy == "cost"
        assert result.decision.model == min(eligible_pool, key=lambda c: c.estimated_cost_usd).model
        spent += result.final.cost_usd
        usage = result.final.usage
        baseline += policy.models["strong"].estimated_cost(usage.input_tokens, usage.output_tokens)
    assert spent < baseline / 3, (spent, baseline)


def test_ab_split_within_a_few_percent_and_reported(routing_mesh):
    address = routing_mesh.layout.address("router")

    async def run() -> list:
        gate = asyncio.Semaphore(8)
        async with AsyncRouterClient(address) as client:
            async def one(i: int):
                async with gate:
                    return await client.complete("Hello, how are you?", model="experiment", max_tokens=8,
                                                 metadata={"user": f"user-{i}"})
            return await asyncio.gather(*(one(i) for i in range(400)))

    results = asyncio.run(run())
    variants = Counter(r.decision.variant for r in results)
    assert set(variants) == {"hybrid", "cost-only"}
    assert abs(variants["hybrid"] / 400 - 0.5) < 0.07, variants
    assert all(r.final.variant == r.decision.variant and r.final.experiment == "cost-vs-hybrid" for r in results)
    with RouterClient(address) as client:  # sticky: the same user always lands in the same variant
        assert len({client.explain("hi", model="experiment", metadata={"user": "user-7"}).decision.variant
                    for _ in range(10)}) == 1
    deadline = time.monotonic() + 5
    while True:
        report = subprocess.run([sys.executable, "-m", "routemesh", "report", "--experiment", "cost-vs-hybrid",
                                 "--telemetry", routing_mesh.layout.address("telemetry")],
                                capture_output=True, text=True, timeout=30)
        if ("hybrid" in report.stdout and "cost-only" in report.stdout) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert report.returncode == 0, report.stderr
    assert "hybrid" in report.stdout and "cost-only" in report.stdout


def test_budget_soft_limit_then_hard_cap_never_overspends(router):
    meta = {"tenant": "tiny-budget"}
    spent, soft_seen, refused = 0.0, False, None
    for i in range(200):
        try:
            result = router.complete(f"Tell me something interesting, number {i}", metadata=meta, max_tokens=64)
        except RoutemeshError as exc:
            refused = exc
            break
        spent += result.final.cost_usd
        soft_seen = soft_seen or result.decision.budget_soft_limited
    assert refused is not None, "the hard cap never refused a request"
    assert refused.code == grpc.StatusCode.RESOURCE_EXHAUSTED and refused.reason == "BUDGET_EXHAUSTED"
    assert soft_seen, "past the soft limit decisions should say so"
    assert spent <= 0.0015 + 1e-12


def test_tenant_rate_limit_is_enforced_before_the_call(router):
    meta = {"tenant": "rate-limited"}
    outcomes = []
    for _ in range(8):
        try:
            router.complete("hi", metadata=meta, max_tokens=4)
            outcomes.append("ok")
        except RoutemeshError as exc:
            outcomes.append(exc.reason)
            assert exc.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert outcomes.count("ok") == 5 and outcomes[5:] == ["RATE_LIMITED"] * 3


def test_confidential_requests_only_reach_cleared_models(router):
    result = router.complete("Summarize our unreleased earnings.", metadata={"data_class": "confidential"})
    assert result.final.model in ("balanced", "strong")
    rejected = {c.model: c.rejection_reason for c in result.decision.candidates if not c.eligible}
    assert "not cleared" in rejected["fast-cheap"]


def test_conversations_stick_to_their_model(router):
    first = router.complete("Hi, I need help planning a trip.", model="chat", metadata={"conversation_id": "c-1"})
    for _ in range(5):
        again = router.complete("And what about hotels?", model="chat", metadata={"conversation_id": "c-1"})
        assert again.decision.model == first.decision.model


def test_pin_without_fallback_fails_rather_than_moving(router, routing_mesh):
    sim = SimAdmin(routing_mesh.layout.sim_url)
    sim.patch("sim-balanced", outage=True)
    try:
        with pytest.raises(RoutemeshError) as err:
            router.complete("hello", model="balanced")
        assert err.value.code == grpc.StatusCode.UNAVAILABLE
        result = router.complete("hello", model="balanced",
                                 routing=router_pb2.RoutingOptions(allow_fallback=True))
        assert result.final.model != "balanced" and result.final.status == common_pb2.FINISH_STATUS_COMPLETE
    finally:
        sim.reset()
