"""A local OTLP/gRPC trace receiver for tests: a real gRPC server on a free port around a TraceService servicer."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc


@contextlib.contextmanager
def serve_trace_receiver(servicer: trace_service_pb2_grpc.TraceServiceServicer, workers: int = 2) -> Iterator[int]:
    """Serve `servicer` on 127.0.0.1; yield its port; stop it after."""
    server = grpc.server(futures.ThreadPoolExecutor(workers), options=[("grpc.so_reuseport", 0)])
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port
    finally:
        server.stop(None)
