"""Entry point of the gateway: settings, serve HTTP until SIGTERM or SIGINT, drain in-flight streams."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal

from routemesh.common.tasks import split_listen
from routemesh.common.tracing import init_tracing, shutdown_tracing
from routemesh.gateway.server import DEFAULT_CONTROL, GatewayServer, start_gateway

__all__ = ["add_arguments", "run", "start_gateway", "GatewayServer"]

DEFAULT_LISTEN = "127.0.0.1:50057"


def _add_once(parser: argparse.ArgumentParser, flag: str, **kwargs: object) -> None:
    """Add `flag` unless the caller's parser already has it (`routemesh serve` adds --listen and others)."""
    if flag not in parser._option_string_actions:
        parser.add_argument(flag, **kwargs)  # type: ignore[arg-type]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument("--router", default=env("ROUTEMESH_ROUTER_ADDR", "127.0.0.1:50051"),
                        help="router address (env ROUTEMESH_ROUTER_ADDR); a DNS name with several replicas "
                             "is balanced round-robin")
    _add_once(parser, "--listen", default=env("ROUTEMESH_GATEWAY_LISTEN", DEFAULT_LISTEN),
              help=f"HOST:PORT to serve HTTP on (env ROUTEMESH_GATEWAY_LISTEN, default {DEFAULT_LISTEN})")
    _add_once(parser, "--control", default=env("ROUTEMESH_CONTROL_ADDR", DEFAULT_CONTROL),
              help="control-plane address, for the model list (env ROUTEMESH_CONTROL_ADDR)")
    _add_once(parser, "--grace-s", type=float, default=float(env("ROUTEMESH_GRACE_S", "30")),
              help="seconds in-flight streams get to finish on SIGTERM")
    parser.add_argument("--timeout-s", type=float, default=float(env("ROUTEMESH_GATEWAY_TIMEOUT_S", "300")),
                        help="upper bound of one chat, streaming included (env ROUTEMESH_GATEWAY_TIMEOUT_S)")


async def run(args: argparse.Namespace) -> None:
    """Serve until SIGTERM or SIGINT; then stop accepting and give in-flight requests up to --grace-s."""
    host, port = split_listen(args.listen, "routemesh gateway")
    init_tracing("routemesh-gateway")
    try:
        try:
            server = await start_gateway(args.router, host, port, control_address=args.control,
                                         grace_s=args.grace_s, timeout_s=args.timeout_s)
        except OSError as err:
            raise SystemExit(f"routemesh gateway: cannot listen on {args.listen}: {err.strerror or err}") from None
        print(f"routemesh gateway listening on {server.url}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await server.close()
    finally:
        shutdown_tracing()
