"""Summaries, spreads and ratios of the benchmark's figures (percentiles from common.stats)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from routemesh.common.stats import percentile


def summarize(values: Sequence[float]) -> dict[str, float | int | None]:
    """count, mean, p50, p90, p99 and max."""
    if not values:
        return {"count": 0, "mean": None, "p50": None, "p90": None, "p99": None, "max": None}
    ordered = sorted(values)
    return {
        "count": len(ordered),
        "mean": round(statistics.fmean(ordered), 4),
        "p50": round(percentile(ordered, 0.50), 4),
        "p90": round(percentile(ordered, 0.90), 4),
        "p99": round(percentile(ordered, 0.99), 4),
        "max": round(ordered[-1], 4),
    }


def spread(values: Sequence[float | None]) -> dict[str, object]:
    """Median of per-round values and their min-max; rounds without a value are left out."""
    present = [v for v in values if v is not None]
    if not present:
        return {"median": None, "min": None, "max": None, "rounds": list(values)}
    return {"median": round(statistics.median(present), 6), "min": round(min(present), 6),
            "max": round(max(present), 6), "rounds": [None if v is None else round(v, 6) for v in values]}


def minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def per(total: float | None, count: float | None) -> float | None:
    return None if total is None or not count else total / count
