"""`routemesh alerts`: the alerts firing now and those resolved lately, from telemetry (ListAlerts)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import grpc
from google.protobuf.json_format import MessageToDict

from routemesh.clitext import print_rpc_error
from routemesh.common.tls import blocking_channel
from routemesh.v1 import telemetry_pb2, telemetry_pb2_grpc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--telemetry", default=os.environ.get("ROUTEMESH_TELEMETRY_ADDR", "127.0.0.1:50053"),
                        help="telemetry address (env ROUTEMESH_TELEMETRY_ADDR)")
    parser.add_argument("--resolved", type=int, default=10, help="how many resolved alerts to list (newest first)")
    parser.add_argument("--format", choices=("text", "json"), default="text")


def ago(ms: int, now_ms: int) -> str:
    seconds = max(0, (now_ms - ms) // 1000)
    if seconds < 120:
        return f"{seconds}s"
    return f"{seconds // 60}m" if seconds < 7200 else f"{seconds // 3600}h"


def render(reply: telemetry_pb2.ListAlertsResponse, now_ms: int) -> str:
    """Firing alerts, then resolved ones, one line each."""
    lines = [f"firing: {len(reply.firing)}"]
    lines += [f"  {a.severity.upper():8} {a.rule} [{a.subject}] for {ago(a.started_at_ms, now_ms)}: {a.summary}"
              for a in reply.firing]
    if reply.resolved:
        lines += ["", "resolved lately:"]
        lines += [f"  {a.rule} [{a.subject}] {ago(a.resolved_at_ms, now_ms)} ago, after "
                  f"{ago(a.started_at_ms, a.resolved_at_ms)}: {a.summary}" for a in reply.resolved]
    return "\n".join(lines)


def footer(reply: telemetry_pb2.ListAlertsResponse) -> list[str]:
    """`routemesh top`'s lines about alerts: the firing ones, or none."""
    if not reply.firing:
        return []
    return ["", f"alerts firing: {len(reply.firing)}"] + [f"  {a.severity}: {a.summary}" for a in reply.firing[:5]]


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.resolved <= 500:
        print("routemesh alerts: --resolved must be 0 to 500", file=sys.stderr)
        return 2
    with blocking_channel(args.telemetry) as channel:
        try:
            reply = telemetry_pb2_grpc.TelemetryServiceStub(channel).ListAlerts(
                telemetry_pb2.ListAlertsRequest(resolved_limit=args.resolved or 1), timeout=5)
        except grpc.RpcError as exc:
            return print_rpc_error("routemesh alerts", exc)
    if not args.resolved:
        del reply.resolved[:]
    if args.format == "json":
        print(json.dumps(MessageToDict(reply), indent=2))
    else:
        print(render(reply, time.time_ns() // 1_000_000))
    return 0
