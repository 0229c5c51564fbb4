"""`routemesh report --keys`: each API key's limits, and its requests and spend today and this month, from control."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

import grpc

from routemesh.client import RoutemeshError
from routemesh.clitext import print_rpc_error
from routemesh.common.tls import blocking_channel
from routemesh.report import format_table
from routemesh.v1 import control_pb2, control_pb2_grpc

COMMAND = "routemesh report --keys"
TIMEOUT_S = 10.0


def fetch(address: str, timeout: float = TIMEOUT_S) -> control_pb2.ListKeysResponse:
    with blocking_channel(address) as channel:
        return control_pb2_grpc.ControlPlaneServiceStub(channel).ListKeys(control_pb2.ListKeysRequest(),
                                                                          timeout=timeout)


def _usage(usage: control_pb2.KeyUsage) -> dict[str, Any]:
    return {"requests": usage.requests, "errors": usage.errors, "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens, "cost_usd": usage.cost_usd}


def rows(response: control_pb2.ListKeysResponse) -> list[dict[str, Any]]:
    """One dict per key: settings, usage today and this month, and the share of its budget spent (None: no budget)."""
    return [
        {
            "key_id": k.key_id, "name": k.name, "tenant": k.tenant, "project": k.project, "role": k.role,
            "state": k.state, "rpm": k.rpm, "tpm": k.tpm, "budget_usd": k.budget_usd,
            "budget_period": k.budget_period, "today": _usage(k.today), "this_month": _usage(k.this_month),
            "budget_spent_usd": k.budget_spent_usd,
            "budget_used": k.budget_spent_usd / k.budget_usd if k.budget_usd else None,
        }
        for k in response.keys
    ]


def _limits(r: dict[str, Any]) -> str:
    parts = [f"rpm {r['rpm']}" if r["rpm"] else "", f"tpm {r['tpm']}" if r["tpm"] else "",
             f"${r['budget_usd']:g}/{r['budget_period']}" if r["budget_usd"] else ""]
    return ", ".join(p for p in parts if p) or "-"


# (header, row -> cell, right-aligned)
COLUMNS = [
    ("key", lambda r: r["key_id"], False),
    ("name", lambda r: r["name"] or "-", False),
    ("tenant/project", lambda r: r["tenant"] + (f"/{r['project']}" if r["project"] else ""), False),
    ("role", lambda r: r["role"], False),
    ("state", lambda r: r["state"], False),
    ("limits", _limits, False),
    ("req today", lambda r: str(r["today"]["requests"]), True),
    ("cost today", lambda r: f"${r['today']['cost_usd']:.6f}", True),
    ("req month", lambda r: str(r["this_month"]["requests"]), True),
    ("errors month", lambda r: str(r["this_month"]["errors"]), True),
    ("cost month", lambda r: f"${r['this_month']['cost_usd']:.6f}", True),
    ("budget used", lambda r: "-" if r["budget_used"] is None else f"{r['budget_used']:.1%}", True),
]


def print_report(response: control_pb2.ListKeysResponse, as_json: bool, out: TextIO) -> None:
    table_rows = rows(response)
    if as_json:
        print(json.dumps({"usage_day": response.usage_day, "keys": table_rows}, indent=2), file=out)
        return
    if not table_rows:
        print("no API keys yet; make one with: routemesh keys create --tenant NAME", file=out)
        return
    print(f"API keys: usage on {response.usage_day} and this month (UTC), as the routers recorded it "
          "(about once a second); budget used is of the key's current period", file=out)
    print(format_table(table_rows, COLUMNS), file=out)


def run(args: argparse.Namespace) -> int:
    """Fetch and print every key's report; 1 with a message on stderr when control cannot answer."""
    try:
        response = fetch(args.control)
    except grpc.RpcError as exc:
        err = RoutemeshError.from_rpc_error(exc)
        if err.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) and not err.reason:
            print(f"{COMMAND}: control unreachable at {args.control} ({err.code.name}); is the mesh running? "
                  "start it with: routemesh up (or pass --control / ROUTEMESH_CONTROL_ADDR)", file=sys.stderr)
            return 1
        return print_rpc_error(COMMAND, exc)
    print_report(response, args.json, sys.stdout)
    return 0
