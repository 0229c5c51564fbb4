"""Micro-benchmark of tracing's CPU per span: the SDK creating and ending a span, and encoding it for OTLP export
with the stock encoder and with routemesh's (`common/otlp_export.py`).

    python -m routemesh.bench.spans [--spans 512] [--rounds 15] [--json]

Variants run interleaved round by round (the VM's speed drifts between minutes); min and median of rounds.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Callable, Sequence

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode

from routemesh.common.otlp_export import encode_spans_bytes

_KINDS = (SpanKind.SERVER, SpanKind.CLIENT, SpanKind.INTERNAL)


class _Collect(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


def make_spans(count: int, keep: bool = True) -> list[ReadableSpan]:
    """`count` finished spans with ten attributes each, shaped like routemesh's (names, models, usage, cost)."""
    collect = _Collect()
    provider = TracerProvider(resource=Resource.create({"service.name": "routemesh-router"}))
    if keep:
        provider.add_span_processor(SimpleSpanProcessor(collect))
    tracer = provider.get_tracer("routemesh")
    rnd = random.Random(1)
    for i in range(count):
        span = tracer.start_span("routemesh.v1.RouterService/Chat", kind=_KINDS[i % 3], attributes={
            "rpc.system": "grpc", "rpc.service": "routemesh.v1.RouterService", "rpc.method": "Chat",
            "gen_ai.provider.name": rnd.choice(["openai", "anthropic", "gemini"]),
            "gen_ai.request.model": rnd.choice(["gpt-4o-mini", "claude-3-5-haiku", "gemini-2.0-flash"]),
            "routemesh.decision.id": f"{rnd.getrandbits(64):016x}",
            "gen_ai.usage.input_tokens": rnd.randint(10, 5000), "gen_ai.usage.output_tokens": rnd.randint(10, 2000),
            "routemesh.cost.usd": rnd.random() / 100, "routemesh.budget.soft_limited": bool(i % 2),
        })
        if i % 7 == 0:
            span.set_status(Status(StatusCode.ERROR, "upstream timeout"))
        span.end()
    return collect.spans


def measure(spans: int, rounds: int) -> dict[str, dict[str, float]]:
    """CPU µs per span of each variant: {"name": {"min": .., "median": ..}}."""
    batch = make_spans(spans)
    if encode_spans_bytes(batch) != encode_spans(batch).SerializeToString():
        raise AssertionError("the fast encoding differs from the stock one")
    variants: dict[str, Callable[[], object]] = {
        "sdk_create_end": lambda: make_spans(spans, keep=False),
        "stock_encode": lambda: encode_spans(batch).SerializeToString(),
        "fast_encode": lambda: encode_spans_bytes(batch),
    }
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, run in variants.items():
            started = time.process_time()
            run()
            samples[name].append((time.process_time() - started) / spans * 1e6)
    return {name: {"min": round(min(v), 2), "median": round(statistics.median(v), 2)} for name, v in samples.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m routemesh.bench.spans", description=__doc__.split("\n\n")[0])
    parser.add_argument("--spans", type=int, default=512, help="spans per batch (the export batch size)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if args.spans < 1 or args.rounds < 1:
        parser.error("--spans and --rounds must be at least 1")
    result = measure(args.spans, args.rounds)
    if args.json:
        print(json.dumps(result))
        return
    labels = {"sdk_create_end": "SDK: start + end a span, 10 attributes",
              "stock_encode": "OTLP encoding, stock encoder", "fast_encode": "OTLP encoding, routemesh's"}
    print(f"{'CPU µs per span':42s} {'min':>7s} {'median':>7s}")
    for name, figures in result.items():
        print(f"{labels[name]:42s} {figures['min']:7.2f} {figures['median']:7.2f}")


if __name__ == "__main__":
    main()
