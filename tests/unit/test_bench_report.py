"""The bench report: per-round added and ratio figures, medians and spreads, targets, and the figure keys."""

from __future__ import annotations

import io

from routemesh.bench.report import build_figures, expected_figure_keys, print_table
from routemesh.bench.stats import spread
from routemesh.common.stats import percentile


def _phase(mode: str, round_no: int, c: int, arm: str, ttft: float, total: float, wall: float,
           chunks: int, cpu: dict[str, float]) -> dict:
    gap = 20.0 if mode == "realistic" else None
    return {"tracing": "off", "mode": mode, "round": round_no, "concurrency": c, "arm": arm, "requests": 10,
            "ok": 10, "failed": 0, "errors": [], "wall_s": wall, "tokens": 640, "chunks": chunks,
            "ttft_ms": [ttft] * 10, "total_ms": [total] * 10,
            "gap_ms": {"count": 630, "mean": gap, "p50": gap, "p90": gap, "p99": gap, "max": gap},
            "tokens_per_chunk": {}, "cpu_ms": cpu, "trace_exports": 0, "trace_export_bytes": 0}


def _phases() -> list[dict]:
    phases = []
    for r in (1, 2, 3):
        for c in (1, 64):
            phases.append(_phase("zero", r, c, "direct", 2.0, 5.0, 0.01 * c, 640, {"sim": 10.0, "router": 0.0}))
            phases.append(_phase("zero", r, c, "through", 2.0 + r, 5.0 + r, 0.02 * c, 10,
                                 {"sim": 10.0, "router": 20.0, "executor": 10.0, "bench-client": 99.0}))
            phases.append(_phase("realistic", r, c, "direct", 200.0, 1460.0, 1.5, 640, {"sim": 10.0}))
            phases.append(_phase("realistic", r, c, "through", 201.0, 1460.0 * (1 + r / 100), 1.5, 640, {}))
    return phases


def test_figures_are_medians_of_per_round_differences_with_their_spread():
    micro = {"decision": {"p50_us": 50.0, "p99_us": 250.0}, "classifier": {"p50_us": 300.0, "p99_us": 600.0}}
    figures = build_figures(_phases(), micro, ["zero", "realistic"], ["off"], [1, 64])
    assert set(expected_figure_keys(["zero", "realistic"], ["off"], [1, 64])) <= set(figures)

    ttft = figures["tracing=off/zero/c=1/added_ttft_p50_ms"]
    assert (ttft["value"], ttft["spread"], ttft["pass"]) == (2.0, [1.0, 3.0], True)
    ratio = figures["tracing=off/realistic/c=1/total_duration_ratio"]
    assert round(ratio["value"], 6) == 1.02 and ratio["pass"] is False
    assert figures["tracing=off/zero/c=64/tokens_per_chunk"]["value"] == 64
    # 10 requests, 640 tokens in 1.28 s at c=64; CPU per request counts routemesh's processes only.
    tokens = figures["tracing=off/zero/c=64/tokens_per_s"]
    assert tokens["value"] == 500 and tokens["target"]["limit"] == 20_000 and tokens["pass"] is False
    assert figures["tracing=off/zero/c=1/tokens_per_s"]["target"] is None
    cpu = figures["tracing=off/zero/c=1/cpu_ms_per_request"]
    assert (cpu["value"], cpu["direct"]["median"], cpu["through"]["median"]) == (3.0, 1.0, 4.0)
    # Added p99 is 1-3 ms at both concurrencies, so the best through rate qualifies: 10 / 0.02 s.
    assert figures["tracing=off/zero/short_requests_per_s"]["value"] == 500
    assert figures["micro/decision_p99_us"]["pass"] is False
    assert figures["micro/classifier_p99_us"]["pass"] is True

    out = io.StringIO()
    print_table(figures, out)
    assert "added TTFT p50 ms (c=1)" in out.getvalue() and "FAIL" in out.getvalue()


def test_percentiles_interpolate_and_spread_skips_missing_rounds():
    assert percentile(list(range(1, 101)), 0.99) == 99.01
    assert percentile([5.0], 0.5) == 5.0 and percentile([], 0.5) == 0.0
    assert spread([3.0, None, 1.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "rounds": [3.0, None, 1.0]}


def test_zero_mode_sweep_levels_feed_the_short_request_figure_only_where_added_p99_fits():
    phases = []
    for r in (1, 2, 3):
        for c, through_total, wall in ((1, 10.0, 0.05), (8, 40.0, 0.02), (64, 200.0, 0.01)):
            phases.append(_phase("zero", r, c, "direct", 1.0, 2.0, 0.005, 640, {"sim": 10.0}))
            phases.append(_phase("zero", r, c, "through", 3.0, through_total, wall, 10, {"router": 20.0}))
        for c in (1, 64):
            phases.append(_phase("realistic", r, c, "direct", 200.0, 1460.0, 1.5, 640, {}))
            phases.append(_phase("realistic", r, c, "through", 201.0, 1470.0, 1.5, 640, {}))
    figures = build_figures(phases, {}, ["zero", "realistic"], ["off"], [1, 64], sweep=[8])
    keys = expected_figure_keys(["zero", "realistic"], ["off"], [1, 64], sweep=[8])
    assert set(keys) <= set(figures)
    assert "tracing=off/zero/c=8/requests_per_s" in keys
    assert not any(k.startswith("tracing=off/realistic/c=8/") for k in keys)
    # c=64 is fastest (1,000 req/s) but adds 198 ms at p99; c=8 adds 38 ms at 500 req/s.
    assert figures["tracing=off/zero/short_requests_per_s"]["value"] == 500


def test_staggered_streams_start_spread_over_the_given_time():
    import asyncio
    import time

    from routemesh.bench.workload import Sample, run_phase

    class Clock:
        name = "clock"

        def __init__(self) -> None:
            self.starts: list[float] = []

        async def one(self, index: int) -> Sample:
            self.starts.append(time.perf_counter())
            await asyncio.sleep(0.2)
            return Sample(ok=True)

    arm = Clock()
    run = asyncio.run(run_phase(arm, 8, 4, 5.0, stagger_s=0.2))  # type: ignore[arg-type]
    first = sorted(arm.starts)[:4]
    offsets = [round((t - first[0]) * 1000) for t in first]
    assert all(abs(got - want) < 30 for got, want in zip(offsets, (0, 50, 100, 150), strict=True)), offsets
    assert len(run.samples) == 8


def test_the_cached_key_check_is_a_micro_figure_with_its_50_us_target():
    micro = {"key_check": {"p50_us": 6.0, "p99_us": 9.0}, "key_usage": {"p50_us": 2.0, "p99_us": 4.0},
             "ledger_record": {"p50_us": 9.5, "p99_us": 60.0}}
    figures = build_figures([], micro, ["zero"], ["off"], [1])
    assert {"micro/key_check_p99_us", "micro/key_usage_p50_us"} <= set(expected_figure_keys(["zero"], ["off"], [1]))
    check = figures["micro/key_check_p99_us"]
    assert (check["value"], check["target"]["limit"], check["pass"]) == (9.0, 50, True)
    assert figures["micro/key_usage_p99_us"]["target"] is None
    ledger = figures["micro/ledger_record_p99_us"]
    assert (ledger["value"], ledger["target"]["limit"], ledger["pass"]) == (60.0, 50, False)
    out = io.StringIO()
    print_table({k: v for k, v in figures.items() if k.startswith("micro/")}, out)
    assert "key check (cached) p99 µs" in out.getvalue() and "≤ 50 µs" in out.getvalue()


def test_gateway_and_compared_arms_get_their_own_figures_and_the_gateway_is_held_to_grpc_plus_1_ms():
    phases = []
    for r in (1, 2, 3):
        phases.append(_phase("zero", r, 1, "direct", 1.0, 2.0, 0.01, 640, {"sim": 10.0, "compare": 0.0}))
        phases.append(_phase("zero", r, 1, "through", 3.0, 5.0, 0.02, 10, {"router": 30.0, "compare": 1.0}))
        phases.append(_phase("zero", r, 1, "gateway", 3.5 + r, 6.0, 0.02, 10,
                             {"router": 30.0, "gateway": 5.0 + 10 * r, "compare": 1.0}))
        # The compared proxy's CPU is its own process's; routemesh's idle processes are not charged to it.
        phases.append(_phase("zero", r, 1, "compare", 9.0, 12.0, 0.05, 640, {"router": 2.0, "compare": 80.0}))
    figures = build_figures(phases, {}, ["zero"], ["off"], [1])
    assert set(expected_figure_keys(["zero"], ["off"], [1], arms=("through", "gateway", "compare"))) <= set(figures)
    ttft = figures["tracing=off/zero/c=1/gateway_added_ttft_p50_ms"]
    assert (ttft["value"], ttft["spread"], ttft["target"]["limit"], ttft["pass"]) == (2.5, [1.5, 3.5], 1, False)
    cpu = figures["tracing=off/zero/c=1/gateway_added_cpu_ms_per_request"]
    assert cpu["value"] == 2.5 and cpu["pass"] is False  # the gateway process: 15, 25, 35 ms over 10 requests
    assert figures["tracing=off/zero/c=1/cpu_ms_per_request"]["value"] == 3.0  # gRPC: not charged the proxy
    assert figures["tracing=off/zero/via=compare/c=1/cpu_ms_per_request"]["value"] == 8.0
    assert figures["tracing=off/zero/via=compare/c=1/added_ttft_p50_ms"]["value"] == 8.0
    assert figures["tracing=off/zero/via=compare/c=1/added_ttft_p50_ms"]["target"] is None
    out = io.StringIO()
    print_table(figures, out)
    assert "compared proxy" in out.getvalue() and "gateway against gRPC" in out.getvalue()


def test_the_floor_is_charged_its_own_processes_and_the_grpc_arm_is_compared_with_it_round_by_round():
    phases = []
    floor_cpu = {"floor-router": 6.0, "floor-classifier": 2.0, "floor-executor": 7.0}
    for r in (1, 2, 3):
        phases.append(_phase("zero", r, 1, "direct", 1.0, 2.0, 0.01, 640, {"sim": 10.0, **floor_cpu}))
        # routemesh's arm is not charged the idle floor's processes, nor the floor routemesh's.
        phases.append(_phase("zero", r, 1, "through", 4.0 + r, 6.0, 0.02, 10,
                             {"sim": 10.0, "router": 30.0, "executor": 20.0, **floor_cpu}))
        phases.append(_phase("zero", r, 1, "floor", 3.0, 5.0, 0.02, 10,
                             {"sim": 10.0, "router": 1.0, "floor-router": 10.0 * r, "floor-classifier": 5.0,
                              "floor-executor": 15.0}))
    figures = build_figures(phases, {}, ["zero"], ["off"], [1])
    assert set(expected_figure_keys(["zero"], ["off"], [1], arms=("through", "floor"))) <= set(figures)
    assert figures["tracing=off/zero/c=1/cpu_ms_per_request"]["value"] == 5.0  # router + executor: 50 / 10
    floor = figures["tracing=off/zero/via=floor/c=1/cpu_ms_per_request"]
    assert (floor["value"], floor["spread"], floor["target"]) == (4.0, [3.0, 5.0], None)  # 30, 40, 50 ms / 10
    assert figures["tracing=off/zero/via=floor/c=1/added_ttft_p50_ms"]["value"] == 2.0
    ttft = figures["tracing=off/zero/c=1/floor_added_ttft_p50_ms"]  # the gRPC arm over the floor, per round
    assert (ttft["value"], ttft["spread"], ttft["direct"]["median"], ttft["through"]["median"]) == \
        (3.0, [2.0, 4.0], 3.0, 6.0)
    cpu = figures["tracing=off/zero/c=1/floor_added_cpu_ms_per_request"]
    assert (cpu["value"], cpu["spread"]) == (1.0, [0.0, 2.0])  # 5 against 3, 4, 5
    assert figures["tracing=off/zero/c=1/floor_added_cpu_ms_per_token"]["value"] == 1.0 / 64
    out = io.StringIO()
    print_table(figures, out)
    assert "routemesh gRPC against the floor" in out.getvalue() and "bare Python gRPC" in out.getvalue()


def test_issue_16_targets_local_classifier_and_throughput_only_figures():
    from routemesh.bench.report import targets_for

    assert targets_for("service")["added_ttft_p50_ms"].limit == 2.5
    assert targets_for("local")["added_ttft_p50_ms"].limit == 2
    phases = [_phase("realistic", 1, c, arm, 200.0, 1460.0 * (1.5 if arm == "through" else 1), 1.5, 640, {})
              for c in (1, 64, 256) for arm in ("direct", "through")]
    phases += [_phase("zero", 1, c, arm, 1.0, 2.0, 0.01, 640, {"router": 10.0}) for c in (16, 64)
               for arm in ("direct", "through")]
    figures = build_figures(phases, {}, ["zero", "realistic"], ["off"], [1, 16, 64, 256], classifier="local")
    assert figures["tracing=off/realistic/c=64/total_duration_ratio"]["target"]["limit"] == 1.01
    assert figures["tracing=off/realistic/c=256/total_duration_ratio"]["target"] is None  # retired on 2 cores
    assert figures["tracing=off/zero/c=64/cpu_ms_per_token"]["target"]["limit"] == 0.04
    assert figures["tracing=off/zero/c=16/cpu_ms_per_token"]["target"] is None
    assert figures["tracing=off/realistic/c=1/added_ttft_p50_ms"]["target"]["limit"] == 2


def test_pinning_parses_cpu_lists_and_moves_every_thread_of_a_process():
    import os
    import subprocess
    import sys

    import pytest

    from routemesh.bench.system import Pinning

    pin = Pinning.parse("0-1:2,3", available={0, 1, 2, 3})
    assert (pin.load, pin.sut) == ({0, 1}, {2, 3})
    auto = Pinning.parse("auto", available={0, 1})
    assert (auto.load, auto.sut) == ({0}, {1})
    for bad, message in (("0", "expected auto or LOAD:SUT"), ("0:0", "share"), ("0:9", "not available"),
                         ("a:1", "not a CPU"), (":1", "empty")):
        with pytest.raises(ValueError, match=message):
            Pinning.parse(bad, available={0, 1})
    cpus = sorted(os.sched_getaffinity(0))
    assert len(cpus) >= 2, "every machine of ours has 2 CPUs or more"
    child = subprocess.Popen([sys.executable, "-c", "import threading, time\n"
                              "threading.Thread(target=time.sleep, args=(30,)).start(); time.sleep(30)"])
    try:
        import time

        time.sleep(0.5)
        Pinning({cpus[0]}, {cpus[1]}).place(child.pid, load=False)
        tasks = os.listdir(f"/proc/{child.pid}/task")
        assert len(tasks) >= 2
        assert all(os.sched_getaffinity(int(t)) == {cpus[1]} for t in tasks)
    finally:
        child.kill()
        child.wait()


def test_sizing_gives_each_service_its_requests_and_paced_tokens_per_core():
    from routemesh.bench.report import print_sizing, sizing

    phases = []
    for r in (1, 2, 3):
        phases.append(_phase("zero", r, 16, "gateway", 3.0, 5.0, 0.02, 10,
                             {"router": 10.0 * r, "executor": 8.0, "gateway": 5.0}))
        phases.append(_phase("zero", r, 16, "through", 3.0, 5.0, 0.02, 10, {"router": 99.0}))
        phases.append(_phase("realistic", r, 64, "gateway", 200.0, 1460.0, 1.5, 640,
                             {"router": 64.0, "executor": 32.0, "gateway": 6.4}))
    table = sizing(phases, "off")
    assert table["router"]["cpu_ms_per_request"] == 2.0 and table["router"]["requests_per_s_per_core"] == 500
    assert table["executor"]["tokens_per_s_per_core"] == 20_000 and table["gateway"]["cpu_ms_per_paced_token"] == 0.01
    assert "classifier" not in table  # no such process in the run (as the gateway, when the router serves HTTP)
    out = io.StringIO()
    print_sizing({"off": table}, out)
    assert "requests/s/core" in out.getvalue() and "gateway" in out.getvalue()
