"""`routemesh report`: per-variant requests, errors, latency and cost of experiments, read from telemetry.

With --keys: each API key's limits and its requests and spend, read from control (routemesh.keys_report).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, TextIO

import grpc

from routemesh.client import RoutemeshError
from routemesh.common.tls import blocking_channel
from routemesh.v1 import telemetry_pb2, telemetry_pb2_grpc

DEFAULT_TELEMETRY = "127.0.0.1:50053"
DEFAULT_CONTROL = "127.0.0.1:50055"
TIMEOUT_S = 5.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    default = os.environ.get("ROUTEMESH_TELEMETRY_ADDR") or DEFAULT_TELEMETRY
    parser.add_argument("--telemetry", default=default,
                        help=f"telemetry address (env ROUTEMESH_TELEMETRY_ADDR, default {DEFAULT_TELEMETRY})")
    parser.add_argument("--experiment", metavar="NAME", default="",
                        help="report only this experiment (default: every experiment seen)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--keys", action="store_true",
                        help="report API keys instead: limits, requests and spend today and this month, budget used "
                             "(from control, as admin)")
    control = os.environ.get("ROUTEMESH_CONTROL_ADDR") or DEFAULT_CONTROL
    parser.add_argument("--control", default=control,
                        help=f"control address for --keys and the ledger's prices (env ROUTEMESH_CONTROL_ADDR, default "
                             f"{DEFAULT_CONTROL})")
    from routemesh.ledger_report import add_arguments as add_ledger_arguments

    add_ledger_arguments(parser)


def fetch(
    address: str, experiment: str = "", timeout: float = TIMEOUT_S
) -> telemetry_pb2.GetExperimentReportResponse:
    with blocking_channel(address) as channel:
        stub = telemetry_pb2_grpc.TelemetryServiceStub(channel)
        return stub.GetExperimentReport(telemetry_pb2.GetExperimentReportRequest(experiment=experiment),
                                        timeout=timeout)


def _ratio(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


def rows(report: telemetry_pb2.GetExperimentReportResponse) -> list[dict[str, Any]]:
    """One dict per variant, with share of its experiment, error rate and cost per request derived."""
    totals: dict[str, int] = {}
    for v in report.variants:
        totals[v.experiment] = totals.get(v.experiment, 0) + v.requests
    return [
        {
            "experiment": v.experiment,
            "variant": v.variant,
            "requests": v.requests,
            "share": _ratio(v.requests, totals[v.experiment]),
            "errors": v.errors,
            "error_rate": _ratio(v.errors, v.requests),
            "ttft_p50_ms": v.ttft_p50_ms,
            "ttft_p95_ms": v.ttft_p95_ms,
            "duration_p50_ms": v.duration_p50_ms,
            "duration_p95_ms": v.duration_p95_ms,
            "cost_usd": v.cost_usd,
            "cost_per_request_usd": _ratio(v.cost_usd, v.requests),
            "models": dict(sorted(v.models.items(), key=lambda item: (-item[1], item[0]))),
        }
        for v in report.variants
    ]


def _model_mix(models: dict[str, int], requests: int) -> str:
    return ", ".join(f"{name} {_ratio(n, requests):.0%}" for name, n in models.items()) or "-"


# (header, row -> cell, right-aligned)
_COLUMNS = [
    ("experiment", lambda r: r["experiment"], False),
    ("variant", lambda r: r["variant"], False),
    ("requests", lambda r: str(r["requests"]), True),
    ("share", lambda r: f"{r['share']:.1%}", True),
    ("errors", lambda r: str(r["errors"]), True),
    ("error %", lambda r: f"{r['error_rate']:.1%}", True),
    ("ttft p50", lambda r: f"{r['ttft_p50_ms']:.0f} ms", True),
    ("ttft p95", lambda r: f"{r['ttft_p95_ms']:.0f} ms", True),
    ("dur p50", lambda r: f"{r['duration_p50_ms']:.0f} ms", True),
    ("dur p95", lambda r: f"{r['duration_p95_ms']:.0f} ms", True),
    ("cost", lambda r: f"${r['cost_usd']:.6f}", True),
    ("cost/req", lambda r: f"${r['cost_per_request_usd']:.6f}", True),
    ("models", lambda r: _model_mix(r["models"], r["requests"]), False),
]


def format_table(table_rows: list[dict[str, Any]], columns: list | None = None) -> str:
    """Rows under their headers, columns padded to their widest cell; `columns` as _COLUMNS (the default)."""
    columns = columns or _COLUMNS
    cells = [[cell(r) for _, cell, _ in columns] for r in table_rows]
    widths = [max([len(header)] + [len(row[i]) for row in cells])
              for i, (header, _, _) in enumerate(columns)]

    def line(values: list[str]) -> str:
        parts = [value.rjust(width) if right else value.ljust(width)
                 for value, width, (_, _, right) in zip(values, widths, columns, strict=True)]
        return "  ".join(parts).rstrip()

    return "\n".join([line([header for header, _, _ in columns])] + [line(row) for row in cells])


def print_report(report: telemetry_pb2.GetExperimentReportResponse, experiment: str, as_json: bool,
                 out: TextIO) -> None:
    table_rows = rows(report)
    if as_json:
        document = {"window_seconds": report.window_seconds, "variants": table_rows}
        print(json.dumps(document, indent=2), file=out)
        return
    if not table_rows:
        what = f"no requests of experiment {experiment!r}" if experiment else "no experiments"
        print(f"{what} seen in the last {report.window_seconds} s", file=out)
        return
    print(f"experiments over the last {report.window_seconds} s "
          "(latency over answered requests; errors: failed, truncated, or no first token)", file=out)
    print(format_table(table_rows), file=out)


def run(args: argparse.Namespace) -> int:
    """Fetch and print the report; 1 with a message on stderr when telemetry cannot answer."""
    if getattr(args, "keys", False):
        from routemesh.keys_report import run as run_keys_report

        return run_keys_report(args)
    if args.ledger or args.ledger_url:
        from routemesh.ledger_report import run as run_ledger_report

        return run_ledger_report(args)
    try:
        report = fetch(args.telemetry, args.experiment)
    except grpc.RpcError as exc:
        err = RoutemeshError.from_rpc_error(exc)
        code = err.code.name if err.code else "UNKNOWN"
        if err.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) and not err.reason:
            print(f"routemesh report: telemetry unreachable at {args.telemetry} ({code}); "
                  "is the mesh running? start it with: routemesh up", file=sys.stderr)
        else:
            print(f"routemesh report: {code}: {err.message}", file=sys.stderr)
            for field, what in err.field_violations:
                print(f"  {field}: {what}", file=sys.stderr)
        return 1
    print_report(report, args.experiment, args.json, sys.stdout)
    return 0
