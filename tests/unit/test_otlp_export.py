"""The fast OTLP span encoding is the stock one, the exporter behaves as stock, and the stock one stands in for it."""

from __future__ import annotations

import atexit
import importlib
import importlib.util
import logging
import math
import sys
import threading
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.json_format import MessageToDict
from google.rpc.error_details_pb2 import RetryInfo
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.exporter import OTLPExporterMixin
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace import set_span_in_context
from opentelemetry.trace.span import TraceState

from routemesh.common import otlp_export, span_export, tracing
from routemesh.common.otlp_export import FastOTLPSpanExporter, encode_spans_bytes
from tests.otlp_receiver import serve_trace_receiver


class _Collect(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans):
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


def _provider(resource: Resource, collect: _Collect, **kwargs) -> TracerProvider:
    provider = TracerProvider(resource=resource, **kwargs)
    provider.add_span_processor(SimpleSpanProcessor(collect))
    return provider


def _assert_same_encoding(spans) -> ExportTraceServiceRequest:
    stock = encode_spans(spans)
    fast = encode_spans_bytes(spans)
    assert ExportTraceServiceRequest.FromString(fast) == stock
    # Fields are written in the order upb serializes them, so the bytes match too (only message equality is
    # the contract: should a protobuf release reorder its output, this line alone would need to go).
    assert fast == stock.SerializeToString()
    return stock


def _mixed_spans() -> list[ReadableSpan]:
    collect = _Collect()
    router = _provider(
        Resource.create({"service.name": "routemesh-router", "deployment.ids": ("a", "b")}, schema_url="https://x/1"),
        collect,
        span_limits=SpanLimits(max_span_attributes=12, max_events=2, max_links=1, max_event_attributes=2,
                               max_link_attributes=1),
    )
    executor = _provider(Resource.create({"service.name": "routemesh-executor"}), collect)
    rpc = router.get_tracer("routemesh", "1.2.3", schema_url="https://schema/1.26",
                            attributes={"scope.attr": "on", "n": 3})
    other = router.get_tracer("other.lib")
    exec_tracer = executor.get_tracer("routemesh")

    remote_parent = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, is_remote=True,
                                trace_flags=TraceFlags(1), trace_state=TraceState([("vendor", "v1"), ("rm", "x")]))
    linked = SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(1))
    local_link = SpanContext(0x9999, 0x8888, is_remote=False)

    with rpc.start_as_current_span(
        "routemesh.v1.RouterService/Chat", kind=SpanKind.SERVER,
        context=set_span_in_context(NonRecordingSpan(remote_parent)),
        attributes={
            "rpc.system": "grpc", "rpc.method": "Chat", "empty": "", "unicode": "zébra ✓ 🦓",
            "long": "x" * 130, "longer": "y" * 20000, "tokens": 1234, "zero": 0, "negative": -5,
            "int64.min": -(2**63), "int64.max": 2**63 - 1, "cost": 0.00125, "nan": math.nan, "inf": -math.inf,
            "flag": True, "off": False,
        },
        links=[Link(local_link), Link(linked, {"link.kind": "retry-of", "dropped": 1})],  # the first is dropped
    ) as server:
        server.add_event("dropped: over the limit of 2")
        server.add_event("decided", {"model": "gpt-4o-mini", "score": 0.5, "fallbacks": ("a", "b"), "x": 1})
        server.add_event("no attributes")
        with other.start_as_current_span("routemesh.decide") as internal:
            internal.set_attributes({
                "strs": ("a", "", "é"), "ints": [1, -2, 2**40], "floats": (0.5, -1.0), "bools": (True, False),
                "empty.seq": (), "bytes": b"\x00\x01", "mixed.none": ("a", None), "big": 2**70,
            })
            internal.set_status(Status(StatusCode.OK))
        with exec_tracer.start_as_current_span("chat gpt-4o-mini", kind=SpanKind.CLIENT) as client:
            client.set_attribute("gen_ai.request.model", "gpt-4o-mini")
            # Lengths around the one-byte/two-byte/three-byte varint boundaries of the nested lengths.
            client.set_attributes({f"len.{n}": "z" * n for n in (63, 64, 65, 124, 125, 126, 127, 128, 16380, 16384)})
            client.set_attribute("k" * 130, "long key")
            client.set_status(Status(StatusCode.ERROR, "upstream timeout"))
        with rpc.start_as_current_span("produce", kind=SpanKind.PRODUCER):
            pass
        with other.start_as_current_span("consume", kind=SpanKind.CONSUMER) as consumer:
            consumer.set_status(StatusCode.ERROR)
    with exec_tracer.start_as_current_span("root without attributes"):
        pass
    with rpc.start_as_current_span("another root", attributes={"rpc.system": "grpc", "rpc.method": "Chat"}):
        pass
    return collect.spans


def test_the_fast_encoding_is_the_stock_encoding():
    spans = _mixed_spans()
    stock = _assert_same_encoding(spans)
    # The batch really covers what it should: two resources, several scopes, every kind, drops, a remote parent.
    assert len(stock.resource_spans) == 2
    assert sum(len(r.scope_spans) for r in stock.resource_spans) == 3
    all_spans = [s for r in stock.resource_spans for sc in r.scope_spans for s in sc.spans]
    assert {s.kind for s in all_spans} == {1, 2, 3, 4, 5}
    server = next(s for s in all_spans if s.name == "routemesh.v1.RouterService/Chat")
    assert server.trace_state and server.parent_span_id and server.flags == 0x300
    assert server.dropped_attributes_count and server.dropped_events_count and server.dropped_links_count
    assert server.events[0].dropped_attributes_count == 2 and server.links[0].dropped_attributes_count == 1
    assert server.links[0].flags == 0x300
    assert any(s.status.message == "upstream timeout" for s in all_spans)


def test_interleaved_and_equal_but_distinct_resources_and_scopes_group_as_stock():
    collect = _Collect()
    # Two providers with equal resources: the stock encoder groups by equality, keeping the first object.
    a = _provider(Resource.create({"service.name": "svc"}), collect)
    b = _provider(Resource.create({"service.name": "svc"}), collect)
    c = _provider(Resource.create({"service.name": "other"}), collect)
    tracers = [a.get_tracer("one"), c.get_tracer("one"), b.get_tracer("one", attributes={"differs": True}),
               a.get_tracer("two"), b.get_tracer("two"), c.get_tracer("two", "9")]
    for i in range(30):
        with tracers[i % len(tracers)].start_as_current_span(f"span {i}", attributes={"i": i}):
            pass
    assert len({id(s.resource) for s in collect.spans}) == 3
    stock = _assert_same_encoding(collect.spans)
    # Scopes are equal with equal attributes too: svc has one, one{differs}, two (of a and b); other has two.
    assert [len(r.scope_spans) for r in stock.resource_spans] == [3, 2]


def test_spans_without_scope_and_hand_built_spans():
    context = SpanContext(0xABC, 0xDEF, is_remote=False)
    spans = [
        ReadableSpan("bare", context=context),  # no scope, no times, a plain resource
        ReadableSpan(
            "dict attributes", context=context, parent=SpanContext(0xABC, 0x1, is_remote=False),
            attributes={"map": {"k": "v", "n": 1}, "plain": "v", 7: "bad key"},  # type: ignore[dict-item]
            events=[Event("e", {"k": "v"}, timestamp=5)],
            links=[Link(SpanContext(0xABC, 0x2, is_remote=False), {"l": 1.5})],
            kind=SpanKind.CLIENT, start_time=1, end_time=2,
            instrumentation_scope=InstrumentationScope("scope", "1", "https://s", {"a": ("x",)}),
            status=Status(StatusCode.ERROR, "boom"),
        ),
    ]
    _assert_same_encoding(spans)


class _PropertySpan(ReadableSpan):
    """A ReadableSpan subclass: the encoder must go through the public properties."""

    @property
    def name(self) -> str:
        return "renamed " + self._name


def test_the_public_property_path_matches_too(monkeypatch):
    spans = _mixed_spans()
    monkeypatch.setattr(otlp_export, "_READ_PRIVATE", False)
    monkeypatch.setattr(otlp_export, "_BOUNDED_DICT", False)
    _assert_same_encoding(spans)
    monkeypatch.undo()
    sub = [_PropertySpan(s.name, context=s.context, parent=s.parent, resource=s.resource, attributes=s.attributes,
                         events=s.events, links=s.links, kind=s.kind, status=s.status, start_time=s.start_time,
                         end_time=s.end_time, instrumentation_scope=s.instrumentation_scope) for s in spans]
    stock = _assert_same_encoding(sub)
    assert stock.resource_spans[0].scope_spans[0].spans[0].name.startswith("renamed ")


def test_the_private_field_probe_accepts_this_sdk():
    # Fails when an SDK upgrade changes ReadableSpan's layout: the encoder then still works (public properties),
    # only slower; check the new layout and adjust.
    assert otlp_export._READ_PRIVATE and otlp_export._BOUNDED_DICT


def test_unencodable_attributes_are_logged_and_dropped_as_stock(caplog):
    context = SpanContext(0xABC, 0xDEF, is_remote=False)
    span = ReadableSpan("s", context=context, attributes={"ok": "v", "surrogate": "a\ud800b", "huge": 2**64})
    with caplog.at_level(logging.ERROR):
        _assert_same_encoding([span])
    assert sum("Failed to encode key surrogate" in r.getMessage() for r in caplog.records) == 2  # stock and fast
    request = ExportTraceServiceRequest.FromString(encode_spans_bytes([span]))
    assert [a.key for a in request.resource_spans[0].scope_spans[0].spans[0].attributes] == ["ok"]


def test_repeated_batches_hit_the_caches_and_stay_identical():
    spans = _mixed_spans()
    first = encode_spans_bytes(spans)
    assert encode_spans_bytes(spans) == first
    otlp_export._str_entries[otlp_export._SPAN_ATTRIBUTES].clear()
    otlp_export._key_fields.clear()
    otlp_export._resource_fields.clear()
    assert encode_spans_bytes(spans) == first


def test_an_empty_batch():
    _assert_same_encoding([])


class _Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.requests: list[bytes] = []
        self.metadata: list[dict[str, str]] = []
        self.fail_next = 0
        self.lock = threading.Lock()

    def Export(self, request, context):  # noqa: N802 - gRPC method name
        with self.lock:
            if self.fail_next:
                self.fail_next -= 1
                retry = RetryInfo(retry_delay=Duration(nanos=10_000_000)).SerializeToString()
                context.set_trailing_metadata((("google.rpc.retryinfo-bin", retry),))
                context.abort(grpc.StatusCode.UNAVAILABLE, "try again")
            self.requests.append(request.SerializeToString())
            self.metadata.append({k: v for k, v in context.invocation_metadata() if isinstance(v, str)})
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
def receiver() -> Iterator[tuple[_Receiver, int]]:
    servicer = _Receiver()
    with serve_trace_receiver(servicer) as port:
        yield servicer, port


def test_export_over_grpc_arrives_as_the_stock_request(receiver, monkeypatch):
    servicer, port = receiver
    # Configuration comes from the standard variables, as for the stock exporter.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=acme,authorization=Bearer%20t")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "5")
    spans = _mixed_spans()
    exporter = FastOTLPSpanExporter()
    try:
        assert exporter._insecure and exporter._endpoint == f"127.0.0.1:{port}"
        assert exporter._compression == grpc.Compression.Gzip and exporter._timeout == 5
        assert exporter.export(spans) == SpanExportResult.SUCCESS
        assert ExportTraceServiceRequest.FromString(servicer.requests[0]) == encode_spans(spans)
        assert servicer.metadata[0]["x-tenant"] == "acme"
        assert servicer.metadata[0]["authorization"] == "Bearer t"
    finally:
        exporter.shutdown()
    assert exporter.export(spans) == SpanExportResult.FAILURE  # shut down: refused, as stock


def test_a_retried_export_after_unavailable_reconnects_and_still_sends_bytes(receiver):
    servicer, port = receiver
    servicer.fail_next = 1  # UNAVAILABLE once: the stock exporter re-creates the channel and stub, then retries
    spans = _mixed_spans()
    exporter = FastOTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True, timeout=5)
    first_channel = exporter._channel
    try:
        assert exporter.export(spans) == SpanExportResult.SUCCESS
        assert exporter._channel is not first_channel
        assert isinstance(exporter._client, otlp_export._SerializedTraceServiceStub)
        assert [ExportTraceServiceRequest.FromString(r) for r in servicer.requests] == [encode_spans(spans)]
    finally:
        exporter.shutdown()


# The seam: which exporter a service gets (span_export.span_exporter), and the start-up probe behind it.


def test_the_probe_batch_covers_what_the_fast_encoder_writes_and_encodes_as_stock():
    stock = _assert_same_encoding(span_export.probe_spans())
    assert len(stock.resource_spans) == 2 and stock.resource_spans[0].schema_url
    scopes = [sc for r in stock.resource_spans for sc in r.scope_spans]
    assert len(scopes) == 3 and any(sc.scope.version and sc.scope.attributes and sc.schema_url for sc in scopes)
    spans = [s for sc in scopes for s in sc.spans]
    assert {s.kind for s in spans} == {1, 2, 3, 4, 5}
    values = [a.value for s in spans for a in s.attributes]
    assert {v.WhichOneof("value") for v in values} == {
        "string_value", "int_value", "double_value", "bool_value", "array_value", "bytes_value"}
    arrays = [v.array_value.values for v in values if v.WhichOneof("value") == "array_value"]
    assert {items[0].WhichOneof("value") for items in arrays} == {"string_value", "int_value", "double_value",
                                                                   "bool_value"}
    server = next(s for s in spans if s.name == "probe/Chat")
    assert server.flags == 0x300 and server.dropped_events_count and server.dropped_links_count
    assert server.events[0].attributes and {link.flags for link in server.links} == {0x100, 0x300}
    assert {s.status.code for s in spans} == {0, 1, 2} and any(s.status.message for s in spans)


def test_the_probe_trusts_the_fast_exporter_with_this_opentelemetry(caplog):
    # Fails when an OpenTelemetry upgrade changes what the fast exporter relies on: services then run the stock
    # exporter (correct, slower). Read the reason, adjust otlp_export.py, or accept the stock exporter.
    assert span_export.fast_exporter_problem() is None
    with caplog.at_level(logging.WARNING, logger=span_export.__name__):
        exporter = span_export.span_exporter({})
    exporter.shutdown()
    assert type(exporter) is FastOTLPSpanExporter
    assert not caplog.records


@pytest.mark.parametrize("value, expected", [
    (None, span_export.FAST), ("", span_export.FAST), ("fast", span_export.FAST), (" Stock ", span_export.STOCK),
    ("STOCK", span_export.STOCK),
])
def test_the_encoder_setting(value, expected):
    environ = {} if value is None else {span_export.OTLP_ENCODER_VAR: value}
    assert span_export.otlp_encoder(environ) == expected


def test_an_invalid_encoder_setting_ends_start_up_with_a_clear_message(monkeypatch):
    monkeypatch.setattr(span_export, "fast_exporter_problem", _must_not_run)
    with pytest.raises(SystemExit) as raised:
        span_export.span_exporter({span_export.OTLP_ENCODER_VAR: "stokc"})
    assert str(raised.value) == "ROUTEMESH_OTLP_ENCODER must be 'fast' or 'stock', got 'stokc'"


def _must_not_run(*args, **kwargs):
    raise AssertionError("the stock exporter was forced: the fast one must not be probed or used")


def test_with_the_stock_exporter_forced_tracing_exports_to_a_real_receiver(receiver, monkeypatch):
    servicer, port = receiver
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_SDK_DISABLED", "OTEL_TRACES_SAMPLER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv(span_export.OTLP_ENCODER_VAR, "stock")
    monkeypatch.setattr(span_export, "fast_exporter_problem", _must_not_run)
    monkeypatch.setattr(FastOTLPSpanExporter, "_translate_data", _must_not_run)
    made: list[SpanExporter] = []
    stock_choice = span_export.span_exporter
    monkeypatch.setattr(span_export, "span_exporter", lambda: made.append(stock_choice()) or made[-1])
    # init_tracing installs the process-wide provider once; keep it (and its atexit hook) out of the other tests.
    installed: list[TracerProvider] = []
    monkeypatch.setattr(trace, "set_tracer_provider", installed.append)
    monkeypatch.setattr(atexit, "register", lambda *args: None)
    monkeypatch.setattr(tracing, "_tracer", None)
    monkeypatch.setattr(tracing, "_capture_content", False)

    assert tracing.init_tracing("routemesh-stock-test")
    provider = installed[0]
    try:
        with provider.get_tracer("routemesh").start_as_current_span("stock path", attributes={"n": 1, "s": "v"}):
            pass
        assert provider.force_flush(5_000)
    finally:
        provider.shutdown()
    assert [type(exporter) for exporter in made] == [OTLPSpanExporter]
    requests = [ExportTraceServiceRequest.FromString(raw) for raw in servicer.requests]
    resource_spans = [r for request in requests for r in request.resource_spans]
    assert [s.name for r in resource_spans for sc in r.scope_spans for s in sc.spans] == ["stock path"]
    assert {"key": "service.name", "value": {"stringValue": "routemesh-stock-test"}} in [
        MessageToDict(a) for a in resource_spans[0].resource.attributes]


def _stub_not_from_stub_attribute(self):
    # A stock release that builds its client without reading self._stub.
    self._channel = grpc.insecure_channel(self._endpoint)
    self._client = trace_service_pb2_grpc.TraceServiceStub(self._channel)


def _export_serializing_itself(self, data):
    # A stock release whose export path builds the request itself instead of calling _translate_data.
    self._client.Export(request=encode_spans(data), metadata=self._headers, timeout=self._timeout)
    return self._result.SUCCESS


def _raise(*args, **kwargs):
    raise RuntimeError("simulated change")


_CHANGES = {
    "no _translate_data": (lambda m: m.delattr(OTLPSpanExporter, "_translate_data"),
                           "OTLPSpanExporter has no _translate_data for the fast exporter to override"),
    "client not from _stub": (lambda m: m.setattr(OTLPExporterMixin, "_initialize_channel_and_stub",
                                                  _stub_not_from_stub_attribute),
                              "the stock exporter did not build its client from the _stub the fast one sets"),
    "export serializes itself": (lambda m: m.setattr(OTLPExporterMixin, "_export", _export_serializing_itself),
                                 "the stock export path sent a ExportTraceServiceRequest, not what _translate_data"),
    "different bytes": (lambda m: m.setattr(otlp_export, "_SPAN_FLAGS_LOCAL", b""),
                        "the probe batch encodes differently from encode_spans(): "),
    "stock encoder changed": (lambda m: m.setattr(span_export, "encode_spans", _stock_with_a_new_field),
                              "the probe batch encodes differently from encode_spans(): "),
    "encoder raises": (lambda m: m.setattr(otlp_export, "_encode_status", _raise),
                       "the probe raised RuntimeError('simulated change')"),
}


def _stock_with_a_new_field(spans):
    request = encode_spans(spans)
    request.resource_spans[0].scope_spans[0].spans[0].flags |= 0x1
    return request


@pytest.mark.parametrize("change", list(_CHANGES))
def test_the_probe_falls_back_to_the_stock_exporter_when_the_internals_differ(change, monkeypatch, caplog):
    simulate, reason = _CHANGES[change]
    simulate(monkeypatch)
    with caplog.at_level(logging.WARNING, logger=span_export.__name__):
        exporter = span_export.span_exporter({})
    exporter.shutdown()
    assert type(exporter) is OTLPSpanExporter
    warnings = [r.getMessage() for r in caplog.records if r.name == span_export.__name__]
    assert len(warnings) == 1 and reason in warnings[0], warnings
    assert "using the stock exporter" in warnings[0]


def test_missing_private_encoders_fail_the_probe_not_the_import(monkeypatch, caplog):
    # A release without one of the private names: importing the fast module still works, the probe says why not.
    monkeypatch.delattr(importlib.import_module("opentelemetry.exporter.otlp.proto.common._internal"),
                        "_encode_resource")
    spec = importlib.util.find_spec(otlp_export.__name__)
    without = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(without)
    assert "_encode_resource" in without.MISSING_INTERNALS
    monkeypatch.setitem(sys.modules, otlp_export.__name__, without)
    with caplog.at_level(logging.WARNING, logger=span_export.__name__):
        exporter = span_export.span_exporter({})
    exporter.shutdown()
    assert type(exporter) is OTLPSpanExporter
    warnings = [r.getMessage() for r in caplog.records if r.name == span_export.__name__]
    assert len(warnings) == 1 and "OpenTelemetry's private OTLP encoders are not there" in warnings[0], warnings


def test_after_a_fallback_the_stock_exporter_delivers(receiver, monkeypatch):
    servicer, port = receiver
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(otlp_export, "_SPAN_FLAGS_LOCAL", b"")
    exporter = span_export.span_exporter({})
    spans = _mixed_spans()
    try:
        assert exporter.export(spans) == SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    assert type(exporter) is OTLPSpanExporter
    assert [ExportTraceServiceRequest.FromString(r) for r in servicer.requests] == [encode_spans(spans)]
