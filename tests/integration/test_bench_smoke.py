"""`routemesh bench --quick` runs end to end and writes every figure; bounds are sanity checks, never targets."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from routemesh.bench.report import expected_figure_keys

pytestmark = pytest.mark.integration


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@pytest.mark.timeout(240)
def test_quick_bench_writes_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "-m", "routemesh.bench.main", "--quick", "--json", str(out)],
                            capture_output=True, text=True, timeout=220)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "added TTFT p50 ms" in result.stdout and "target" in result.stdout

    data = json.loads(out.read_text())
    config = data["config"]
    assert data["failed_requests"] == 0
    keys = expected_figure_keys(config["modes"], config["tracing"], config["concurrency"], config["sweep"])
    missing = [k for k in keys if k not in data["figures"]]
    assert not missing, missing
    not_numbers = [k for k in keys if not _number(data["figures"][k]["value"])]
    assert not not_numbers, not_numbers
    for key in keys:
        figure = data["figures"][key]
        assert figure["target"] is None or figure["pass"] in (True, False), key
        assert all(v is None or _number(v) for v in figure["spread"]), key

    # Generous sanity bounds: this proves the harness measures what it says, not that routemesh is fast.
    figures = {k: v for k, v in data["figures"].items()}
    for tracing in config["tracing"]:
        zero = f"tracing={tracing}/zero/c=1/"
        realistic = f"tracing={tracing}/realistic/c=1/"
        assert -50 < figures[zero + "added_ttft_p50_ms"]["value"] < 200
        assert figures[zero + "added_ttft_p50_ms"]["direct"]["median"] < 150  # --time-scale 0 took effect
        assert 150 < figures[realistic + "ttft_ratio"]["direct"]["median"] < 1500  # the 200 ms TTFT profile
        assert 0.5 < figures[realistic + "total_duration_ratio"]["value"] < 3
        assert 10 < figures[realistic + "added_gap_p50_ms"]["direct"]["median"] < 100  # 20 ms per token
        assert figures[zero + "tokens_per_s"]["value"] > 0
        assert figures[zero + "tokens_per_chunk"]["value"] >= 1
        assert figures[zero + "cpu_ms_per_request"]["value"] >= 0
    assert 0 < figures["micro/decision_p99_us"]["value"] < 100_000
    assert 0 < figures["micro/classifier_p99_us"]["value"] < 1_000_000
    assert 0 < figures["micro/key_check_p99_us"]["value"] < 100_000
    assert figures["micro/ledger_record_p99_us"]["value"] < 100_000

    # Every measured request relayed the pinned model's 64 tokens in both arms.
    for phase in data["phases"]:
        assert phase["ok"] == phase["requests"] > 0, phase["errors"]
        assert phase["tokens"] == 64 * phase["ok"], (phase["arm"], phase["mode"], phase["tokens"])
    if "on" in config["tracing"]:
        assert data["trace_sink"]["exports"] > 0 and data["trace_sink"]["bytes"] > 0
