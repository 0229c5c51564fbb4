"""Entry point of the router: settings, policy watch, downstream clients, budgets and limits, serve."""

from __future__ import annotations

import argparse
import os

from prometheus_client import CollectorRegistry

from routemesh.common.keys import KeyCache, KeyConfigError, KeyStore, pepper_from_env
from routemesh.common.metrics import FunctionCollector, LoopReadings, new_registry
from routemesh.common.policy_watch import PolicyHolder, PolicyWatcher
from routemesh.common.redis_client import create_client
from routemesh.common.reporter import TelemetryReporter
from routemesh.common.serve import Service
from routemesh.router.admission.budget import InMemoryBudgetLedger
from routemesh.router.admission.budget_lease import LeasedBudgetLedger
from routemesh.router.admission.budget_redis import RedisBudgetLedger
from routemesh.router.admission.guard import SpendGuard
from routemesh.router.admission.ratelimit import InMemoryRateLimiter, RedisRateLimiter
from routemesh.router.affinity import InMemoryAffinity, RedisAffinity
from routemesh.router.budget_metrics import BudgetReadings
from routemesh.router.clients.classifier import FeatureSource
from routemesh.router.clients.executor import ExecutorClient
from routemesh.router.clients.feedback import FeedbackClient
from routemesh.router.clients.health import DEFAULT_HEARTBEAT_MS, HealthSource, HealthWatch
from routemesh.router.decision.compiled import RoutingPolicy
from routemesh.router.http_api import HttpApi, LocalRouter
from routemesh.router.key_usage import KeyUsageRecorder
from routemesh.router.metrics import RouterMetrics
from routemesh.router.pipeline import RequestPipeline
from routemesh.router.servicer import RouterServicer
from routemesh.v1 import router_pb2_grpc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument("--classifier", default=env("ROUTEMESH_CLASSIFIER_ADDR", "127.0.0.1:50052"),
                        help="classifier address, or 'local' to classify in-process with the same code "
                             "(no classifier hop) (env ROUTEMESH_CLASSIFIER_ADDR)")
    parser.add_argument("--telemetry", default=env("ROUTEMESH_TELEMETRY_ADDR", "127.0.0.1:50053"),
                        help="telemetry address (env ROUTEMESH_TELEMETRY_ADDR)")
    parser.add_argument("--executor", default=env("ROUTEMESH_EXECUTOR_ADDR", "127.0.0.1:50054"),
                        help="executor address; a DNS name with several replicas is balanced round-robin "
                             "(env ROUTEMESH_EXECUTOR_ADDR)")
    parser.add_argument("--redis-url", default=env("ROUTEMESH_REDIS_URL", ""),
                        help="budgets, rate limits and conversation affinity shared by router replicas "
                             "(env ROUTEMESH_REDIS_URL; empty: this process only)")
    parser.add_argument("--redis-prefix", default=env("ROUTEMESH_REDIS_PREFIX", "routemesh:"))
    parser.add_argument("--health-source", choices=("watch", "query"), default=env("ROUTEMESH_HEALTH_SOURCE", "watch"),
                        help="watch: telemetry pushes health and decisions read it in-process (no RPC per "
                             "request); query: ask telemetry on every request (env ROUTEMESH_HEALTH_SOURCE)")
    parser.add_argument("--health-interval-ms", type=int, default=int(env("ROUTEMESH_HEALTH_INTERVAL_MS", "250")),
                        help="watch: at most one pushed snapshot per this many milliseconds while reports "
                             "arrive, 50 to 60000 (env ROUTEMESH_HEALTH_INTERVAL_MS)")
    parser.add_argument("--health-heartbeat-ms", type=int,
                        default=int(env("ROUTEMESH_HEALTH_HEARTBEAT_MS", str(DEFAULT_HEARTBEAT_MS))),
                        help="watch: a snapshot at least this often when nothing changes, interval to 60000 "
                             "(env ROUTEMESH_HEALTH_HEARTBEAT_MS); health is stale, and the watch reopened, "
                             "after a heartbeat and a second without a push")
    parser.add_argument("--require-keys", action="store_true",
                        default=env("ROUTEMESH_REQUIRE_KEYS", "") == "true",
                        help="every request needs an API key (metadata authorization: Bearer rmk_...; routemesh keys "
                             "create); its tenant and project replace the request's. Needs --redis-url and "
                             "ROUTEMESH_KEY_PEPPER (env ROUTEMESH_REQUIRE_KEYS=true)")
    parser.add_argument("--budget-fail-open", action="store_true",
                        default=env("ROUTEMESH_BUDGET_FAIL_OPEN", "") == "true",
                        help="when Redis is down, allow requests without budget checks (default: refuse)")
    parser.add_argument("--budget-lease", type=float, default=float(env("ROUTEMESH_BUDGET_LEASE", "0.05")),
                        help="with --redis-url: lease this fraction of a budget's headroom (at most $10) and serve "
                             "reservations from it in memory, syncing with Redis once a second; 0: one Redis script "
                             "per reservation and per settlement (env ROUTEMESH_BUDGET_LEASE)")
    parser.add_argument("--http-listen", default=env("ROUTEMESH_ROUTER_HTTP_LISTEN", ""), metavar="HOST:PORT",
                        help="also serve the OpenAI-compatible HTTP API (and the console) from this process, with no "
                             "gRPC hop between it and routing; the gateway's timeouts and caps come from its "
                             "ROUTEMESH_GATEWAY_* variables (env ROUTEMESH_ROUTER_HTTP_LISTEN; default: off)")
    parser.add_argument("--metrics-max-tenants", type=int, default=int(env("ROUTEMESH_METRICS_MAX_TENANTS", "100")),
                        help="metrics: tenants the policy does not name that get series of their own; later ones "
                             "are counted as 'other' (env ROUTEMESH_METRICS_MAX_TENANTS)")


def make_spend_guard(args: argparse.Namespace) -> SpendGuard:
    if not 0 <= args.budget_lease <= 1:
        raise SystemExit(f"--budget-lease must be from 0 to 1, got {args.budget_lease}")
    if args.redis_url:
        ledger = LeasedBudgetLedger(args.redis_url, args.redis_prefix, fraction=args.budget_lease,
                                    fail_open=args.budget_fail_open) if args.budget_lease else \
            RedisBudgetLedger(args.redis_url, args.redis_prefix, fail_open=args.budget_fail_open)
        return SpendGuard(ledger, RedisRateLimiter(args.redis_url, args.redis_prefix))
    return SpendGuard(InMemoryBudgetLedger(), InMemoryRateLimiter())


def make_keys(args: argparse.Namespace) -> KeyCache | None:
    """The API-key check when --require-keys is on (SystemExit saying what is missing when it cannot be)."""
    if not args.require_keys:
        return None
    if not args.redis_url:
        raise SystemExit("--require-keys needs --redis-url (where control keeps the keys)")
    try:
        pepper = pepper_from_env()
    except KeyConfigError as exc:
        raise SystemExit(str(exc)) from None
    return KeyCache(KeyStore(create_client(args.redis_url), args.redis_prefix, pepper))


def make_health(args: argparse.Namespace) -> HealthSource | HealthWatch:
    if args.health_source == "query":
        return HealthSource(args.telemetry)
    if not 50 <= args.health_interval_ms <= 60_000:
        raise SystemExit("--health-interval-ms must be 50 to 60000")
    if not args.health_interval_ms <= args.health_heartbeat_ms <= 60_000:
        raise SystemExit("--health-heartbeat-ms must be --health-interval-ms to 60000")
    return HealthWatch(args.telemetry, args.health_interval_ms, heartbeat_ms=args.health_heartbeat_ms)


def watch_metrics(registry: CollectorRegistry | None, metrics: RouterMetrics | None, holder: PolicyHolder[RoutingPolicy],
                  spend: SpendGuard, health: HealthSource | HealthWatch, servicer: RouterServicer) -> LoopReadings | None:
    """With metrics on: the gauges read at scrape time, and the budget readings' loop (returned, to start)."""
    if registry is None or metrics is None:
        return None
    metrics.watch_streams(lambda: servicer.streams)
    metrics.watch_breakers(registry, lambda: health.last)
    budgets = BudgetReadings(holder, spend.ledger, metrics.accounts)
    registry.register(FunctionCollector("budgets", budgets.collect))
    return LoopReadings({"budgets": budgets.read})


async def build(args: argparse.Namespace) -> Service:
    holder: PolicyHolder[RoutingPolicy] = PolicyHolder(compile=RoutingPolicy.compile)
    watcher = PolicyWatcher(holder, args.control, "router")
    reporter = TelemetryReporter(args.telemetry)
    affinity = RedisAffinity(args.redis_url, args.redis_prefix) if args.redis_url else InMemoryAffinity()
    spend = make_spend_guard(args)
    health = make_health(args)
    features = FeatureSource(args.classifier)
    executor = ExecutorClient(args.executor)
    keys = make_keys(args)
    # Each key's requests, tokens and spend, for `routemesh keys list` and `routemesh report --keys`.
    key_usage = KeyUsageRecorder(keys.store) if keys is not None else None
    feedback = FeedbackClient(args.telemetry)
    registry = new_registry() if getattr(args, "metrics_listen", "") else None
    metrics = RouterMetrics(registry, holder, args.metrics_max_tenants) if registry is not None else None
    pipeline = RequestPipeline(holder, features, health, affinity, spend, executor, reporter, keys=keys,
                               key_usage=key_usage, feedback_sink=feedback, metrics=metrics)
    servicer = RouterServicer(pipeline)
    readings = watch_metrics(registry, metrics, holder, spend, health, servicer)
    http = HttpApi(args, LocalRouter(servicer, lambda: holder.current is not None and health.ready()), registry) \
        if args.http_listen else None

    async def on_start() -> None:
        for part in (watcher, reporter, health, features, executor, feedback):
            part.start()
        if http is not None:
            await http.start()
        if key_usage is not None:
            key_usage.start()
        if readings is not None:
            readings.start()

    async def on_stop() -> None:
        if http is not None:
            await http.close()  # its streams drained meanwhile, beside the gRPC ones (on_drain)
        if readings is not None:
            await readings.stop()
        for part in (watcher, health, reporter, features, executor, feedback):
            await part.stop()
        await spend.close()
        await affinity.close()
        if key_usage is not None:
            await key_usage.stop()  # writes what the last requests used
        if keys is not None:
            await keys.store.close()

    return Service(
        name="router",
        register=lambda server: router_pb2_grpc.add_RouterServiceServicer_to_server(servicer, server),
        grpc_services=["routemesh.v1.RouterService"],
        on_start=on_start, on_stop=on_stop, on_drain=http.drain if http is not None else None,
        ready=lambda: holder.current is not None and health.ready(),
        external=True,  # applications call it: with TLS on, no mesh certificate is asked of them
        metrics=registry,
    )
