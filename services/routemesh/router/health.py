"""Live model health for decisions: telemetry per request, the last snapshot when telemetry is down."""

from __future__ import annotations

import logging
import time

import grpc
from opentelemetry.trace import Status, StatusCode

from routemesh.common.channels import aio_channel, deadline_for
from routemesh.common.tracing import start_client_span
from routemesh.router.strategies import ModelHealthView
from routemesh.v1 import telemetry_pb2, telemetry_pb2_grpc

log = logging.getLogger(__name__)


def health_view(h: telemetry_pb2.ModelHealth) -> ModelHealthView:
    return ModelHealthView(
        samples=h.samples, error_rate=h.error_rate, ttft_p50_ms=h.ttft_p50_ms, ttft_p90_ms=h.ttft_p90_ms,
        ttft_p99_ms=h.ttft_p99_ms, tpot_p50_ms=h.tpot_p50_ms, tpot_p99_ms=h.tpot_p99_ms, in_flight=h.in_flight,
        requests_per_minute=h.requests_per_minute, tokens_per_minute=h.tokens_per_minute,
        last_observation_ms=h.last_observation_ms,
        circuit_open=h.circuit_state == telemetry_pb2.CIRCUIT_STATE_OPEN,
        # An older telemetry leaves the field unset (0): that says nothing, so admit everything.
        admit_fraction=h.admit_fraction if h.circuit_state else 1.0,
        circuit_half_open=h.circuit_state == telemetry_pb2.CIRCUIT_STATE_HALF_OPEN,
    )


class HealthSource:
    """Asks telemetry for a snapshot; keeps the last one for when telemetry does not answer."""

    def __init__(self, address: str, timeout_s: float = 0.3):
        self.address = address
        self.timeout_s = timeout_s
        self._stub: telemetry_pb2_grpc.TelemetryServiceStub | None = None
        self.last: dict[str, ModelHealthView] = {}
        self.last_at = 0.0

    async def snapshot(self, context: grpc.aio.ServicerContext | None) -> tuple[dict[str, ModelHealthView], bool]:
        """Health per model, and whether it is fresh (False: telemetry did not answer, last snapshot used)."""
        if self._stub is None:
            self._stub = telemetry_pb2_grpc.TelemetryServiceStub(aio_channel(self.address))
        span, metadata = start_client_span("routemesh.v1.TelemetryService/GetSnapshot")
        try:
            response = await self._stub.GetSnapshot(
                telemetry_pb2.GetSnapshotRequest(), metadata=metadata, timeout=deadline_for(context, self.timeout_s))
        except grpc.aio.AioRpcError as exc:
            span.set_status(Status(StatusCode.ERROR, exc.code().name))
            log.debug("telemetry unavailable (%s); using the snapshot from %.1f s ago", exc.code().name,
                      time.monotonic() - self.last_at if self.last_at else -1)
            return self.last, False
        finally:
            span.end()
        self.last = {h.model: health_view(h) for h in response.models}
        self.last_at = time.monotonic()
        return self.last, True
