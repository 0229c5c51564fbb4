"""What recording one request's metrics costs: `python -m routemesh.bench.metrics_cost`.

Times, in one process, the instruments a router updates per request (a requests counter, time to first token,
time per output token and duration histograms, input and output token histograms, a spend counter) with
prometheus-client and with the OpenTelemetry metrics SDK (an in-memory reader, the same bucket bounds), then
the router's own recording as it runs (router.metrics.RouterMetrics.served). The first two decided the
library (docs/metrics.md): prometheus-client, at a fraction of the SDK's cost.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

from routemesh.common.metrics import LATENCY_BUCKETS, TOKEN_BUCKETS

Recorder = Callable[[int], None]
MODELS, TENANTS = 4, 8


def prometheus_recorder() -> Recorder:
    from prometheus_client import CollectorRegistry, Counter, Histogram

    registry = CollectorRegistry()
    requests = Counter("routemesh_requests", "", ["route", "model", "status", "tenant"], registry=registry)
    model = ["route", "gen_ai_response_model"]
    ttft = Histogram("ttft_seconds", "", model, buckets=LATENCY_BUCKETS, registry=registry)
    tpot = Histogram("tpot_seconds", "", model, buckets=LATENCY_BUCKETS, registry=registry)
    duration = Histogram("duration_seconds", "", model, buckets=LATENCY_BUCKETS, registry=registry)
    tokens = Histogram("tokens", "", ["type", *model, "tenant"], buckets=TOKEN_BUCKETS, registry=registry)
    spend = Counter("spend_usd", "", ["route", "model", "tenant"], registry=registry)

    def record(i: int) -> None:
        m, t = f"m{i % MODELS}", f"t{i % TENANTS}"
        requests.labels("auto", m, "complete", t).inc()
        ttft.labels("auto", m).observe(0.2)
        tpot.labels("auto", m).observe(0.01)
        duration.labels("auto", m).observe(1.5)
        tokens.labels("input", "auto", m, t).observe(120)
        tokens.labels("output", "auto", m, t).observe(300)
        spend.labels("auto", m, t).inc(0.0012)
    return record


def opentelemetry_recorder() -> Recorder:
    from opentelemetry.sdk.metrics import Histogram as HistogramInstrument
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View

    views = [View(instrument_type=HistogramInstrument, instrument_name=name,
                  aggregation=ExplicitBucketHistogramAggregation(list(buckets)))
             for name, buckets in (("ttft", LATENCY_BUCKETS), ("tpot", LATENCY_BUCKETS),
                                   ("duration", LATENCY_BUCKETS), ("tokens", TOKEN_BUCKETS))]
    meter = MeterProvider(metric_readers=[InMemoryMetricReader()], views=views).get_meter("routemesh-bench")
    requests, spend = meter.create_counter("requests"), meter.create_counter("spend")
    ttft, tpot = meter.create_histogram("ttft"), meter.create_histogram("tpot")
    duration, tokens = meter.create_histogram("duration"), meter.create_histogram("tokens")

    def record(i: int) -> None:
        m, t = f"m{i % MODELS}", f"t{i % TENANTS}"
        requests.add(1, {"route": "auto", "model": m, "status": "complete", "tenant": t})
        attributes = {"route": "auto", "gen_ai.response.model": m}
        ttft.record(0.2, attributes)
        tpot.record(0.01, attributes)
        duration.record(1.5, attributes)
        tokens.record(120, {"type": "input", **attributes, "tenant": t})
        tokens.record(300, {"type": "output", **attributes, "tenant": t})
        spend.add(0.0012, {"route": "auto", "model": m, "tenant": t})
    return record


def router_recorder() -> Recorder:
    """RouterMetrics.served on a default-policy request that completed on its first attempt."""
    from routemesh.classifier.features import classify
    from routemesh.common.metrics import new_registry
    from routemesh.common.policy import PolicyVersion, load_default_policy_text, parse_policy
    from routemesh.common.policy_watch import PolicyHolder
    from routemesh.router.decision.compiled import RoutingPolicy
    from routemesh.router.decision.planner import Plan
    from routemesh.router.metrics import RouterMetrics
    from routemesh.router.request import ChatInput, Classified, Decision, Finished
    from routemesh.v1 import common_pb2

    policy = RoutingPolicy.compile(PolicyVersion(parse_policy(load_default_policy_text()), 1, "d"))
    holder: PolicyHolder[RoutingPolicy] = PolicyHolder()
    holder.current = policy
    metrics = RouterMetrics(new_registry(), holder)
    message = common_pb2.Message(role=common_pb2.ROLE_USER, content="hello")
    classified = Classified(classify([("user", "hello")]), "classifier")
    decision = Decision("a" * 32, Plan(models=["fast-cheap"], strategy="cheapest", reason="", route="auto"), "sim",
                        classified, 1, "d", "t")
    requests = [ChatInput(messages=[message], metadata={"tenant": f"t{i}"}) for i in range(TENANTS)]
    finished = [Finished(status=1, model=f"m{i}", provider="sim", cost_usd=0.0012,
                         usage=common_pb2.Usage(input_tokens=120, output_tokens=300),
                         attempts=[common_pb2.Attempt(model=f"m{i}", outcome=1)]) for i in range(MODELS)]

    def record(i: int) -> None:
        metrics.served(policy, requests[i % TENANTS], decision, finished[i % MODELS], 1.5, 0.2, None)
    return record


def measure(record: Recorder, requests: int, runs: int) -> dict[str, float]:
    """µs per request: the median and the best of `runs` timed loops of `requests` (after a warm-up)."""
    for i in range(2000):
        record(i)
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        for i in range(requests):
            record(i)
        timings.append((time.perf_counter() - started) / requests * 1e6)
    return {"median_us": round(statistics.median(timings), 2), "min_us": round(min(timings), 2)}


def run_benchmark(requests: int = 20_000, runs: int = 5) -> dict[str, dict[str, float]]:
    return {name: measure(make(), requests, runs) for name, make in (
        ("prometheus-client", prometheus_recorder), ("opentelemetry-sdk", opentelemetry_recorder),
        ("routemesh router (RouterMetrics.served)", router_recorder))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m routemesh.bench.metrics_cost", description=__doc__)
    parser.add_argument("--requests", type=int, default=20_000, help="requests per timed run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    results = run_benchmark(args.requests, args.runs)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{'per request (7 instruments)':<42} {'median µs':>10} {'best µs':>9}")
    for name, figures in results.items():
        print(f"{name:<42} {figures['median_us']:>10.1f} {figures['min_us']:>9.1f}")


if __name__ == "__main__":
    main()
