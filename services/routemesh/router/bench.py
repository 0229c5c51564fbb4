"""Micro-benchmark of the decision itself: features in, ranked plan out, over 20 candidate models."""

from __future__ import annotations

import argparse
import json
import statistics
import time

from routemesh.common.policy import parse_policy
from routemesh.router.decision.compiled import RoutingPolicy
from routemesh.router.decision.planner import DecisionState, ModelHealthView, RoutingFeatures, plan_request

NOW_MS = 1_800_000_000_000


def twenty_model_policy(strategy: str = "hybrid") -> str:
    """A policy with 20 models in one route, with rules, fallbacks and a tenant."""
    models = "\n".join(
        f"  m{i:02d}: {{provider: p, upstream_model: u{i}, context_window: {8000 * (1 + i % 8)}, "
        f"pricing: {{input_per_mtok: {0.1 + i * 0.37:.2f}, output_per_mtok: {0.3 + i * 1.1:.2f}}}, "
        f"quality: {{default: {0.4 + i * 0.025:.3f}, code: {0.3 + i * 0.03:.3f}}}, "
        f"capabilities: [streaming, json{', tools' if i % 2 else ''}], limits: {{rpm: 10000}}, weight: {1 + i % 3}}}"
        for i in range(20)
    )
    names = ", ".join(f"m{i:02d}" for i in range(20))
    return f"""
providers:
  p: {{base_url: http://127.0.0.1:9/v1}}
models:
{models}
tenants:
  acme: {{allowed_models: [{names}]}}
routes:
  auto:
    strategy: {strategy}
    models: [{names}]
    fallbacks: [m05, m10, m15]
    rules:
      - {{name: vip, when: {{metadata: {{tier: vip}}}}, models: [m18, m19]}}
      - {{name: huge, when: {{min_input_tokens: 100000}}, models: [m07, m15]}}
"""


def run_benchmark(iterations: int = 5000, strategy: str = "hybrid") -> dict[str, float]:
    policy = RoutingPolicy(parse_policy(twenty_model_policy(strategy)))
    health = {f"m{i:02d}": ModelHealthView(samples=100, error_rate=0.01 * (i % 5), ttft_p50_ms=100 + 20 * i,
                                           ttft_p90_ms=150 + 25 * i, ttft_p99_ms=300 + 30 * i,
                                           tpot_p50_ms=5 + i, tpot_p99_ms=9 + i, in_flight=i % 7,
                                           requests_per_minute=100 * i, last_observation_ms=NOW_MS - 500)
              for i in range(20)}
    features = RoutingFeatures(input_tokens=1800, task_type="code", language="en", complexity=0.5, has_code=True)
    metadata = {"tenant": "acme", "user": "u1"}
    state = DecisionState(seed=1)
    timings = []
    for i in range(iterations + 500):
        start = time.perf_counter_ns()
        plan_request(policy, features, "auto", 512, metadata, health, text="refactor this", state=state,
                     now_ms=NOW_MS)
        if i >= 500:  # warm-up
            timings.append((time.perf_counter_ns() - start) / 1000)
    timings.sort()
    return {
        "candidates": 20, "strategy": strategy, "iterations": iterations,
        "p50_us": round(statistics.median(timings), 1),
        "p99_us": round(timings[int(len(timings) * 0.99) - 1], 1),
        "max_us": round(timings[-1], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=5000)
    parser.add_argument("--strategy", default="hybrid")
    args = parser.parse_args()
    print(json.dumps(run_benchmark(args.iterations, args.strategy)))


if __name__ == "__main__":
    main()
