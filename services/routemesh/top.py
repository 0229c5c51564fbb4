"""`routemesh top`: a refreshing terminal view of every model's live health, latency, errors, circuit and spend."""

from __future__ import annotations

import argparse
import os
import sys
import time

import grpc

from routemesh.alerts_cli import footer as alert_footer
from routemesh.clitext import print_rpc_error
from routemesh.common.tls import blocking_channel
from routemesh.v1 import telemetry_pb2, telemetry_pb2_grpc

_CIRCUIT = {telemetry_pb2.CIRCUIT_STATE_OPEN: "OPEN", telemetry_pb2.CIRCUIT_STATE_HALF_OPEN: "half-open",
            telemetry_pb2.CIRCUIT_STATE_CLOSED: "closed"}
_COLUMNS = ("model", "samples", "ttft p50", "p90", "p99", "tpot p50", "errors", "in-flight", "req/min",
            "tok/min", "circuit", "$/min", "$ total")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--telemetry", default=os.environ.get("ROUTEMESH_TELEMETRY_ADDR", "127.0.0.1:50053"),
                        help="telemetry address (env ROUTEMESH_TELEMETRY_ADDR)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    parser.add_argument("--once", action="store_true", help="print one snapshot and exit")


def render(snapshot: telemetry_pb2.GetSnapshotResponse, alerts: telemetry_pb2.ListAlertsResponse | None = None) -> str:
    """The snapshot as an aligned table, with the alerts firing below it."""
    rows = [_COLUMNS]
    for h in sorted(snapshot.models, key=lambda m: m.model):
        admit = f" {h.admit_fraction:.0%}" if h.circuit_state != telemetry_pb2.CIRCUIT_STATE_OPEN and \
            h.admit_fraction < 1 else ""
        rows.append((
            h.model, str(h.samples), f"{h.ttft_p50_ms:.0f}ms", f"{h.ttft_p90_ms:.0f}ms", f"{h.ttft_p99_ms:.0f}ms",
            f"{h.tpot_p50_ms:.1f}ms", f"{h.error_rate:.0%}", str(h.in_flight), str(h.requests_per_minute),
            str(h.tokens_per_minute), _CIRCUIT.get(h.circuit_state, "-") + admit,
            f"{h.spend_per_minute_usd:.4f}", f"{h.spend_total_usd:.4f}",
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths,
                                                                                                    strict=True)))
             for row in rows]
    stale = "  (STALE: telemetry's store is unreachable)" if any(h.stale for h in snapshot.models) else ""
    header = (f"routemesh top — policy v{snapshot.policy_version}, window {snapshot.window_seconds}s, "
              f"{time.strftime('%H:%M:%S')}{stale}")
    footer = []
    if snapshot.HasField("ledger"):
        ledger = snapshot.ledger
        footer = ["", f"ledger: {ledger.written:,} rows written, {ledger.buffered:,} buffered, {ledger.dropped:,} "
                      f"dropped" + ("" if ledger.healthy else f"; DATABASE NOT ANSWERING: {ledger.last_error}")]
    if alerts is not None:
        footer += alert_footer(alerts)
    return "\n".join([header, "", *lines, *footer])


def _alerts(stub: telemetry_pb2_grpc.TelemetryServiceStub) -> telemetry_pb2.ListAlertsResponse | None:
    try:
        return stub.ListAlerts(telemetry_pb2.ListAlertsRequest(resolved_limit=1), timeout=2)
    except grpc.RpcError:  # an older telemetry, or one refusing: the table is what top is for
        return None


def run(args: argparse.Namespace) -> int:
    with blocking_channel(args.telemetry) as channel:
        stub = telemetry_pb2_grpc.TelemetryServiceStub(channel)
        try:
            while True:
                try:
                    snapshot = stub.GetSnapshot(telemetry_pb2.GetSnapshotRequest(), timeout=2)
                except grpc.RpcError as exc:
                    if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                        print(f"routemesh top: telemetry unreachable at {args.telemetry} ({exc.code().name}); "
                              "is the mesh running? start it with: routemesh up", file=sys.stderr)
                    else:  # refused (an admin credential needed), or a bad answer: the message says which
                        print_rpc_error("routemesh top", exc)
                    if args.once:
                        return 1
                    time.sleep(args.interval)
                    continue
                table = render(snapshot, _alerts(stub))
                if args.once:
                    print(table)
                    return 0
                # Clear the screen and draw from the top, like top(1).
                sys.stdout.write("\x1b[H\x1b[2J" + table + "\n\n(Ctrl-C to quit)\n")
                sys.stdout.flush()
                time.sleep(args.interval)
        except KeyboardInterrupt:
            return 0
