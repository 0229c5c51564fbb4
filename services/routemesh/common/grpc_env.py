"""gRPC core settings a service process needs in its environment before grpc starts.

grpc core reads GRPC_EXPERIMENTS once, when it initialises, so `routemesh serve` applies these before anything
imports grpc. This module must not import grpc itself.

Since grpc 1.6x, socket I/O runs on EventEngine worker threads (experiments event_engine_client,
event_engine_listener and event_engine_for_all_other_endpoints, on by default). In a grpc.aio process every
message then crosses three threads: an EventEngine worker reads the socket, the completion-queue poller thread
picks the event up, and the asyncio loop runs the handler. With the three experiments off, the poller thread does
the socket I/O itself: one hand-off fewer per message (the measured effect is in docs/bench/README.md).

grpcio is pinned (pyproject.toml), so these names stay valid; an operator's own GRPC_EXPERIMENTS wins
(an empty value restores grpc's defaults).
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

GRPC_EXPERIMENTS_VAR = "GRPC_EXPERIMENTS"
SERVICE_GRPC_EXPERIMENTS = "-event_engine_client,-event_engine_listener,-event_engine_for_all_other_endpoints"


def apply_service_defaults(environ: MutableMapping[str, str] = os.environ) -> None:
    """Set the services' gRPC defaults unless the operator chose otherwise."""
    environ.setdefault(GRPC_EXPERIMENTS_VAR, SERVICE_GRPC_EXPERIMENTS)
