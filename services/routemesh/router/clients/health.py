"""Live model health for decisions: pushed by telemetry and read in-process (HealthWatch), or asked per request."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

import grpc

from routemesh.common.channels import TracedChannel, open_channel
from routemesh.common.outcomes import CircuitState
from routemesh.common.watch import WatchStream
from routemesh.router.decision.strategies import ModelHealthView
from routemesh.v1 import telemetry_pb2, telemetry_pb2_grpc

log = logging.getLogger(__name__)
# A watching router reports ready after the first push, or after this long without one.
READY_WITHOUT_PUSH_S = 3.0
QUERY_TIMEOUT_S = 0.3

Health = dict[str, ModelHealthView]


def health_view(h: telemetry_pb2.ModelHealth) -> ModelHealthView:
    return ModelHealthView(
        samples=h.samples, error_rate=h.error_rate, ttft_p50_ms=h.ttft_p50_ms, ttft_p90_ms=h.ttft_p90_ms,
        ttft_p99_ms=h.ttft_p99_ms, tpot_p50_ms=h.tpot_p50_ms, tpot_p99_ms=h.tpot_p99_ms, in_flight=h.in_flight,
        requests_per_minute=h.requests_per_minute, tokens_per_minute=h.tokens_per_minute,
        last_observation_ms=h.last_observation_ms,
        circuit_open=h.circuit_state == CircuitState.OPEN,
        # An older telemetry leaves the field unset (0): that says nothing, so admit everything.
        admit_fraction=h.admit_fraction if h.circuit_state else 1.0,
        circuit_half_open=h.circuit_state == CircuitState.HALF_OPEN,
        quality_signals={task: (q.score_sum, q.count) for task, q in h.quality_signals.items()} if h.quality_signals
        else {},
    )


def views_of(snapshot: telemetry_pb2.GetSnapshotResponse) -> Health:
    return {h.model: health_view(h) for h in snapshot.models}


class HealthSource:
    """Asks telemetry for a snapshot per decision; keeps the last one for when telemetry does not answer.

    One more RPC per request, and a telemetry span in each trace; HealthWatch (the default) has neither.
    """

    mode = "query"

    def __init__(self, address: str, timeout_s: float = QUERY_TIMEOUT_S):
        self.address = address
        self.timeout_s = timeout_s
        self._channel: TracedChannel | None = None
        self._stub: telemetry_pb2_grpc.TelemetryServiceStub | None = None
        self.last: Health = {}
        self.last_at = 0.0

    def start(self) -> None:
        self._channel = open_channel(self.address)
        self._stub = telemetry_pb2_grpc.TelemetryServiceStub(self._channel)

    async def stop(self) -> None:
        if self._channel is not None:
            await self._channel.close()

    async def snapshot(self) -> tuple[Health, bool]:
        """Health per model, and whether it is fresh (False: telemetry did not answer, last snapshot used)."""
        assert self._stub is not None, "start() first"
        try:
            response = await self._stub.GetSnapshot(telemetry_pb2.GetSnapshotRequest(), timeout=self.timeout_s)
        except grpc.aio.AioRpcError as exc:
            log.debug("telemetry unavailable (%s); using the snapshot from %.1f s ago", exc.code().name,
                      time.monotonic() - self.last_at if self.last_at else -1)
            return self.last, False
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


# Telemetry pushes health at least this often when nothing changes (milliseconds): an idle mesh stays quiet.
DEFAULT_HEARTBEAT_MS = 2_000

class HealthWatch:
    """Holds the latest snapshot telemetry pushes; decisions read it without awaiting anything.

    Telemetry pushes at most every `interval_ms` while reports arrive, and a heartbeat every `heartbeat_ms`
    when nothing does. Fresh while the newest push is at most `max_age_s` old (default: a heartbeat and a
    second); after that decisions still use it, flagged degraded ("telemetry"), and the watch is reopened
    (with backoff) — a silent telemetry is a frozen or lost one.
    """

    mode = "watch"

    def __init__(self, address: str, interval_ms: int = 250, max_age_s: float | None = None,
                 heartbeat_ms: int = DEFAULT_HEARTBEAT_MS):
        self.address = address
        self.interval_ms = interval_ms
        if max_age_s is not None:  # at least two heartbeats within it, or the watch would flap
            heartbeat_ms = min(heartbeat_ms, int(max_age_s * 500))
        self.heartbeat_ms = max(heartbeat_ms, interval_ms)
        self.max_age_s = max_age_s if max_age_s is not None else max(2.0, self.heartbeat_ms / 1000 + 1.0)
        self.last: Health = {}
        self.last_at = 0.0
        self.pushes = 0
        self._started_at = time.monotonic()
        self._watch = WatchStream("health", address, self._open, self._take, self._lost, silence_s=self.max_age_s)

    def start(self) -> None:
        self._started_at = time.monotonic()
        self._watch.start()

    async def stop(self) -> None:
        await self._watch.stop()

    def ready(self) -> bool:
        """After the first push, or a few seconds without one (a router without telemetry still serves)."""
        return bool(self.last_at) or time.monotonic() - self._started_at > READY_WITHOUT_PUSH_S

    def pushed(self) -> tuple[Health, bool]:
        """The latest push and whether it is fresh, read without awaiting (what snapshot() returns too)."""
        return self.last, bool(self.last_at) and time.monotonic() - self.last_at <= self.max_age_s

    async def snapshot(self) -> tuple[Health, bool]:
        return self.pushed()

    def age_s(self) -> float | None:
        return time.monotonic() - self.last_at if self.last_at else None

    def _open(self, channel: TracedChannel) -> AsyncIterator[telemetry_pb2.WatchSnapshotResponse]:
        request = telemetry_pb2.WatchSnapshotRequest(interval_ms=self.interval_ms, heartbeat_ms=self.heartbeat_ms)
        return telemetry_pb2_grpc.TelemetryServiceStub(channel).WatchSnapshot(request, wait_for_ready=True)

    def _take(self, response: telemetry_pb2.WatchSnapshotResponse) -> None:
        self.last = views_of(response.snapshot)
        self.last_at = time.monotonic()
        self.pushes += 1

    def _lost(self, code: grpc.StatusCode) -> None:
        log.warning("health watch to %s lost (%s); deciding on the snapshot from %.1f s ago",
                    self.address, code.name, self.age_s() or -1)
