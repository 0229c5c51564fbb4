"""Entry point of the gateway: settings, serve HTTP until SIGTERM or SIGINT, drain in-flight streams."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal

from routemesh.common.keys import KeyConfigError
from routemesh.common.metrics import MetricsServer, new_registry
from routemesh.common.serve import tune_gc
from routemesh.common.tasks import split_listen
from routemesh.common.tracing import init_tracing, shutdown_tracing
from routemesh.gateway.server import (
    BODY_TIMEOUT_S,
    DEFAULT_CONTROL,
    DEFAULT_TELEMETRY,
    HEADER_TIMEOUT_S,
    MAX_CONNECTIONS,
    GatewayServer,
    start_gateway,
)

__all__ = ["add_arguments", "run", "start_gateway", "GatewayServer"]

DEFAULT_LISTEN = "127.0.0.1:50057"


def _add_once(parser: argparse.ArgumentParser, flag: str, **kwargs: object) -> None:
    """Add `flag` unless the caller's parser already has it (`routemesh serve` adds --listen and others)."""
    if flag not in parser._option_string_actions:
        parser.add_argument(flag, **kwargs)  # type: ignore[arg-type]


def _positive(text: str) -> float:
    """A timeout in seconds: 0 or less would close every connection before its first byte."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (no cap) or more, not {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument("--router", default=env("ROUTEMESH_ROUTER_ADDR", "127.0.0.1:50051"),
                        help="router address (env ROUTEMESH_ROUTER_ADDR); a DNS name with several replicas "
                             "is balanced round-robin")
    _add_once(parser, "--listen", default=env("ROUTEMESH_GATEWAY_LISTEN", DEFAULT_LISTEN),
              help=f"HOST:PORT to serve HTTP on (env ROUTEMESH_GATEWAY_LISTEN, default {DEFAULT_LISTEN})")
    _add_once(parser, "--control", default=env("ROUTEMESH_CONTROL_ADDR", DEFAULT_CONTROL),
              help="control-plane address, for the model list (env ROUTEMESH_CONTROL_ADDR)")
    parser.add_argument("--telemetry", default=env("ROUTEMESH_TELEMETRY_ADDR", DEFAULT_TELEMETRY),
                        help="telemetry address, for the console (env ROUTEMESH_TELEMETRY_ADDR)")
    # Not --redis-url: the gateway keeps nothing in Redis; it only reads API keys there, and only with the pepper.
    parser.add_argument("--keys-redis-url", default=env("ROUTEMESH_REDIS_URL", ""),
                        help="the Redis control keeps API keys in (env ROUTEMESH_REDIS_URL): with "
                             "ROUTEMESH_KEY_PEPPER set too, the console admits admin API keys; otherwise only the "
                             "bootstrap key ROUTEMESH_ADMIN_KEY")
    parser.add_argument("--keys-redis-prefix", default=env("ROUTEMESH_REDIS_PREFIX", "") or "routemesh:",
                        help="the key prefix control uses in that Redis (env ROUTEMESH_REDIS_PREFIX; default "
                             "routemesh:)")
    _add_once(parser, "--grace-s", type=float, default=float(env("ROUTEMESH_GRACE_S", "30")),
              help="seconds in-flight streams get to finish on SIGTERM")
    _add_once(parser, "--metrics-listen", default=env("ROUTEMESH_GATEWAY_METRICS_LISTEN", ""), metavar="HOST:PORT",
              help="serve Prometheus metrics at http://HOST:PORT/metrics (env ROUTEMESH_GATEWAY_METRICS_LISTEN; "
                   "default: off)")
    parser.add_argument("--timeout-s", type=float, default=float(env("ROUTEMESH_GATEWAY_TIMEOUT_S", "300")),
                        help="upper bound of one chat, streaming included (env ROUTEMESH_GATEWAY_TIMEOUT_S)")
    parser.add_argument("--header-timeout-s", type=_positive,
                        default=_positive(env("ROUTEMESH_GATEWAY_HEADER_TIMEOUT_S", str(HEADER_TIMEOUT_S))),
                        help="seconds a connection has to send a whole request line and headers, counted from "
                             "its opening or its previous answer; also how long an idle keep-alive connection "
                             "stays open. Slow senders (slowloris) are closed when it runs out "
                             f"(env ROUTEMESH_GATEWAY_HEADER_TIMEOUT_S, default {HEADER_TIMEOUT_S:g})")
    parser.add_argument("--body-timeout-s", type=_positive,
                        default=_positive(env("ROUTEMESH_GATEWAY_BODY_TIMEOUT_S", str(BODY_TIMEOUT_S))),
                        help="seconds a request body has to arrive whole, or the answer is 408 and the "
                             f"connection closes (env ROUTEMESH_GATEWAY_BODY_TIMEOUT_S, default {BODY_TIMEOUT_S:g})")
    parser.add_argument("--max-connections", type=_count,
                        default=_count(env("ROUTEMESH_GATEWAY_MAX_CONNECTIONS", str(MAX_CONNECTIONS))),
                        help="open HTTP connections at most; past it a new connection gets a 503 and is closed "
                             f"(env ROUTEMESH_GATEWAY_MAX_CONNECTIONS, default {MAX_CONNECTIONS}, 0: no cap)")


async def run(args: argparse.Namespace) -> None:
    """Serve until SIGTERM or SIGINT; then stop accepting and give in-flight requests up to --grace-s."""
    host, port = split_listen(args.listen, "routemesh gateway")
    registry = new_registry() if args.metrics_listen else None
    exporter = MetricsServer(registry, args.metrics_listen, "routemesh gateway") if registry is not None else None
    init_tracing("routemesh-gateway")
    try:
        try:
            server = await start_gateway(args.router, host, port, control_address=args.control,
                                         grace_s=args.grace_s, timeout_s=args.timeout_s,
                                         header_timeout_s=args.header_timeout_s, body_timeout_s=args.body_timeout_s,
                                         max_connections=args.max_connections, metrics=registry,
                                         telemetry_address=args.telemetry, redis_url=args.keys_redis_url,
                                         redis_prefix=args.keys_redis_prefix)
        except OSError as err:
            raise SystemExit(f"routemesh gateway: cannot listen on {args.listen}: {err.strerror or err}") from None
        except KeyConfigError as err:
            raise SystemExit(f"routemesh gateway: {err}") from None
        # As every gRPC service does: start-up's objects frozen, a young generation of 10,000. The collector
        # was a fifth of the gateway's CPU under load: a streamed request makes hundreds of short-lived
        # objects, and with the default 700 each one triggers collections that walk every module and proto.
        tune_gc()
        if exporter is not None:
            exporter.start()
            print(f"routemesh gateway metrics on {exporter.url}", flush=True)
        print(f"routemesh gateway listening on {server.url} (console: {server.url}/console)", flush=True)
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
        if exporter is not None:
            exporter.stop()
        shutdown_tracing()
