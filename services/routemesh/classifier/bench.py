"""Latency benchmark of the classifier's work per request: classify() and the quality prediction."""

from __future__ import annotations

import json
import time

from routemesh.classifier.features import classify, last_user_text
from routemesh.common.stats import percentile

_SYSTEM = (
    "You are a senior backend engineer helping a teammate. Answer precisely, show corrected code, and "
    "explain the trade-offs of each change in a short paragraph."
)
_PROSE = (
    "Our order service started timing out under load last week. Requests that used to finish in about "
    "forty milliseconds now take several seconds at the 99th percentile, and the database CPU sits near "
    "ninety percent during the evening peak. We suspect the new reporting feature, which loads every line "
    "item of an order and then filters them in Python, but we have not proven it yet. "
)
_CODE = """```python
import asyncio
from dataclasses import dataclass


@dataclass
class LineItem:
    sku: str
    quantity: int
    unit_price_cents: int


async def load_order(db, order_id: int) -> list[LineItem]:
    query = "SELECT sku, quantity, unit_price_cents FROM line_items WHERE order_id = $1"
    rows = await db.fetch(query, order_id)
    items = [LineItem(r["sku"], r["quantity"], r["unit_price_cents"]) for r in rows]
    return [item for item in items if item.quantity > 0]


async def report(db, order_ids: list[int]) -> dict[int, int]:
    totals = {}
    for order_id in order_ids:
        items = await load_order(db, order_id)
        totals[order_id] = sum(i.quantity * i.unit_price_cents for i in items)
    return totals
```
"""
_QUESTION = (
    "Can you find why this is slow, rewrite report() so it issues a bounded number of queries, and tell "
    "me which indexes we need? Please keep the public signature, handle orders without items, and explain "
    "step by step how you would verify the fix under production-like load."
)


def benchmark_messages() -> list[tuple[str, str]]:
    """A system prompt and one user message: 2,023 cl100k tokens with chat framing, 9,458 characters."""
    user = "\n\n".join([_PROSE * 6, _CODE, _PROSE * 6, _CODE, _PROSE * 6, _CODE, _QUESTION])
    return [("system", _SYSTEM), ("user", user)]


def _timed(work, inputs, iterations: int) -> list[float]:
    """Microseconds of `work(x)` for `iterations` inputs taken in turn from `inputs`, sorted."""
    timings = []
    for i in range(iterations):
        item = inputs[i % len(inputs)]
        start = time.perf_counter_ns()
        work(item)
        timings.append((time.perf_counter_ns() - start) / 1000)
    timings.sort()
    return timings


def _summary(timings: list[float]) -> dict:
    return {"p50_us": round(percentile(timings, 0.50), 1), "p99_us": round(percentile(timings, 0.99), 1),
            "max_us": round(timings[-1], 1)}


def _distinct_prompts() -> list[list[tuple[str, str]]]:
    """The shipped outcomes' validation prompts (never trained on), each a one-message conversation."""
    from routemesh.quality.outcomes import load_outcomes, shipped_outcomes_path, split

    return [[("user", prompt)] for prompt in split(load_outcomes(shipped_outcomes_path()))[1].prompts]


def run_benchmark(iterations: int = 2000) -> dict:
    """What the classifier service computes per request: classify() and the default policy's quality prediction.

    p50/p99 are of both together on benchmark_messages() repeated (the predictor's word cache warm after the
    first); `distinct` is the same on the shipped validation prompts, each new to the process, in order (the
    cache warming as in a fresh replica); `classify_only` leaves the prediction out. Latencies in microseconds.
    """
    from routemesh.common.policy import load_default_policy_text, parse_policy
    from routemesh.quality.serving import policy_quality

    from routemesh.common.serve import tune_gc

    quality = policy_quality(parse_policy(load_default_policy_text()))
    assert quality is not None, "the default policy names the shipped quality predictor"

    def serve(messages: list[tuple[str, str]]) -> None:
        features = classify(messages)
        quality.predict(last_user_text(messages), features)

    messages = benchmark_messages()
    features = classify(messages)
    for _ in range(min(200, iterations)):
        serve(messages)
    prompts = _distinct_prompts()
    tune_gc()  # as the service runs
    return {
        "iterations": iterations,
        "chars": sum(len(content) for _, content in messages),
        "input_tokens": features.input_tokens,
        "task_type": features.task_type,
        "predictor_sha256": quality.sha256,
        **_summary(_timed(serve, [messages], iterations)),
        "classify_only": _summary(_timed(classify, [messages], iterations)),
        "distinct": {"prompts": min(iterations, len(prompts)),
                     **_summary(_timed(serve, prompts, min(iterations, len(prompts))))},
    }


if __name__ == "__main__":
    print(json.dumps(run_benchmark(), indent=2))
