"""The OTLP span exporter a service uses: routemesh's fast encoder when a start-up probe trusts it, else the stock."""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Mapping, Sequence

import grpc
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace import set_span_in_context
from opentelemetry.trace.span import TraceState

log = logging.getLogger(__name__)

OTLP_ENCODER_VAR = "ROUTEMESH_OTLP_ENCODER"
FAST, STOCK = "fast", "stock"
# Nothing listens on port 0: should a changed exporter bypass the probe's stand-in stub, the call fails at once
# instead of sending probe spans to a collector, and a deadline shorter than the stock first backoff (0.8-1.2 s)
# means it is not retried.
_PROBE_ENDPOINT = "127.0.0.1:0"
_PROBE_TIMEOUT_S = 0.5


def otlp_encoder(environ: Mapping[str, str] = os.environ) -> str:
    """`fast` or `stock`, from ROUTEMESH_OTLP_ENCODER (unset or empty: fast; case and spaces ignored).

    Any other value ends start-up (SystemExit, no traceback), as the other settings do: an operator who typed
    `stokc` wanted the stock exporter, and tracing silently staying on the fast one would hide that.
    """
    value = environ.get(OTLP_ENCODER_VAR, "").strip().lower() or FAST
    if value not in (FAST, STOCK):
        raise SystemExit(f"{OTLP_ENCODER_VAR} must be {FAST!r} or {STOCK!r}, got {environ[OTLP_ENCODER_VAR]!r}")
    return value


def span_exporter(environ: Mapping[str, str] = os.environ) -> SpanExporter:
    """The OTLP/gRPC span exporter, configured from the OTEL_EXPORTER_OTLP_* variables as the stock one is.

    The fast exporter (`otlp_export.FastOTLPSpanExporter`) leans on OpenTelemetry internals that a release may
    change without notice; `fast_exporter_problem` checks them once, here, and on any doubt the stock exporter
    is used, with one warning saying why. ROUTEMESH_OTLP_ENCODER=stock skips the fast exporter and the probe.
    """
    if otlp_encoder(environ) == STOCK:
        return OTLPSpanExporter()
    problem = fast_exporter_problem()
    if problem is not None:
        log.warning("the fast OTLP span encoder is off, using the stock exporter (%s=stock silences this): %s",
                    OTLP_ENCODER_VAR, problem)
        return OTLPSpanExporter()
    from routemesh.common.otlp_export import FastOTLPSpanExporter

    return FastOTLPSpanExporter()


def fast_exporter_problem() -> str | None:
    """Why the fast exporter cannot be trusted with the installed OpenTelemetry, or None when it can.

    It can when the private names it imports exist, the stock exporter still has the two methods it overrides,
    and a probe batch (`probe_spans`) goes through it — its own constructor, `_initialize_channel_and_stub` and
    the stock `_export` calling `_translate_data` — as the bytes the public `encode_spans(...)` serializes to.
    Nothing is sent: the exporter's stub is swapped for one that keeps the request.
    """
    try:
        otlp_export = importlib.import_module("routemesh.common.otlp_export")
    except Exception as error:  # any import-time failure of the fast module means: use the stock one
        return f"routemesh.common.otlp_export does not import: {error!r}"
    if otlp_export.MISSING_INTERNALS is not None:
        return otlp_export.MISSING_INTERNALS
    for hook in ("_initialize_channel_and_stub", "_translate_data"):
        method = getattr(OTLPSpanExporter, hook, None)
        if not callable(method) or getattr(method, "__isabstractmethod__", False):
            return f"OTLPSpanExporter has no {hook} for the fast exporter to override"
    try:
        spans = probe_spans()
        expected = encode_spans(spans).SerializeToString()
        encoded = otlp_export.encode_spans_bytes(spans)
        if encoded != expected:
            return f"the probe batch encodes differently from encode_spans(): {_first_difference(encoded, expected)}"
        return _dry_run_problem(otlp_export, spans, expected)
    except Exception as error:  # whatever the internals now do differently, the stock exporter is the safe side
        return f"the probe raised {error!r}"


class _KeepingStub:
    """Stands in for the exporter's gRPC stub: keeps each request instead of sending it."""

    def __init__(self) -> None:
        self.requests: list[object] = []

    def Export(self, request, *args, **kwargs) -> None:  # noqa: N802 - the stub's method name
        self.requests.append(request)


def _dry_run_problem(otlp_export, spans: Sequence[ReadableSpan], expected: bytes) -> str | None:
    """Export `spans` through a fast exporter whose stub keeps the request; what is wrong with it, if anything."""
    exporter = otlp_export.FastOTLPSpanExporter(
        endpoint=_PROBE_ENDPOINT, insecure=True, timeout=_PROBE_TIMEOUT_S, compression=grpc.Compression.NoCompression,
        meter_provider=NoOpMeterProvider(),  # the probe batch must not count in the exporter metrics
    )
    try:
        client = getattr(exporter, "_client", None)
        if not isinstance(client, otlp_export._SerializedTraceServiceStub):
            return f"the stock exporter did not build its client from the _stub the fast one sets (got {client!r})"
        stub = exporter._client = _KeepingStub()
        result = exporter.export(spans)
    finally:
        exporter.shutdown()
    if result is not SpanExportResult.SUCCESS or len(stub.requests) != 1:
        return f"the stock export path did not call _client.Export once ({result}, {len(stub.requests)} calls)"
    request = stub.requests[0]
    if type(request) is not bytes:
        return f"the stock export path sent a {type(request).__name__}, not what _translate_data returned"
    if request != expected:
        return f"the exported request differs from encode_spans(): {_first_difference(request, expected)}"
    return None


def _first_difference(got: bytes, expected: bytes) -> str:
    at = next((i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b), min(len(got), len(expected)))
    return f"{len(got)} bytes against {len(expected)}, first difference at byte {at}"


def probe_spans() -> list[ReadableSpan]:
    """A small batch made by the SDK as a service's spans are, covering what the fast encoder writes itself.

    Two resources (one with a schema URL), three scopes (one with version, schema URL and attributes); str (empty,
    non-ASCII, past one-byte lengths), int (negative, int64 bounds), float, bool and sequence attributes, and a
    bytes one for the stock `_encode_key_value`; events, local and remote links, a remote parent with trace
    state, every span kind, OK and ERROR statuses, and dropped events and links.
    """
    kept = _KeptSpans()

    def provider(resource: Resource) -> TracerProvider:
        # Explicit sampler and limits: the operator's OTEL_TRACES_SAMPLER / *_LIMIT must not change the batch.
        # Over-limit events and links are dropped silently; over-limit attributes would log a warning each.
        limits = SpanLimits(max_span_attributes=32, max_events=2, max_links=2, max_event_attributes=8,
                            max_link_attributes=8, max_attribute_length=256)
        made = TracerProvider(resource=resource, sampler=ALWAYS_ON, span_limits=limits, shutdown_on_exit=False)
        made.add_span_processor(SimpleSpanProcessor(kept))
        return made

    router = provider(Resource({"service.name": "probe-router", "probe.ids": ("a", "b")}, "https://probe/1"))
    executor = provider(Resource({"service.name": "probe-executor"}))
    rpc = router.get_tracer("probe", "1.0", "https://probe/scope", attributes={"scope.on": True, "n": 3})
    decide = router.get_tracer("probe.decide")
    chat = executor.get_tracer("probe")

    remote_parent = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, is_remote=True,
                                trace_flags=TraceFlags(1), trace_state=TraceState([("vendor", "v1")]))
    links = [Link(SpanContext(0x1234, 0x5678, is_remote=False)),  # dropped: over max_links
             Link(SpanContext(0x1234, 0x5679, is_remote=False), {"link.kind": "retry-of"}),
             Link(SpanContext(0x9999, 0x8888, is_remote=True, trace_flags=TraceFlags(1)), {"a": 1})]
    with rpc.start_as_current_span(
        "probe/Chat", kind=SpanKind.SERVER, context=set_span_in_context(NonRecordingSpan(remote_parent)),
        links=links, attributes={
            "str": "gpt-4o-mini", "empty": "", "unicode": "zébra ✓ 🦓", "long": "x" * 200, "int": 1234,
            "negative": -5, "int64.min": -(2**63), "int64.max": 2**63 - 1, "float": 0.00125, "bool": True,
            "off": False, "strs": ("a", "", "é"), "ints": [1, -2, 2**40], "floats": (0.5, -1.0),
            "bools": (True, False), "bytes": b"\x00\x01",
        },
    ) as server:
        server.add_event("dropped: over max_events")
        server.add_event("decided", {"model": "m", "score": 0.5, "fallbacks": ("a", "b"), "n": 1})
        server.add_event("no attributes")
        with decide.start_as_current_span("probe.decide") as internal:
            internal.set_status(Status(StatusCode.OK))
        with chat.start_as_current_span("chat m", kind=SpanKind.CLIENT, attributes={"k" * 130: "long key"}) as client:
            client.set_status(Status(StatusCode.ERROR, "upstream timeout"))
        with rpc.start_as_current_span("probe/produce", kind=SpanKind.PRODUCER):
            pass
        with decide.start_as_current_span("probe/consume", kind=SpanKind.CONSUMER) as consumer:
            consumer.set_status(StatusCode.ERROR)
    if len(kept.spans) != 5:  # e.g. OTEL_SDK_DISABLED gives no-op tracers: an empty batch would prove nothing
        raise RuntimeError(f"the SDK made {len(kept.spans)} probe spans instead of 5")
    return kept.spans


class _KeptSpans(SpanExporter):
    """Keeps what it is given."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS
