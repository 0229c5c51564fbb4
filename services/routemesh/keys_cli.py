"""`routemesh keys create|list|revoke|rotate`: caller API keys, through the control plane (admin)."""

from __future__ import annotations

import argparse
import datetime
import os

import grpc

from routemesh.clitext import print_rpc_error
from routemesh.common.tls import blocking_channel
from routemesh.v1 import control_pb2, control_pb2_grpc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--control", default=os.environ.get("ROUTEMESH_CONTROL_ADDR", "127.0.0.1:50055"))
    sub = parser.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    create = sub.add_parser("create", help="make a key; its secret is printed once")
    create.add_argument("--tenant", required=True)
    create.add_argument("--name", default="")
    create.add_argument("--project", default="")
    create.add_argument("--model", action="append", default=[], help="a model it may use (repeatable; default all)")
    create.add_argument("--route", action="append", default=[], help="a route it may name (repeatable; default all)")
    create.add_argument("--rpm", type=int, default=0, help="requests per minute (0: no limit of its own)")
    create.add_argument("--tpm", type=int, default=0, help="tokens per minute (0: no limit of its own)")
    create.add_argument("--budget-usd", type=float, default=0.0, help="spend per --period (0: none)")
    create.add_argument("--period", choices=("day", "month"), default="month")
    create.add_argument("--expires-in-days", type=float, default=0.0, help="0: never")
    create.add_argument("--admin", action="store_true", help="may also manage the control plane")
    sub.add_parser("list", help="every key's settings, state, requests and spend (never a secret)")
    for name, text in (("revoke", "stop a key from working"), ("rotate", "give a key a new secret")):
        sub.add_parser(name, help=text).add_argument("key_id")


def _when(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).strftime("%Y-%m-%d %H:%M") if ms else "-"


def _print(key: control_pb2.ApiKey) -> None:
    limits = ", ".join(part for part in (f"rpm {key.rpm}" if key.rpm else "", f"tpm {key.tpm}" if key.tpm else "",
                                         f"${key.budget_usd:g}/{key.budget_period}" if key.budget_usd else "") if part)
    scope = ", ".join(part for part in (f"models {','.join(key.allowed_models)}" if key.allowed_models else "",
                                        f"routes {','.join(key.allowed_routes)}" if key.allowed_routes else "") if part)
    print(f"{key.key_id}  {key.state:<8} {key.role:<5} tenant {key.tenant}"
          + (f"/{key.project}" if key.project else "") + (f"  {key.name}" if key.name else "")
          + f"  created {_when(key.created_at_ms)}  expires {_when(key.expires_at_ms)}"
          + (f"  [{limits}]" if limits else "") + (f"  [{scope}]" if scope else ""))


def _print_usage(key: control_pb2.ApiKey) -> None:
    """The key's requests and spend today and this month (UTC), and how much of its budget is gone."""
    today, month = key.today, key.this_month
    budget = f"  budget {key.budget_spent_usd / key.budget_usd:.1%} used of ${key.budget_usd:g}/{key.budget_period}" \
        if key.budget_usd else ""
    print(f"    today {today.requests} req ({today.errors} failed) ${today.cost_usd:.6f}  "
          f"this month {month.requests} req ({month.errors} failed) ${month.cost_usd:.6f}"
          f", {month.input_tokens} in / {month.output_tokens} out tokens{budget}")


def run(args: argparse.Namespace) -> int:
    with blocking_channel(args.control) as channel:
        stub = control_pb2_grpc.ControlPlaneServiceStub(channel)
        try:
            if args.keys_command == "create":
                reply = stub.CreateKey(control_pb2.CreateKeyRequest(
                    tenant=args.tenant, name=args.name, project=args.project, role="admin" if args.admin else "user",
                    allowed_models=args.model, allowed_routes=args.route, rpm=args.rpm, tpm=args.tpm,
                    budget_usd=args.budget_usd, budget_period=args.period,
                    expires_in_s=args.expires_in_days * 86_400), timeout=10)
                _print(reply.key)
                print(f"key (shown once, keep it secret): {reply.secret}")
            elif args.keys_command == "list":
                for key in stub.ListKeys(control_pb2.ListKeysRequest(), timeout=10).keys:
                    _print(key)
                    _print_usage(key)
            elif args.keys_command == "revoke":
                _print(stub.RevokeKey(control_pb2.RevokeKeyRequest(key_id=args.key_id), timeout=10).key)
            else:
                reply = stub.RotateKey(control_pb2.RotateKeyRequest(key_id=args.key_id), timeout=10)
                _print(reply.key)
                print(f"new key (shown once; the old one no longer works): {reply.secret}")
        except grpc.RpcError as exc:
            return print_rpc_error(f"routemesh keys {args.keys_command}", exc)
    return 0
