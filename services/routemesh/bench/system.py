"""Process CPU accounting from /proc, and a local OTLP/gRPC trace sink that discards what it receives."""

from __future__ import annotations

import os
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

_TICK_MS = 1000.0 / os.sysconf("SC_CLK_TCK")
_EXPORT_METHOD = "Export"
_TRACE_SERVICE = trace_service_pb2.DESCRIPTOR.services_by_name["TraceService"].full_name


def process_ticks(pid: int) -> int | None:
    """utime + stime of one process in clock ticks, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after the last ")".
    fields = raw[raw.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


def descendants(pid: int) -> list[int]:
    """Every live descendant of `pid` (services that fork helpers are charged for them too)."""
    found: list[int] = []
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            tasks = list(Path(f"/proc/{current}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except (OSError, ValueError):
                continue
            found.extend(children)
            stack.extend(children)
    return found


class Pinning:
    """`--pin`: the load generator (this process, and the provider it measures against) on `load` CPUs, the
    system under test (routemesh's processes, or a compared proxy) on `sut` CPUs, so neither takes the other's
    cores. Linux only (sched_setaffinity); every thread of a process is moved, and threads it starts later
    inherit their creator's CPUs."""

    def __init__(self, load: set[int], sut: set[int]):
        self.load, self.sut = load, sut

    @classmethod
    def parse(cls, text: str, available: set[int] | None = None) -> Pinning:
        """"auto" (the first half of this process's CPUs for the load, the rest for the system under test) or
        "LOAD:SUT" with CPU lists such as "0:1" or "0-1:2,3"; ValueError with a message when it cannot be."""
        if not hasattr(os, "sched_setaffinity"):
            raise ValueError("--pin needs Linux (sched_setaffinity)")
        cpus = available if available is not None else os.sched_getaffinity(0)
        if text == "auto":
            ordered = sorted(cpus)
            if len(ordered) < 2:
                raise ValueError("--pin needs at least 2 CPUs")
            half = len(ordered) // 2
            return cls(set(ordered[:half]), set(ordered[half:]))
        load_text, sep, sut_text = text.partition(":")
        if not sep:
            raise ValueError(f"--pin {text!r}: expected auto or LOAD:SUT, such as 0:1 or 0-1:2-3")
        load, sut = _cpu_list(load_text), _cpu_list(sut_text)
        if load & sut:
            raise ValueError(f"--pin {text!r}: the load generator and the system under test share CPU(s) "
                             f"{','.join(map(str, sorted(load & sut)))}")
        missing = (load | sut) - cpus
        if missing:
            raise ValueError(f"--pin {text!r}: CPU(s) {','.join(map(str, sorted(missing)))} not available here "
                             f"(available: {','.join(map(str, sorted(cpus)))})")
        return cls(load, sut)

    def place(self, pid: int, *, load: bool) -> None:
        """Move every thread of `pid` and of its descendants to the load or the system-under-test CPUs."""
        cpus = self.load if load else self.sut
        for process in (pid, *descendants(pid)):
            try:
                tasks = [int(t.name) for t in Path(f"/proc/{process}/task").iterdir()]
            except OSError:
                continue
            for tid in tasks:
                try:
                    os.sched_setaffinity(tid, cpus)
                except OSError:  # the thread ended meanwhile
                    pass

    def describe(self) -> dict[str, list[int]]:
        return {"load": sorted(self.load), "sut": sorted(self.sut)}


def _cpu_list(text: str) -> set[int]:
    cpus: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        first, _, last = part.partition("-")
        try:
            low, high = int(first), int(last or first)
        except ValueError:
            raise ValueError(f"{part!r} is not a CPU number or range") from None
        if low < 0 or high < low:
            raise ValueError(f"{part!r} is not a CPU number or range")
        cpus.update(range(low, high + 1))
    if not cpus:
        raise ValueError("an empty CPU list")
    return cpus


class CpuMeter:
    """CPU time of named process groups between `start()` and `stop()`, in milliseconds."""

    def __init__(self, groups: dict[str, int]):
        # Resolved once per phase: a process that starts mid-phase is not counted.
        self.groups = {name: [pid, *descendants(pid)] for name, pid in groups.items()}
        self._before: dict[int, int] = {}
        self._client_before = 0.0

    def _snapshot(self) -> dict[int, int]:
        ticks = {}
        for pids in self.groups.values():
            for pid in pids:
                value = process_ticks(pid)
                if value is not None:
                    ticks[pid] = value
        return ticks

    def start(self) -> None:
        self._before = self._snapshot()
        self._client_before = time.process_time()

    def stop(self) -> dict[str, float]:
        """Milliseconds per group, plus "bench-client" (this process: load generator and trace sink)."""
        after = self._snapshot()
        used = {name: sum(after[p] - self._before[p] for p in pids if p in after and p in self._before) * _TICK_MS
                for name, pids in self.groups.items()}
        used["bench-client"] = (time.process_time() - self._client_before) * 1000
        return used


class TraceSink:
    """An OTLP/gRPC TraceService that accepts every export and discards it.

    It registers raw-bytes handlers, so no request is parsed: the sink costs the bench process as
    little as possible while the mesh pays the full price of building and exporting spans.
    """

    def __init__(self) -> None:
        self.exports = 0
        self.bytes = 0
        self._lock = threading.Lock()
        self._server: grpc.Server | None = None
        self.port = 0

    def _export(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        with self._lock:
            self.exports += 1
            self.bytes += len(request)
        return b""  # an empty ExportTraceServiceResponse: everything accepted

    def start(self) -> int:
        handler = grpc.unary_unary_rpc_method_handler(self._export)  # no (de)serializers: raw bytes
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2),
                             options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 64 << 20)])
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(_TRACE_SERVICE, {_EXPORT_METHOD: handler}),))
        self.port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._server = server
        return self.port

    def counts(self) -> tuple[int, int]:
        with self._lock:
            return self.exports, self.bytes

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None)
            self._server = None

    def environment(self) -> dict[str, str]:
        """What every mesh process gets to trace 100% of requests into this sink."""
        endpoint = f"http://127.0.0.1:{self.port}"
        return {
            "OTEL_SDK_DISABLED": "false",
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_TRACES_SAMPLER": "always_on",
            # Short delay so a phase's spans are exported (and their CPU counted) during its settle time;
            # a large queue so spans are not dropped at high request rates, which would flatter the figures.
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "OTEL_BSP_MAX_QUEUE_SIZE": "200000",
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "512",
        }


TRACING_OFF_ENV = {"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "none"}


class MetricsScraper:
    """Scrapes every service's /metrics every `interval_s` from a thread, as Prometheus would, so the services
    pay for exposition as deployed; the bench process's share is the client's, as a Prometheus's would be apart."""

    def __init__(self, urls: list[str], interval_s: float):
        self.urls = urls
        self.interval_s = interval_s
        self.scrapes = self.failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="metrics-scraper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        import urllib.request

        while not self._stop.wait(self.interval_s):
            for url in self.urls:
                try:
                    with urllib.request.urlopen(url, timeout=5) as response:
                        response.read()
                    self.scrapes += 1
                except OSError:
                    self.failures += 1
