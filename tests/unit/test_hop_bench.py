"""Smoke run of the gRPC hop micro-benchmark (the real figures come from `python -m routemesh.bench.hop`)."""

from routemesh.bench.hop import measure


def test_hop_benchmark_measures_both_sides():
    result = measure(calls=50, messages=20)
    assert result["paced_messages"] == 20
    # Generous: CI machines are noisy; the figures are measured by the benchmark command.
    assert 0 < result["unary_wall_p50_ms"] <= result["unary_wall_p99_ms"] < 1_000
    assert result["unary_client_cpu_ms"] > 0 and result["unary_server_cpu_ms"] >= 0
    assert result["paced_client_cpu_us_per_message"] > 0
