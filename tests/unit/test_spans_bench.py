"""Smoke run of the span micro-benchmark (the real figures come from `python -m routemesh.bench.spans`)."""

from routemesh.bench.spans import measure


def test_span_benchmark_runs_and_reports_each_variant():
    result = measure(spans=32, rounds=2)
    assert set(result) == {"sdk_create_end", "stock_encode", "fast_encode"}
    # Generous: CI machines are noisy; the figures are measured by the benchmark command.
    assert all(0 < figures["min"] <= figures["median"] < 50_000 for figures in result.values())
