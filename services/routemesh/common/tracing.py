"""OpenTelemetry set-up from the standard OTEL_* variables, and span helpers for gRPC hops."""

from __future__ import annotations

import atexit
import logging
import os
from collections.abc import Iterable, Sequence

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator


log = logging.getLogger(__name__)
_TRACER_NAME = "routemesh"
_capture_content = False
# trace.get_tracer builds a new Tracer (and its instrumentation scope) on every call: build it once.
_tracer: trace.Tracer | None = None


def tracing_enabled(environ: dict[str, str] | None = None) -> bool:
    """Tracing is off unless an OTLP endpoint or an explicit traces exporter is configured."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter not in ("none", "")
    return bool(env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def capture_content() -> bool:
    """Whether prompt and completion text may be recorded in spans (operator opt-in)."""
    return _capture_content


def init_tracing(service_name: str) -> bool:
    """Install a tracer provider for `service_name` when the environment asks for one; return whether it did."""
    global _capture_content, _tracer
    _capture_content = (
        os.environ.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "").lower() == "true"
    )
    if not tracing_enabled():
        return False
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
    exporters = [e.strip() for e in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").lower().split(",")]
    for name in exporters:
        if name == "otlp":
            protocol = os.environ.get(
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
            )
            if protocol != "grpc":
                log.warning("OTLP protocol %r is not supported; using grpc", protocol)
            from routemesh.common.span_export import span_exporter

            provider.add_span_processor(BatchSpanProcessor(span_exporter()))
        elif name == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        elif name not in ("none", ""):
            log.warning("unknown OTEL_TRACES_EXPORTER %r ignored", name)
    trace.set_tracer_provider(provider)
    _tracer = None  # the next tracer() comes from this provider
    atexit.register(provider.shutdown)
    return True


def shutdown_tracing() -> None:
    """Flush and stop the tracer provider, if one was installed."""
    provider = trace.get_tracer_provider()
    shutdown = getattr(provider, "shutdown", None)
    if shutdown:
        shutdown()


def tracer() -> trace.Tracer:
    """The routemesh tracer (a no-op one when tracing is off), built once.

    Before a provider is installed this is OpenTelemetry's proxy tracer, which follows the provider
    installed later.
    """
    global _tracer
    if _tracer is None:
        _tracer = trace.get_tracer(_TRACER_NAME)
    return _tracer


class _MetadataGetter:
    def get(self, carrier: dict[str, str], key: str) -> list[str] | None:
        value = carrier.get(key.lower())
        return [value] if value is not None else None

    def keys(self, carrier: dict[str, str]) -> list[str]:
        return list(carrier)


_GETTER = _MetadataGetter()
# A message field named traceparent is W3C trace context whatever OTEL_PROPAGATORS says about headers.
_W3C = TraceContextTextMapPropagator()


def extract_context(metadata: Iterable[tuple[str, str | bytes]] | None) -> otel_context.Context:
    """The OpenTelemetry context carried in gRPC invocation metadata."""
    carrier = {k: v for k, v in (metadata or ()) if isinstance(v, str)}
    return propagate.extract(carrier, getter=_GETTER)


def traceparent() -> str:
    """The W3C traceparent of the current span when it is recording (sampled), else empty: for a request carried
    in a message (a multiplexed call), whose callee makes its span a child of it (context_of_traceparent)."""
    if not trace.get_current_span().is_recording():
        return ""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return carrier.get("traceparent", "")


def context_of_traceparent(value: str) -> otel_context.Context:
    """The OpenTelemetry context a W3C traceparent names (traceparent())."""
    return _W3C.extract({"traceparent": value})


def inject_headers(headers: dict[str, str], span: Span) -> None:
    """Put the W3C trace context of `span` into HTTP headers."""
    propagate.inject(headers, context=trace.set_span_in_context(span))


def trace_id_hex(span: Span | None = None) -> str:
    """The current (or given) span's trace id as 32 hex digits, empty when not sampled or off."""
    ctx = (span or trace.get_current_span()).get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else ""


def set_attributes(span: Span, attributes: dict[str, object]) -> None:
    """Set only the attributes that have a value."""
    if span.is_recording():
        span.set_attributes({k: v for k, v in attributes.items() if v is not None and v != ""})  # type: ignore[misc]


def join(values: Sequence[str]) -> str:
    """Lists as one comma-separated attribute value (readable in Jaeger)."""
    return ",".join(values)
