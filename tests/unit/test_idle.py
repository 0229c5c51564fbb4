"""What an idle service does not do: poll its readiness once ready, or wake its metrics thread between scrapes."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import httpx
import pytest
from grpc_health.v1 import health, health_pb2

from routemesh.common.metrics import MetricsServer, new_registry
from routemesh.common.serve import RunningServer, Service, _track_readiness

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _status(servicer: health.aio.HealthServicer, name: str = "") -> int:
    response = await servicer.Check(health_pb2.HealthCheckRequest(service=name), None)
    return response.status


async def test_health_says_serving_once_ready_and_readiness_is_not_asked_again():
    asked = 0
    ready = False

    def is_ready() -> bool:
        nonlocal asked
        asked += 1
        return ready

    servicer = health.aio.HealthServicer()
    service = Service("svc", register=lambda server: None, grpc_services=["x.Svc"], ready=is_ready)
    running = RunningServer(server=None, port=0, health=servicer)  # type: ignore[arg-type]
    task = asyncio.create_task(_track_readiness(service, running, poll_s=0.01))
    await asyncio.sleep(0.05)
    assert await _status(servicer) == NOT_SERVING
    assert await _status(servicer, "x.Svc") == NOT_SERVING
    ready = True
    await asyncio.wait_for(task, 1.0)  # done once ready: an idle service is not woken to ask again
    assert await _status(servicer) == SERVING
    assert await _status(servicer, "x.Svc") == SERVING
    asked_then = asked
    await asyncio.sleep(0.05)
    assert asked == asked_then


async def test_a_service_ready_at_once_serves_without_waiting():
    servicer = health.aio.HealthServicer()
    service = Service("svc", register=lambda server: None, grpc_services=["x.Svc"])
    running = RunningServer(server=None, port=0, health=servicer)  # type: ignore[arg-type]
    await asyncio.wait_for(_track_readiness(service, running, poll_s=10.0), 1.0)
    assert await _status(servicer, "x.Svc") == SERVING


def test_the_metrics_endpoint_serves_scrapes_side_by_side_and_stops_at_once():
    server = MetricsServer(new_registry(), "127.0.0.1:0")
    server.start()
    thread = server._thread
    assert thread is not None
    try:
        results: list[int] = []

        def scrape() -> None:
            results.append(httpx.get(server.url, timeout=5).status_code)

        scrapers = [threading.Thread(target=scrape) for _ in range(4)]
        for scraper in scrapers:
            scraper.start()
        for scraper in scrapers:
            scraper.join(10)
        assert results == [200] * 4
        time.sleep(0.1)  # the listening thread is back in accept(), not in a poll it would first have to finish
        assert "process_cpu_seconds_total" in httpx.get(server.url, timeout=5).text
    finally:
        started = time.monotonic()
        server.stop()
    assert time.monotonic() - started < 1.0
    assert not thread.is_alive()
    server.stop()  # twice is harmless


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="reads /proc (Linux)")
def test_the_metrics_thread_sleeps_between_scrapes():
    """socketserver's serve_forever() would wake every 0.5 s; the metrics thread sleeps in accept()."""
    server = MetricsServer(new_registry(), "127.0.0.1:0")
    server.start()
    try:
        thread = server._thread
        assert thread is not None and thread.native_id is not None
        time.sleep(0.2)
        switches = _context_switches(thread.native_id)
        time.sleep(1.2)
        assert _context_switches(thread.native_id) == switches
    finally:
        server.stop()


def _context_switches(tid: int) -> int:
    """Voluntary context switches of one thread (Linux): each wakeup from a sleep counts one."""
    with open(f"/proc/self/task/{tid}/status") as handle:
        for line in handle:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches")
