"""Latency benchmark of classify() on a realistic 2,000-token prompt of mixed prose and code."""

from __future__ import annotations

import json
import time

from routemesh.classifier.features import classify
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


def run_benchmark(iterations: int = 2000) -> dict:
    """Time classify() `iterations` times on benchmark_messages(); latencies in microseconds."""
    messages = benchmark_messages()
    features = classify(messages)
    for _ in range(min(200, iterations)):
        classify(messages)
    timings = []
    for _ in range(iterations):
        start = time.perf_counter_ns()
        classify(messages)
        timings.append((time.perf_counter_ns() - start) / 1000)
    timings.sort()
    return {
        "iterations": iterations,
        "chars": sum(len(content) for _, content in messages),
        "input_tokens": features.input_tokens,
        "task_type": features.task_type,
        "p50_us": round(percentile(timings, 0.50), 1),
        "p99_us": round(percentile(timings, 0.99), 1),
        "max_us": round(timings[-1], 1),
    }


if __name__ == "__main__":
    print(json.dumps(run_benchmark(), indent=2))
