"""README tables from `routemesh bench --json` files.

    python scripts/bench_markdown.py service.json local.json     the targets: a column per file and tracing setting
    python scripts/bench_markdown.py --sizing service.json       what one core of each service serves
    python scripts/bench_markdown.py --side-by-side peer.json    the compared proxy, the gateway and gRPC
    python scripts/bench_markdown.py --floor service.json        the floor (bench --floor), gRPC, and the difference
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from routemesh.bench.report import fmt_value, sizing

# (figure key without the tracing prefix, label); targets come from the JSON files themselves.
ROWS = [
    ("zero/c=1/added_ttft_p50_ms", "added TTFT p50, c=1 (ms)"),
    ("zero/c=1/added_ttft_p99_ms", "added TTFT p99, c=1 (ms)"),
    ("zero/via=gateway/c=1/added_ttft_p50_ms", "gateway: added TTFT p50, c=1 (ms)"),
    ("zero/c=1/gateway_added_ttft_p50_ms", "gateway TTFT p50 over gRPC, c=1 (ms)"),
    ("realistic/c=1/added_ttft_p50_ms", "added TTFT p50, c=1, realistic (ms)"),
    ("realistic/c=1/added_gap_p50_ms", "added gap between tokens p50, c=1 (ms)"),
    ("realistic/c=1/added_gap_p99_ms", "added gap between tokens p99, c=1 (ms)"),
    ("realistic/c=1/total_duration_ratio", "realistic total duration / direct, c=1"),
    ("realistic/c=16/total_duration_ratio", "realistic total duration / direct, c=16"),
    ("realistic/c=64/total_duration_ratio", "realistic total duration / direct, c=64"),
    ("zero/c=64/tokens_per_s", "relayed tokens/s, 64 streams"),
    ("zero/short_requests_per_s", "short requests/s with added p99 ≤ 50 ms"),
    ("zero/via=gateway/short_requests_per_s", "gateway: short requests/s with added p99 ≤ 50 ms"),
    ("zero/c=1/cpu_ms_per_request", "CPU per request, c=1 (ms)"),
    ("zero/c=16/cpu_ms_per_request", "CPU per request, c=16 (ms)"),
    ("zero/c=64/cpu_ms_per_request", "CPU per request, c=64 (ms)"),
    ("zero/c=16/gateway_added_cpu_ms_per_request", "gateway CPU per request over gRPC, c=16 (ms)"),
    ("zero/c=64/cpu_ms_per_token", "CPU per relayed token, c=64 (ms)"),
    ("realistic/c=64/cpu_ms_per_token", "CPU per paced token, c=64, realistic (ms)"),
]
MICRO = [("micro/decision_p99_us", "decision p99, 20 candidates (µs)"),
         ("micro/classifier_p99_us", "classifier p99, 2,000 tokens (µs)"),
         ("micro/key_check_p99_us", "API-key check p99, verdict cached (µs)"),
         ("micro/ledger_record_p99_us", "ledger record p99, router (µs)")]


def cell(fig: dict | None) -> str:
    if fig is None:
        return "—"
    mark = {True: " ✓", False: " ✗", None: ""}[fig.get("pass")]
    return fmt_value(fig["value"]) + mark


def target_text(fig: dict | None) -> str:
    if not fig or not fig.get("target"):
        return ""
    t = fig["target"]
    limit = f"{t['limit']:,.0f}" if t["limit"] >= 1000 else f"{t['limit']:g}"
    return f"{'≤' if t['op'] == '<=' else '≥'} {limit}"


SIDE_BY_SIDE = [
    ("zero/{via}c=1/added_ttft_p50_ms", "added TTFT p50, one stream (ms)"),
    ("zero/{via}c=1/added_ttft_p99_ms", "added TTFT p99, one stream (ms)"),
    ("zero/{via}c=16/cpu_ms_per_request", "CPU ms per streamed request, 16 streams"),
    ("zero/{via}c=1/requests_per_s", "requests/s, one stream"),
    ("zero/{via}short_requests_per_s", "short requests/s with added p99 ≤ 50 ms"),
    ("realistic/{via}c=16/total_duration_ratio", "realistic answer, 16 streams, wall / direct"),
    ("realistic/{via}c=16/cpu_ms_per_token", "CPU ms per paced token, 16 streams"),
]


def side_by_side(path: str) -> None:
    run = json.loads(Path(path).read_text())
    tracing = run["config"]["tracing"][0]
    arms = [("compare", "compared proxy"), ("gateway", "routemesh HTTP gateway"), ("through", "routemesh gRPC")]
    arms = [(arm, title) for arm, title in arms if arm in run["config"]["arms"]]
    print("| figure | " + " | ".join(title for _, title in arms) + " |")
    print("|---|" + "---|" * len(arms))
    for template, label in SIDE_BY_SIDE:
        cells = []
        for arm, _ in arms:
            fig = run["figures"].get(f"tracing={tracing}/" + template.format(via="" if arm == "through" else f"via={arm}/"))
            cells.append("—" if fig is None else fmt_value(fig["value"]))
        print(f"| {label} | " + " | ".join(cells) + " |")


# (figure id, its "over the floor" id, mode, concurrency, label)
FLOOR = [
    ("added_ttft_p50_ms", "floor_added_ttft_p50_ms", "zero", 1, "added TTFT p50, one stream (ms)"),
    ("added_ttft_p99_ms", "floor_added_ttft_p99_ms", "zero", 1, "added TTFT p99, one stream (ms)"),
    ("cpu_ms_per_request", "floor_added_cpu_ms_per_request", "zero", 16, "CPU per request, 16 streams (ms)"),
    ("cpu_ms_per_token", "floor_added_cpu_ms_per_token", "zero", 64, "CPU per relayed token, 64 streams (ms)"),
    ("cpu_ms_per_token", "floor_added_cpu_ms_per_token", "realistic", 64,
     "CPU per paced token, 64 streams, realistic (ms)"),
]


def floor_table(path: str) -> None:
    """Per tracing setting: the floor arm, routemesh's gRPC arm, and gRPC over the floor (per round, medians)."""
    run = json.loads(Path(path).read_text())
    figures, tracings = run["figures"], run["config"]["tracing"]
    print("| figure | target | " + " | ".join(f"floor (never traced), tracing-{t} run | routemesh gRPC, tracing {t} | "
                                           f"routemesh over the floor, tracing {t}" for t in tracings) + " |")
    print("|---|---|" + "---|---|---|" * len(tracings))
    for fid, over, mode, c, label in FLOOR:
        cells, target = [], ""
        for tracing in tracings:
            grpc = figures.get(f"tracing={tracing}/{mode}/c={c}/{fid}")
            target = target or target_text(grpc)
            cells += [cell(figures.get(f"tracing={tracing}/{mode}/via=floor/c={c}/{fid}")), cell(grpc),
                      cell(figures.get(f"tracing={tracing}/{mode}/c={c}/{over}"))]
        print(f"| {label} | {target} | " + " | ".join(cells) + " |")


def sizing_table(path: str) -> None:
    run = json.loads(Path(path).read_text())
    # Recomputed from the phases, so a run's table follows report.sizing as it is now.
    tables = {tracing: sizing(run["phases"], tracing) for tracing in run["config"]["tracing"]}
    for tracing, table in tables.items():
        print(f"\ntracing {tracing}\n")
        print("| service | CPU ms per short request | requests/s per core | CPU ms per paced token | tokens/s per core |")
        print("|---|---|---|---|---|")
        for service, row in table.items():
            print(f"| {service} | {fmt_value(row['cpu_ms_per_request'])} | {fmt_value(row['requests_per_s_per_core'])} | "
                  f"{fmt_value(row['cpu_ms_per_paced_token'])} | {fmt_value(row['tokens_per_s_per_core'])} |")


def main(paths: list[str]) -> None:
    if paths[:1] == ["--sizing"]:
        sizing_table(paths[1])
        return
    if paths[:1] == ["--side-by-side"]:
        side_by_side(paths[1])
        return
    if paths[:1] == ["--floor"]:
        floor_table(paths[1])
        return
    runs = [(Path(p).stem, json.loads(Path(p).read_text())) for p in paths]
    columns = [(f"{name}, tracing {tracing}", run["figures"], tracing)
               for name, run in runs for tracing in run["config"]["tracing"]][::-1]
    columns.sort(key=lambda c: (c[0].split(",")[0] != runs[0][0], c[2] != "on"))
    print("| figure | target | " + " | ".join(c[0] for c in columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    for key, label in ROWS:
        figs = [c[1].get(f"tracing={c[2]}/{key}") for c in columns]
        if not any(figs):  # a figure none of these runs measured (another mode, concurrency or arm)
            continue
        target = next((target_text(f) for f in figs if f), "")
        print(f"| {label} | {target} | " + " | ".join(cell(f) for f in figs) + " |")
    micro = runs[0][1]["figures"]
    for key, label in MICRO:
        fig = micro.get(key)
        print(f"| {label} | {target_text(fig)} | {cell(fig)} (in process) |" + " |" * (len(columns) - 1))


if __name__ == "__main__":
    main(sys.argv[1:])
