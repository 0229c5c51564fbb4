"""Command-line glue for `routemesh sim`: parse the listen address, serve until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal

from routemesh.common.tasks import split_listen
from routemesh.sim.profiles import ProfileError, load_profiles_file
from routemesh.sim.server import SimServer, start_sim

__all__ = ["add_arguments", "run", "start_sim", "SimServer"]

DEFAULT_LISTEN = "127.0.0.1:50056"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen",
        default=os.environ.get("ROUTEMESH_SIM_LISTEN", DEFAULT_LISTEN),
        help="HOST:PORT to listen on (env ROUTEMESH_SIM_LISTEN, default %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=7, help="seed for generated text and faults")
    parser.add_argument(
        "--time-scale", type=float, default=1.0, help="multiplies every simulated delay; 0 disables them"
    )
    parser.add_argument("--profiles", default=None, help="YAML or JSON file of model name -> profile fields")


async def run(args: argparse.Namespace) -> None:
    host, port = split_listen(args.listen, "routemesh sim")
    if args.time_scale < 0:
        raise SystemExit("routemesh sim: --time-scale must not be negative")
    try:
        profiles = load_profiles_file(args.profiles) if args.profiles else None
    except (OSError, ProfileError) as err:
        raise SystemExit(f"routemesh sim: {err}") from None
    try:
        server = await start_sim(host, port, seed=args.seed, time_scale=args.time_scale, profiles=profiles)
    except OSError as err:
        raise SystemExit(f"routemesh sim: cannot listen on {args.listen}: {err.strerror or err}") from None
    print(f"routemesh sim listening on {server.root_url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
        await server.close()
