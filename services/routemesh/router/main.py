"""Entry point of the router: settings, policy watch, classifier/telemetry/executor clients, serve."""

from __future__ import annotations

import argparse
import os

from routemesh.common.policy_watch import PolicyHolder, PolicyWatcher
from routemesh.common.serve import Service
from routemesh.router.features import FeatureSource
from routemesh.router.servicer import HealthSource, RouterServicer
from routemesh.v1 import router_pb2_grpc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument("--classifier", default=env("ROUTEMESH_CLASSIFIER_ADDR", "127.0.0.1:50052"),
                        help="classifier address (env ROUTEMESH_CLASSIFIER_ADDR)")
    parser.add_argument("--telemetry", default=env("ROUTEMESH_TELEMETRY_ADDR", "127.0.0.1:50053"),
                        help="telemetry address (env ROUTEMESH_TELEMETRY_ADDR)")
    parser.add_argument("--executor", default=env("ROUTEMESH_EXECUTOR_ADDR", "127.0.0.1:50054"),
                        help="executor address; a DNS name with several replicas is balanced round-robin "
                             "(env ROUTEMESH_EXECUTOR_ADDR)")


async def build(args: argparse.Namespace) -> Service:
    holder = PolicyHolder()
    watcher = PolicyWatcher(holder, args.control, "router")
    servicer = RouterServicer(holder, FeatureSource(args.classifier), HealthSource(args.telemetry), args.executor)

    async def on_start() -> None:
        watcher.start()

    async def on_stop() -> None:
        await watcher.stop()

    return Service(
        name="router",
        register=lambda server: router_pb2_grpc.add_RouterServiceServicer_to_server(servicer, server),
        grpc_services=["routemesh.v1.RouterService"],
        on_start=on_start, on_stop=on_stop,
        ready=lambda: holder.current is not None,
    )
