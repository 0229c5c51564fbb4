"""Sends observations and request summaries to telemetry in the background: batched, bounded, never blocking."""

from __future__ import annotations

import asyncio
import logging
import time

import grpc

from routemesh.common.channels import TracedChannel, open_channel
from routemesh.common.tasks import cancel_and_wait
from routemesh.v1 import telemetry_pb2, telemetry_pb2_grpc

log = logging.getLogger(__name__)


class TelemetryReporter:
    """Queue items with `report()`; a task flushes them every `interval_s` or `batch` items."""

    def __init__(self, address: str, *, interval_s: float = 0.05, batch: int = 200, capacity: int = 10_000):
        self.address = address
        self.interval_s = interval_s
        self.batch = batch
        self._queue: asyncio.Queue[telemetry_pb2.Observation | telemetry_pb2.RequestSummary] = asyncio.Queue(
            maxsize=capacity)
        self._task: asyncio.Task[None] | None = None
        self._channel: TracedChannel | None = None
        self.dropped = 0
        self.sent = 0
        self._last_warning = 0.0

    def start(self) -> None:
        self._channel = open_channel(self.address)
        self._task = asyncio.create_task(self._run(), name="telemetry-reporter")

    def report(self, item: telemetry_pb2.Observation | telemetry_pb2.RequestSummary) -> None:
        """Queue one observation or request summary; drop it (and count) when the queue is full."""
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1

    async def _send(self, stub: telemetry_pb2_grpc.TelemetryServiceStub, items: list) -> None:
        request = telemetry_pb2.ReportRequest(
            observations=[i for i in items if isinstance(i, telemetry_pb2.Observation)],
            requests=[i for i in items if isinstance(i, telemetry_pb2.RequestSummary)],
        )
        try:
            await stub.Report(request, timeout=1.0)
            self.sent += len(items)
        except grpc.aio.AioRpcError as exc:
            self.dropped += len(items)
            now = time.monotonic()
            if now - self._last_warning > 10:
                self._last_warning = now
                log.warning("telemetry at %s unreachable (%s); %d observations dropped so far",
                            self.address, exc.code().name, self.dropped)

    async def _run(self) -> None:
        assert self._channel is not None
        stub = telemetry_pb2_grpc.TelemetryServiceStub(self._channel)
        queue = self._queue
        while True:
            items = [await queue.get()]
            # Let a batch gather for one interval, then take it all: one sleep per batch, not a timed wait
            # (a task) per item.
            if queue.qsize() < self.batch:
                await asyncio.sleep(self.interval_s)
            while not queue.empty() and len(items) < self.batch:
                items.append(queue.get_nowait())
            await self._send(stub, items)

    async def flush(self, timeout_s: float = 2.0) -> None:
        """Send what is queued now (used at shutdown)."""
        items = []
        while not self._queue.empty():
            items.append(self._queue.get_nowait())
        if items and self._channel is not None:
            stub = telemetry_pb2_grpc.TelemetryServiceStub(self._channel)
            await asyncio.wait_for(self._send(stub, items), timeout_s)

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        try:
            await self.flush()
        except TimeoutError:
            pass
        if self._channel:
            await self._channel.close()
