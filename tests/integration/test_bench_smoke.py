"""`routemesh bench --quick` runs end to end and writes every figure; bounds are sanity checks, never targets."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from routemesh.bench.report import expected_figure_keys
from tests.integration.conftest import REDIS_URL

pytestmark = pytest.mark.integration


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@pytest.mark.timeout(240)
def test_quick_bench_writes_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "-m", "routemesh.bench.main", "--quick", "--floor", "--json", str(out)],
                            capture_output=True, text=True, timeout=220)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "added TTFT p50 ms" in result.stdout and "target" in result.stdout

    data = json.loads(out.read_text())
    config = data["config"]
    assert data["failed_requests"] == 0
    assert config["arms"] == ["direct", "through", "gateway", "floor"] and config["floor"] is True
    keys = expected_figure_keys(config["modes"], config["tracing"], config["concurrency"], config["sweep"],
                                arms=("through", "gateway", "floor"))
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
        # The gateway arm: the same answers over HTTP, and its own figures beside the gRPC arm's.
        gateway = f"tracing={tracing}/zero/via=gateway/c=1/"
        assert -50 < figures[gateway + "added_ttft_p50_ms"]["value"] < 300
        assert figures[gateway + "cpu_ms_per_request"]["value"] > 0
        assert figures[zero + "gateway_added_cpu_ms_per_request"]["target"]["limit"] == 1
        # The floor: its own three processes' CPU, and the gRPC arm against it.
        assert figures[f"tracing={tracing}/zero/via=floor/c=1/cpu_ms_per_request"]["value"] > 0
        assert -50 < figures[zero + "floor_added_ttft_p50_ms"]["value"] < 200
    floor_cpu = [p["cpu_ms"] for p in data["phases"] if p["arm"] == "floor"]
    assert all({"floor-router", "floor-classifier", "floor-executor"} <= set(cpu) for cpu in floor_cpu)
    assert 0 < figures["micro/decision_p99_us"]["value"] < 100_000
    assert 0 < figures["micro/classifier_p99_us"]["value"] < 1_000_000
    assert 0 < figures["micro/key_check_p99_us"]["value"] < 100_000
    assert figures["micro/ledger_record_p99_us"]["value"] < 100_000

    # Every measured request relayed the pinned model's 64 tokens in every arm.
    for phase in data["phases"]:
        assert phase["ok"] == phase["requests"] > 0, phase["errors"]
        assert phase["tokens"] == 64 * phase["ok"], (phase["arm"], phase["mode"], phase["tokens"])
    if "on" in config["tracing"]:
        assert data["trace_sink"]["exports"] > 0 and data["trace_sink"]["bytes"] > 0


@pytest.mark.timeout(240)
def test_a_compared_proxy_is_measured_beside_routemesh_on_pinned_cores(tmp_path):
    """--compare-url with a real forwarding proxy process (tests/integration/bench_proxy.py) in front of the bench's
    sim on --sim-port; --compare-pid measures its CPU; --pin splits the CPUs (0:1 on two). The mesh requires API keys
    (the gateway arm sends the run's) and runs the policy without its predictor."""
    from routemesh.mesh import free_quiet_ports

    sim_port, proxy_port = free_quiet_ports("127.0.0.1", 2)
    proxy = subprocess.Popen([sys.executable, str(Path(__file__).with_name("bench_proxy.py")), str(proxy_port),
                              f"http://127.0.0.1:{sim_port}/v1"])
    try:
        out = tmp_path / "bench.json"
        result = subprocess.run(
            [sys.executable, "-m", "routemesh.bench.main", "--quick", "--mode", "zero", "--tracing", "off",
             "--via", "gateway", "--compare-url", f"http://127.0.0.1:{proxy_port}/v1", "--compare-pid",
             str(proxy.pid), "--sim-port", str(sim_port), "--pin", "--keys", "--redis-url", REDIS_URL,
             "--predictor", "off", "--json", str(out)],
            capture_output=True, text=True, timeout=220)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    finally:
        proxy.terminate()
        proxy.wait(timeout=10)
    assert "compared proxy" in result.stdout
    data = json.loads(out.read_text())
    config = data["config"]
    assert config["arms"] == ["direct", "gateway", "compare"]
    assert config["keys"] is True and config["predictor"] == "off"
    assert config["pin"]["load"] and config["pin"]["sut"] and not set(config["pin"]["load"]) & set(config["pin"]["sut"])
    keys = expected_figure_keys(["zero"], ["off"], config["concurrency"], config["sweep"], arms=("gateway", "compare"))
    missing = [k for k in keys if k not in data["figures"]]
    assert not missing, missing
    compare = data["figures"]["tracing=off/zero/via=compare/c=1/cpu_ms_per_request"]
    assert compare["value"] is not None and compare["value"] >= 0  # the proxy's own CPU, from its pid
    assert not any(k.startswith("tracing=off/zero/c=1/") for k in data["figures"])  # no gRPC arm asked for
    for phase in data["phases"]:
        assert phase["ok"] == phase["requests"] > 0, phase["errors"]
        assert phase["tokens"] == 64 * phase["ok"], (phase["arm"], phase["tokens"])


def test_bad_compare_options_are_refused_with_a_message():
    for argv, message in (
            (["--compare-url", "http://127.0.0.1:1/v1"], "--compare-url needs --sim-port"),
            (["--compare-url", "ftp://x", "--sim-port", "9"], "expected an http:// or https:// base URL"),
            (["--compare-pid", "1"], "--compare-pid goes with --compare-url"),
            (["--pin", "0:0"], "share CPU"),
            (["--pin", "0:4096"], "not available here"),
            (["--floor", "--tls"], "--floor has no TLS"),
            (["--floor", "--via", "gateway"], "--via must include grpc")):
        result = subprocess.run([sys.executable, "-m", "routemesh.bench.main", "--quick", *argv],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 2, (argv, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr, (argv, result.stderr)
