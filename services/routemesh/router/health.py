"""Live model health for decisions: pushed by telemetry and read in-process, or asked per request.

HealthWatch (the default) keeps one WatchSnapshot stream open and serves every decision from the latest
snapshot: no RPC on the request path, health at most one push interval plus telemetry's 0.2 s cache old.
HealthSource asks telemetry on every request (one more RPC, ~0.5 ms, and a telemetry span in each trace).
Both fall back to the last snapshot, flagged not fresh, when telemetry does not answer.
"""

from __future__ import annotations

import asyncio
import logging
import time

import grpc
from opentelemetry.trace import Status, StatusCode

from routemesh.common.channels import aio_channel, deadline_for
from routemesh.common.tasks import cancel_and_wait
from routemesh.common.tracing import start_client_span
from routemesh.router.strategies import ModelHealthView
from routemesh.v1 import telemetry_pb2, telemetry_pb2_grpc

log = logging.getLogger(__name__)
# A watching router reports ready after the first push, or after this long without one.
READY_WITHOUT_PUSH_S = 3.0


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


def views_of(snapshot: telemetry_pb2.GetSnapshotResponse) -> dict[str, ModelHealthView]:
    return {h.model: health_view(h) for h in snapshot.models}


class HealthSource:
    """Asks telemetry for a snapshot; keeps the last one for when telemetry does not answer."""

    mode = "query"

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
        self.last = views_of(response)
        self.last_at = time.monotonic()
        return self.last, True

    def age_s(self) -> float | None:
        return time.monotonic() - self.last_at if self.last_at else None

    def pushed(self) -> None:
        """Nothing is pushed here: every decision awaits snapshot()."""
        return None

    def ready(self) -> bool:
        return True

    def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


class HealthWatch:
    """Holds the latest snapshot telemetry pushes; decisions read it without awaiting anything.

    Fresh while the newest push is at most `max_age_s` old; after that decisions still use it, flagged
    degraded ("telemetry"), while the watch reconnects with backoff.
    """

    mode = "watch"

    def __init__(self, address: str, interval_ms: int = 250, max_age_s: float = 2.0):
        self.address = address
        self.interval_ms = interval_ms
        self.max_age_s = max_age_s
        self.last: dict[str, ModelHealthView] = {}
        self.last_at = 0.0
        self.pushes = 0
        self._task: asyncio.Task[None] | None = None
        self._started_at = time.monotonic()

    def start(self) -> None:
        self._started_at = time.monotonic()
        self._task = asyncio.create_task(self._run(), name="health-watch")

    def ready(self) -> bool:
        """After the first push, or a few seconds without one (a router without telemetry still serves)."""
        return bool(self.last_at) or time.monotonic() - self._started_at > READY_WITHOUT_PUSH_S

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    def pushed(self) -> tuple[dict[str, ModelHealthView], bool]:
        """The latest push and whether it is fresh, read without awaiting (what snapshot() returns too)."""
        return self.last, bool(self.last_at) and time.monotonic() - self.last_at <= self.max_age_s

    async def snapshot(self, context: grpc.aio.ServicerContext | None) -> tuple[dict[str, ModelHealthView], bool]:
        return self.pushed()

    def age_s(self) -> float | None:
        return time.monotonic() - self.last_at if self.last_at else None

    async def _run(self) -> None:
        backoff = 0.1
        channel = aio_channel(self.address)
        stub = telemetry_pb2_grpc.TelemetryServiceStub(channel)
        request = telemetry_pb2.WatchSnapshotRequest(interval_ms=self.interval_ms)
        try:
            while True:
                try:
                    async for response in stub.WatchSnapshot(request, wait_for_ready=True):
                        self.last = views_of(response.snapshot)
                        self.last_at = time.monotonic()
                        self.pushes += 1
                        backoff = 0.1
                except grpc.aio.AioRpcError as exc:
                    log.warning("health watch to %s lost (%s); deciding on the snapshot from %.1f s ago",
                                self.address, exc.code().name, self.age_s() or -1)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
        finally:
            await channel.close()
