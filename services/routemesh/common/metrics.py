"""Prometheus metrics shared by every service: the registry, bucket bounds, bounded labels and the /metrics endpoint.

Each service keeps its instruments in its own `metrics.py` on a registry from `new_registry()`; a service started
with `--metrics-listen HOST:PORT` serves it from a thread (`MetricsServer`), and one started without builds no
registry at all, so its request path does not even test a recorder.

Why a thread (prometheus_client's own WSGI server) and not a handler on the service's event loop: a scrape then
never waits for the loop (a busy loop still answers, and process CPU and memory are still read), and the loop
never waits for a whole scrape: the thread holds the interpreter a switch interval (5 ms) at a time. Values
that live on the loop are read by collectors at scrape time from what is already in memory (a pushed
snapshot, a stats object, a cache a loop task refreshes): no collector awaits anything.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator
import socket
from wsgiref.simple_server import make_server

from prometheus_client import CollectorRegistry, Gauge, disable_created_metrics, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from routemesh.common.tasks import cancel_and_wait, split_listen

log = logging.getLogger(__name__)

# Latency histograms (seconds): 1 ms to 60 s, the GenAI semantic conventions' advice cut to what a chat spans.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# gen_ai.client.token.usage: the buckets the GenAI semantic conventions advise (powers of 4 from 1).
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
# Label values that are not in the policy collapse to this once a label has seen its fill of them.
OTHER = "other"
# Distinct values a caller-supplied label (a tenant the policy does not name) may take before OTHER.
DEFAULT_MAX_VALUES = 100
# How often loop-side readings for scrape-time collectors are refreshed (budgets, telemetry's snapshot).
REFRESH_S = 5.0


def new_registry() -> CollectorRegistry:
    """A service's registry, with the process (CPU, memory, open files), platform and Python GC collectors.

    Counters and histograms get no `_created` series: they would double what every scrape carries, and
    Prometheus does not need them to compute rates.
    """
    disable_created_metrics()
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


# routemesh_breaker_state's values.
BREAKER_CLOSED, BREAKER_HALF_OPEN, BREAKER_OPEN = 0, 1, 2


def breaker_family(states: Iterable[tuple[str, int]]) -> GaugeMetricFamily:
    """`routemesh_breaker_state{model}` from (model, value) pairs (the router's and telemetry's)."""
    family = GaugeMetricFamily("routemesh_breaker_state", "Circuit breaker of a model: 0 closed, 1 half-open, 2 open",
                               labels=["model"])
    for model, value in states:
        family.add_metric([model], value)
    return family


def policy_version_gauge(registry: CollectorRegistry, version: Callable[[], int]) -> Gauge:
    """`routemesh_policy_version`: the policy version this process applies (0 before it holds one), read at scrape."""
    gauge = Gauge("routemesh_policy_version", "Version of the routing policy this process applies (0: none yet)",
                  registry=registry)
    gauge.set_function(lambda: float(version()))
    return gauge


class BoundedLabel:
    """Keeps a caller-supplied label value's cardinality bounded: values the policy names always pass; others
    pass until `max_values` distinct ones were seen, after which new ones read OTHER (for the process's life).

    `known` is re-read from the policy on every call (a callable), so a tenant added to the policy is its own
    series at once. The set of others seen only grows: a value once admitted keeps its own series.
    """

    __slots__ = ("_known", "_seen", "max_values")

    def __init__(self, known: Callable[[], Iterable[str]] = frozenset, max_values: int = DEFAULT_MAX_VALUES):
        self._known = known
        self._seen: set[str] = set()
        self.max_values = max_values

    def __call__(self, value: str) -> str:
        if not value or value in self._seen:
            return value
        if value in self._known():
            return value
        if len(self._seen) >= self.max_values:
            return OTHER
        self._seen.add(value)
        return value


class FunctionCollector(Collector):
    """A collector whose families come from a function called at scrape time (in the scrape's thread).

    The function must only read what is already in memory; an exception is logged and the families left
    out, so one broken reading never fails the whole scrape.
    """

    def __init__(self, name: str, collect: Callable[[], Iterable[GaugeMetricFamily]]):
        self.name = name
        self._collect = collect

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            families = list(self._collect())
        except Exception:  # noqa: BLE001 - a scrape shows what it can
            log.exception("metrics collector %s failed", self.name)
            return iter(())
        return iter(families)

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())  # families vary with the policy: nothing is declared ahead


class LoopReadings:
    """Refreshes readings that need the event loop (an await) every `interval_s`, for collectors to read.

    Runs as a task on the service's loop between start() and stop(); each reading's last value stays in
    `values` (absent until its first success), so a scrape reads memory only. A reading that returns None has
    nothing to read yet (no policy held): it is asked again within half a second rather than an interval.
    """

    def __init__(self, readings: dict[str, Callable[[], Awaitable[object]]], interval_s: float = REFRESH_S):
        self.readings = readings
        self.interval_s = interval_s
        self.values: dict[str, object] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="metrics-readings")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def refresh(self) -> bool:
        """Read everything once; whether every reading had something to read."""
        ready = True
        for name, read in self.readings.items():
            try:
                value = await read()
            except Exception as exc:  # noqa: BLE001 - keep the last value; say why once per refresh
                log.warning("metrics reading %s failed: %s", name, exc)
                continue
            if value is None:
                ready = False
            else:
                self.values[name] = value
        return ready

    async def _run(self) -> None:
        while True:
            ready = await self.refresh()
            await asyncio.sleep(self.interval_s if ready else min(0.5, self.interval_s))


class _AcceptingServer(ThreadingWSGIServer):
    """prometheus_client's server (a thread per scrape), whose thread blocks in accept() instead of polling.

    socketserver's serve_forever() wakes every half second to look for a shutdown request: in an idle mesh,
    two wakeups a second per service for nothing. Here the listening thread sleeps in accept() until a scrape
    connects; close() shuts the listening socket down, which ends that accept() at once (Linux).
    """

    _closing = False

    def serve_until_closed(self) -> None:
        while not self._closing:
            self._handle_request_noblock()  # a blocking accept(), then a thread for the request

    def handle_error(self, request: object, client_address: object) -> None:
        if not self._closing:
            super().handle_error(request, client_address)

    def close(self) -> None:
        self._closing = True
        try:
            self.socket.shutdown(socket.SHUT_RDWR)
        except OSError:  # not connected: some platforms refuse shutdown() of a listening socket
            pass
        self.server_close()


class MetricsServer:
    """/metrics of one registry over HTTP, served from a daemon thread (see the module's docstring for why).

    The thread sleeps in accept() between scrapes (no periodic wakeup); stop() ends it at once.
    """

    def __init__(self, registry: CollectorRegistry, listen: str, program: str = "routemesh"):
        self.registry = registry
        self.host, self.requested_port = split_listen(listen, f"{program} --metrics-listen")
        self._server: _AcceptingServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def start(self) -> int:
        """Listen (port 0 picks a free one) and serve; the bound port. SystemExit when it cannot listen."""
        try:
            family = socket.getaddrinfo(self.host, self.requested_port, type=socket.SOCK_STREAM,
                                        flags=socket.AI_PASSIVE)[0][0]

            class Server(_AcceptingServer):
                address_family = family

            self._server = make_server(self.host, self.requested_port, make_wsgi_app(self.registry), Server,
                                       handler_class=_SilentHandler)
        except OSError as exc:
            raise SystemExit(f"cannot serve metrics on {self.host}:{self.requested_port}: "
                             f"{exc.strerror or exc}") from None
        self._thread = threading.Thread(target=self._server.serve_until_closed, name="metrics-http", daemon=True)
        self._thread.start()
        return self.port

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop listening and end the thread (a scrape in flight finishes on its own thread)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
