"""Entry point of the executor: settings, policy watch, HTTP client, telemetry reporter, serve."""

from __future__ import annotations

import argparse
import os

from routemesh.common.metrics import new_registry
from routemesh.common.policy import PolicyVersion
from routemesh.common.policy_watch import PolicyHolder, PolicyWatcher
from routemesh.common.reporter import TelemetryReporter
from routemesh.common.serve import Service
from routemesh.executor.engine import AttemptRecord, ExecutionEngine
from routemesh.executor.http import HttpClient
from routemesh.executor.metrics import ExecutorMetrics
from routemesh.executor.policy_versions import POLICY_VERSIONS_KEPT
from routemesh.executor.servicer import ExecutorServicer, observation_of
from routemesh.v1 import executor_pb2_grpc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--telemetry", default=os.environ.get("ROUTEMESH_TELEMETRY_ADDR", "127.0.0.1:50053"),
                        help="telemetry service address (env ROUTEMESH_TELEMETRY_ADDR)")
    parser.add_argument("--max-connections", type=int,
                        default=int(os.environ.get("ROUTEMESH_EXECUTOR_MAX_CONNECTIONS", "1000")),
                        help="HTTP connections to providers, all hosts together")


async def build(args: argparse.Namespace) -> Service:
    holder: PolicyHolder[PolicyVersion] = PolicyHolder(keep=POLICY_VERSIONS_KEPT)
    watcher = PolicyWatcher(holder, args.control, "executor")
    reporter = TelemetryReporter(args.telemetry)
    # Created here, in the running event loop; each call sets its own connect timeout.
    client = HttpClient(max_connections=args.max_connections)

    def observe(record: AttemptRecord, finished: bool, decision_id: str) -> None:
        reporter.report(observation_of(record, finished, decision_id))

    registry = new_registry() if getattr(args, "metrics_listen", "") else None
    metrics = ExecutorMetrics(registry, lambda: holder.current.version if holder.current is not None else 0) \
        if registry is not None else None
    engine = ExecutionEngine(holder, client, observe, attempts_done=metrics.attempts_done if metrics else None)
    servicer = ExecutorServicer(engine)
    if metrics is not None:
        metrics.watch_streams(lambda: servicer.streams)

    async def on_start() -> None:
        watcher.start()
        reporter.start()

    async def on_stop() -> None:
        await watcher.stop()
        await reporter.stop()
        await client.aclose()

    return Service(
        name="executor",
        register=lambda server: executor_pb2_grpc.add_ExecutorServiceServicer_to_server(servicer, server),
        grpc_services=["routemesh.v1.ExecutorService"],
        on_start=on_start, on_stop=on_stop,
        ready=lambda: holder.current is not None,
        metrics=registry,
    )
