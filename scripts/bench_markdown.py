"""The README's results table from `routemesh bench --json` files: one column per file and tracing setting.

    python scripts/bench_markdown.py service.json local.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from routemesh.bench.report import fmt_value

# (figure key without the tracing prefix, label); targets come from the JSON files themselves.
ROWS = [
    ("zero/c=1/added_ttft_p50_ms", "added TTFT p50, c=1 (ms)"),
    ("zero/c=1/added_ttft_p99_ms", "added TTFT p99, c=1 (ms)"),
    ("realistic/c=1/added_ttft_p50_ms", "added TTFT p50, c=1, realistic (ms)"),
    ("realistic/c=1/added_gap_p50_ms", "added gap between tokens p50, c=1 (ms)"),
    ("realistic/c=1/added_gap_p99_ms", "added gap between tokens p99, c=1 (ms)"),
    ("realistic/c=1/total_duration_ratio", "realistic total duration / direct, c=1"),
    ("realistic/c=16/total_duration_ratio", "realistic total duration / direct, c=16"),
    ("realistic/c=64/total_duration_ratio", "realistic total duration / direct, c=64"),
    ("realistic/c=256/total_duration_ratio", "realistic total duration / direct, c=256"),
    ("zero/c=64/tokens_per_s", "relayed tokens/s, 64 streams"),
    ("zero/short_requests_per_s", "short requests/s with added p99 ≤ 50 ms"),
    ("zero/c=16/requests_per_s", "requests/s, 16 streams (any p99)"),
    ("zero/c=1/cpu_ms_per_request", "CPU per request, c=1 (ms)"),
    ("zero/c=16/cpu_ms_per_request", "CPU per request, c=16 (ms)"),
    ("zero/c=64/cpu_ms_per_request", "CPU per request, c=64 (ms)"),
    ("zero/c=16/cpu_ms_per_token", "CPU per relayed token, c=16 (ms)"),
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


def main(paths: list[str]) -> None:
    runs = [(Path(p).stem, json.loads(Path(p).read_text())) for p in paths]
    columns = [(f"{name}, tracing {tracing}", run["figures"], tracing)
               for name, run in runs for tracing in run["config"]["tracing"]][::-1]
    columns.sort(key=lambda c: (c[0].split(",")[0] != runs[0][0], c[2] != "on"))
    print("| figure | target | " + " | ".join(c[0] for c in columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    for key, label in ROWS:
        figs = [c[1].get(f"tracing={c[2]}/{key}") for c in columns]
        target = next((target_text(f) for f in figs if f), "")
        print(f"| {label} | {target} | " + " | ".join(cell(f) for f in figs) + " |")
    micro = runs[0][1]["figures"]
    for key, label in MICRO:
        fig = micro.get(key)
        print(f"| {label} | {target_text(fig)} | {cell(fig)} (in process) |" + " |" * (len(columns) - 1))


if __name__ == "__main__":
    main(sys.argv[1:])
