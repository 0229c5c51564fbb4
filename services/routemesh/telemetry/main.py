"""Wiring of the telemetry service: arguments, store choice, policy watch and the Service for serve()."""

from __future__ import annotations

import argparse
import os

import grpc
from prometheus_client import CollectorRegistry

from routemesh.common import admin
from routemesh.common.metrics import new_registry
from routemesh.common.policy_watch import PolicyHolder, PolicyWatcher
from routemesh.common.serve import Service
from routemesh.telemetry.ledger.stores import ledger_store
from routemesh.telemetry.metrics import register_telemetry_metrics
from routemesh.telemetry.ledger.writer import DEFAULT_BATCH_ROWS, DEFAULT_INTERVAL_S, DEFAULT_MAX_BUFFERED, LedgerWriter
from routemesh.common.redis_client import create_client
from routemesh.telemetry.alerting.claims import LocalClaims, RedisClaims
from routemesh.telemetry.alerting.metrics import register_alert_metrics
from routemesh.telemetry.alerting.spend import SharedSpend
from routemesh.telemetry.alerts import AlertEngine
from routemesh.telemetry.quality_signals import InMemoryQualitySignals, QualitySignalStore, RedisQualitySignals
from routemesh.telemetry.redis_store import RedisHealthStore
from routemesh.telemetry.servicer import TelemetryServicer
from routemesh.telemetry.store import DEFAULT_WINDOW_S, HealthStore, InMemoryHealthStore
from routemesh.v1 import telemetry_pb2, telemetry_pb2_grpc

SERVICE_NAME = "telemetry"
GRPC_SERVICE = "routemesh.v1.TelemetryService"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Telemetry's own options; the CLI adds --listen and --control."""
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("ROUTEMESH_REDIS_URL", ""),
        help="Redis shared by telemetry replicas, e.g. redis://127.0.0.1:6379/0 "
        "(env ROUTEMESH_REDIS_URL; empty keeps health in this process's memory)",
    )
    parser.add_argument(
        "--redis-prefix",
        default=os.environ.get("ROUTEMESH_REDIS_PREFIX") or "routemesh:",
        help="prefix of every Redis key (env ROUTEMESH_REDIS_PREFIX; default routemesh:)",
    )
    parser.add_argument(
        "--window-s",
        type=int,
        default=DEFAULT_WINDOW_S,
        help=f"sliding window of latency percentiles and error rate, seconds (default {DEFAULT_WINDOW_S})",
    )
    parser.add_argument(
        "--ledger-url",
        default=os.environ.get("ROUTEMESH_LEDGER_URL", ""),
        help="the outcome ledger: one row per request, decision and outcome (env ROUTEMESH_LEDGER_URL): "
        "postgresql://user@host/db[?schema=NAME], sqlite:///relative.db, sqlite:////absolute.db; empty: none",
    )
    parser.add_argument(
        "--ledger-buffer-rows",
        type=int,
        default=DEFAULT_MAX_BUFFERED,
        help="rows kept in memory while the ledger database is down or slow; past it they are dropped and "
        f"counted (default {DEFAULT_MAX_BUFFERED:,})",
    )
    parser.add_argument(
        "--ledger-interval-s",
        type=float,
        default=DEFAULT_INTERVAL_S,
        help=f"how long ledger rows gather into a batch before they are written, seconds (default "
        f"{DEFAULT_INTERVAL_S}; a full batch of {DEFAULT_BATCH_ROWS:,} is written at once)",
    )
    admin.add_arguments(parser)


def make_store(redis_url: str, prefix: str, window_s: int) -> HealthStore:
    """Redis when a URL is given (replicas share health), otherwise memory."""
    if redis_url:
        return RedisHealthStore(redis_url, prefix=prefix, window_s=window_s)
    return InMemoryHealthStore(window_s=window_s)


def make_signals(redis_url: str, prefix: str) -> QualitySignalStore:
    """Quality signals in Redis when a URL is given (replicas share them), otherwise memory."""
    if redis_url:
        return RedisQualitySignals(create_client(redis_url, timeout_s=0.5), prefix)
    return InMemoryQualitySignals()


def make_service(store: HealthStore, holder: PolicyHolder, watcher: PolicyWatcher | None = None,
                 admin_auth: admin.AdminAuth | None = None, ledger: LedgerWriter | None = None,
                 signals: QualitySignalStore | None = None, metrics: CollectorRegistry | None = None,
                 alerts: AlertEngine | None = None) -> Service:
    """The Service around a store and a policy holder; tests pass no watcher and fill the holder directly.

    With `admin_auth`, the operator's RPCs (GetSnapshot, GetExperimentReport) need its credential too; with
    `metrics`, its collectors are registered there; with `alerts`, the policy's alert rules are evaluated
    and notified while the service runs.
    """
    servicer = TelemetryServicer(store, holder, ledger=ledger, signals=signals)
    servicer.alerts = alerts
    if metrics is not None and alerts is not None:
        register_alert_metrics(metrics, alerts)
    readings = register_telemetry_metrics(
        metrics, lambda: holder.current.version if holder.current is not None else 0,
        lambda: ledger.stats if ledger is not None else None,
        lambda: servicer.GetSnapshot(telemetry_pb2.GetSnapshotRequest(), None)) if metrics is not None else None

    def register(server: grpc.aio.Server) -> None:
        telemetry_pb2_grpc.add_TelemetryServiceServicer_to_server(servicer, server)

    async def on_start() -> None:
        if watcher:
            watcher.start()
        if ledger is not None:
            ledger.start()
        if alerts is not None:
            alerts.start()
        if readings is not None:
            readings.start()

    async def on_stop() -> None:
        if readings is not None:
            await readings.stop()
        if watcher:
            await watcher.stop()
        if alerts is not None:
            await alerts.stop()  # queued notifications get a short drain
        if ledger is not None:
            await ledger.stop()  # writes what is buffered (SIGTERM drains the server first)
        await servicer.signals.close()
        await store.close()

    return Service(
        name=SERVICE_NAME,
        register=register,
        grpc_services=[GRPC_SERVICE],
        on_start=on_start,
        on_stop=on_stop,
        on_drain=servicer.stop,
        ready=lambda: holder.current is not None,
        admin=admin_auth,
        metrics=metrics,
    )


async def build(args: argparse.Namespace) -> Service:
    """The telemetry Service from parsed arguments (needs args.control)."""
    if args.window_s <= 0:
        raise SystemExit("telemetry: --window-s must be a positive number of seconds")
    store = make_store(args.redis_url, args.redis_prefix, args.window_s)
    holder = PolicyHolder()
    # Admin API keys are checked where control keeps them, when this service has the pepper too.
    keys = admin.key_store(args.redis_url, args.redis_prefix) if admin.wanted(args) else None
    admin_auth = admin.from_args(SERVICE_NAME, args, keys)
    ledger = None
    if args.ledger_url:
        if args.ledger_buffer_rows < 1 or not 0 < args.ledger_interval_s <= 3600:
            raise SystemExit("telemetry: --ledger-buffer-rows must be at least 1, --ledger-interval-s 0 to 3600")
        try:
            ledger = LedgerWriter(ledger_store(args.ledger_url), max_buffered=args.ledger_buffer_rows,
                                  interval_s=args.ledger_interval_s)
        except ValueError as exc:
            raise SystemExit(f"telemetry: --ledger-url: {exc}") from None
    return make_service(store, holder, PolicyWatcher(holder, args.control, SERVICE_NAME), admin_auth, ledger,
                        make_signals(args.redis_url, args.redis_prefix),
                        new_registry() if getattr(args, "metrics_listen", "") else None,
                        make_alerts(holder, store, args.redis_url, args.redis_prefix))


def make_alerts(holder: PolicyHolder, store: HealthStore, redis_url: str, prefix: str) -> AlertEngine:
    """The policy's alert rules: with Redis, replicas claim each notification there and read the routers'
    budget ledger; without, this replica notifies every transition and sums spend from its own reports."""
    if redis_url:
        return AlertEngine(holder, store, claims=RedisClaims(redis_url, prefix), spend=SharedSpend(redis_url, prefix))
    return AlertEngine(holder, store, claims=LocalClaims())
