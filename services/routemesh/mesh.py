"""Starts a whole mesh (control, sim, telemetry, classifier, executor, router) as separate processes."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

# Start order: each service's dependencies come before it.
SERVICE_ORDER = ("control", "sim", "telemetry", "classifier", "executor", "router", "gateway")
PORT_OFFSETS = {"router": 1, "classifier": 2, "telemetry": 3, "executor": 4, "control": 5, "sim": 6, "gateway": 7}
HTTP_SERVICES = ("sim", "gateway")
DEFAULT_PORT_BASE = 50050
# Each routemesh service's Prometheus metrics port, from_base: BASE + METRICS_PORT_OFFSET + its offset (router
# 50061 ... gateway 50067); replicas' metrics, and every port of MeshLayout.free, are free ports (metrics ports
# below the ephemeral range: free_quiet_port).
METRICS_PORT_OFFSET = 10
METERED = ("router", "classifier", "telemetry", "executor", "control", "gateway")


def free_port(host: str = "127.0.0.1") -> int:
    """A port free right now (the caller binds it soon after)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def ephemeral_low() -> int:
    """The lowest port the kernel hands out by itself (a connect()'s source port, a bind to port 0)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_quiet_port(host: str = "127.0.0.1", attempts: int = 100,
                    taken: frozenset[int] | set[int] = frozenset()) -> int:
    """A port free right now, below the kernel's ephemeral range, so that nothing is handed it by accident
    before the service that was told it binds it (services start one after another, seconds apart, while
    the ones up already open connections), and not in `taken`. MeshLayout.free's ports come from here;
    free_port() if none is found."""
    low = ephemeral_low()
    for _ in range(attempts):
        port = random.randrange(max(1024, low - 12_000), low)
        if port in taken:
            continue
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        return port
    return free_port(host)


def free_quiet_ports(host: str, count: int, taken: frozenset[int] | set[int] = frozenset()) -> list[int]:
    """`count` distinct free_quiet_port()s, none in `taken`."""
    ports: set[int] = set(taken)
    out = []
    for _ in range(count):
        port = free_quiet_port(host, taken=ports)
        ports.add(port)
        out.append(port)
    return out


# Services `routemesh up --replicas` can run several of: the router balances over executors and classifiers
# (round_robin over every replica's address), the gateway over routers. Telemetry replicas share health only
# through Redis; control is one process (it owns the policy file).
REPLICABLE = ("executor", "router", "classifier", "telemetry")
# `from_base` puts replica N (N >= 2) of each service here, in REPLICABLE order: base + 20, base + 21...
REPLICA_PORT_OFFSET = 20


def parse_replicas(text: str) -> dict[str, int]:
    """`executor=2,router=2` as {"executor": 2, "router": 2}; ValueError says what is wrong."""
    counts: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in REPLICABLE:
            raise ValueError(f"{item!r}: expected SERVICE=COUNT with SERVICE one of {', '.join(REPLICABLE)}")
        try:
            count = int(value)
        except ValueError:
            raise ValueError(f"{item!r}: COUNT must be a whole number") from None
        if not 1 <= count <= 16:
            raise ValueError(f"{item!r}: COUNT must be 1 to 16")
        counts[name] = count
    return counts


@dataclass
class MeshLayout:
    """Where every service of one mesh listens; replica N (N >= 2) of a service is named "service-N"."""

    host: str = "127.0.0.1"
    ports: dict[str, int] = field(default_factory=dict)
    # Where each routemesh service (replicas too) serves Prometheus metrics; the sim has none.
    metrics_ports: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_base(cls, base: int = DEFAULT_PORT_BASE, host: str = "127.0.0.1",
                  replicas: dict[str, int] | None = None) -> MeshLayout:
        ports = {name: base + off for name, off in PORT_OFFSETS.items()}
        extra = [f"{name}-{i}" for name in REPLICABLE for i in range(2, (replicas or {}).get(name, 1) + 1)]
        ports.update({name: base + REPLICA_PORT_OFFSET + i for i, name in enumerate(extra)})
        metrics = {name: base + METRICS_PORT_OFFSET + PORT_OFFSETS[name] for name in METERED}
        metrics.update(zip(extra, free_quiet_ports(host, len(extra)), strict=True))
        return cls(host=host, ports=ports, metrics_ports=metrics)

    @classmethod
    def free(cls, host: str = "127.0.0.1", executors: int = 1, replicas: dict[str, int] | None = None,
             fixed: dict[str, int] | None = None) -> MeshLayout:
        """Free ports for every service; with executors > 1 (or `replicas`), extra replicas executor-2...;
        `fixed` names some services' ports (such as the sim's, which a proxy outside the mesh is told)."""
        fixed = fixed or {}
        counts = {"executor": executors, **(replicas or {})}
        names = [*PORT_OFFSETS, *(f"{name}-{i}" for name in REPLICABLE for i in range(2, counts.get(name, 1) + 1))]
        picked = [name for name in names if name not in fixed]
        metered = [name for name in names if name != "sim"]
        # Below the ephemeral range, all distinct: a port picked from it could be some connection's source
        # port by the time its service binds it (a gateway once found its port taken so).
        ports = free_quiet_ports(host, len(picked) + len(metered), taken=set(fixed.values()))
        return cls(host=host, ports={**dict(zip(picked, ports[:len(picked)], strict=True)), **fixed},
                   metrics_ports=dict(zip(metered, ports[len(picked):], strict=True)))

    def metrics_url(self, service: str) -> str:
        """Where a service's Prometheus metrics are ("" when it has no metrics port)."""
        port = self.metrics_ports.get(service)
        return f"http://{self.host}:{port}/metrics" if port else ""

    def replicas(self, service: str) -> list[str]:
        """A service's replicas: "executor", then "executor-2"... in number order."""
        extra = [n for n in self.ports if n.startswith(f"{service}-") and n.rpartition("-")[2].isdigit()]
        return [service, *sorted(extra, key=lambda n: int(n.rpartition("-")[2]))]

    @property
    def executors(self) -> list[str]:
        """The executor replicas: "executor", then "executor-2"...."""
        return self.replicas("executor")

    def address(self, service: str) -> str:
        return f"{self.host}:{self.ports[service]}"

    def target(self, service: str) -> str:
        """A client's target for a service: one address, or every replica's for round_robin."""
        names = self.replicas(service)
        if len(names) == 1:
            return self.address(service)
        return "ipv4:" + ",".join(self.address(n) for n in names)

    def executor_target(self) -> str:
        """The router's executor target: one address, or every replica for round_robin."""
        return self.target("executor")

    @property
    def sim_url(self) -> str:
        return f"http://{self.address('sim')}/v1"

    def environment(self) -> dict[str, str]:
        """The variables every process of the mesh gets."""
        return {
            "ROUTEMESH_CONTROL_ADDR": self.address("control"),
            "ROUTEMESH_TELEMETRY_ADDR": self.target("telemetry"),
            "ROUTEMESH_CLASSIFIER_ADDR": self.target("classifier"),
            "ROUTEMESH_EXECUTOR_ADDR": self.target("executor"),
            "ROUTEMESH_SIM_URL": self.sim_url,
            "ROUTEMESH_ROUTER_ADDR": self.target("router"),
        }


class MeshError(RuntimeError):
    """A mesh process failed to start or died."""


class Mesh:
    """Supervises the processes of one mesh; `start()` returns when every service reports SERVING."""

    def __init__(
        self,
        layout: MeshLayout,
        *,
        policy: str | None = None,
        redis_url: str | None = None,
        redis_prefix: str | None = None,
        sim_time_scale: float = 1.0,
        sim_seed: int = 7,
        log_dir: Path | None = None,
        extra_env: dict[str, str] | None = None,
        services: tuple[str, ...] | None = None,
        extra_args: dict[str, list[str]] | None = None,
        tls_dir: Path | None = None,
        metrics: bool = True,
        gateway: str = "service",
    ):
        if gateway not in ("service", "router"):
            raise ValueError(f"gateway must be 'service' or 'router', not {gateway!r}")
        if gateway == "router" and len(layout.replicas("router")) > 1:
            raise ValueError("the router serves HTTP itself only without router replicas (a gateway service "
                             "balances over them)")
        # "router": no gateway process; the router serves the OpenAI-compatible API on the gateway's address.
        self.gateway = gateway
        self.layout = layout
        self.policy = policy
        self.redis_url = redis_url
        self.redis_prefix = redis_prefix
        self.sim_time_scale = sim_time_scale
        self.sim_seed = sim_seed
        self.log_dir = log_dir
        self.extra_env = extra_env or {}
        # Replicas start right after their first, before the services that call them.
        self.services = services or tuple(name for base in SERVICE_ORDER for name in layout.replicas(base)
                                          if not (base == "gateway" and gateway == "router"))
        self.extra_args = extra_args or {}
        # Mutual TLS between the services, each with its own certificate from here (`routemesh certs`; made
        # by start() when missing); this process checks health as "admin".
        self.tls_dir = tls_dir
        # Each service serves Prometheus metrics on its layout's metrics port (False: none, and none recorded).
        self.metrics = metrics
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: dict[str, object] = {}

    def command(self, service: str) -> list[str]:
        """The command line that runs one service of this mesh."""
        base = [sys.executable, "-m", "routemesh"]
        listen = self.layout.address(service)
        extra = self.extra_args.get(service.split("-")[0], [])
        if service == "sim":
            return [*base, "sim", "--listen", listen, "--seed", str(self.sim_seed),
                    "--time-scale", str(self.sim_time_scale), *extra]
        cmd = [*base, "serve", service.split("-")[0], "--listen", listen]
        if self.metrics and service in self.layout.metrics_ports:
            cmd += ["--metrics-listen", f"{self.layout.host}:{self.layout.metrics_ports[service]}"]
        if service == "control" and self.policy:
            cmd += ["--policy", self.policy]
        # Control keeps API keys there (when ROUTEMESH_KEY_PEPPER is set too).
        if service in ("telemetry", "router", "control") and self.redis_url:
            cmd += ["--redis-url", self.redis_url]
            if self.redis_prefix:
                cmd += ["--redis-prefix", self.redis_prefix]
        if service == "router" and self.gateway == "router":
            cmd += ["--http-listen", self.layout.address("gateway")]
        # The gateway reads API keys there to admit an admin key to the console.
        if service.startswith("gateway") and self.redis_url:
            cmd += ["--keys-redis-url", self.redis_url]
            if self.redis_prefix:
                cmd += ["--keys-redis-prefix", self.redis_prefix]
        return cmd + extra

    def _env(self, service: str = "") -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.layout.environment())
        if self.tls_dir is not None and service and service != "sim":
            from routemesh.certs import tls_env

            env.update(tls_env(self.tls_dir, service.split("-")[0]))
        env.update(self.extra_env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def start_service(self, service: str) -> None:
        """Spawn one service (used by start(), and by tests that restart a service)."""
        stdout = stderr = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            handle = open(self.log_dir / f"{service}.log", "ab")  # noqa: SIM115 - closed in stop()
            self._logs[service] = handle
            stdout = stderr = handle
        self.processes[service] = subprocess.Popen(
            self.command(service), env=self._env(service), stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL,
        )

    def start(self, timeout_s: float = 60.0, progress=None) -> None:
        """Start every service in dependency order and wait until each is healthy."""
        if self.tls_dir is not None:
            self._ensure_certificates()
        try:
            for service in self.services:
                self.start_service(service)
            deadline = time.monotonic() + timeout_s
            for service in self.services:
                self.wait_healthy(service, deadline)
                if progress:
                    progress(service)
        except BaseException:
            self.stop()
            raise

    def _ensure_certificates(self) -> None:
        from routemesh.certs import IDENTITIES, issue

        assert self.tls_dir is not None
        for identity in IDENTITIES:
            if not (self.tls_dir / f"{identity}.pem").exists():
                issue(self.tls_dir, identity)

    def channel(self, service: str) -> grpc.Channel:
        """A blocking channel to one of this mesh's services (as "admin" when the mesh runs mutual TLS)."""
        if self.tls_dir is None:
            return grpc.insecure_channel(self.layout.address(service))
        from routemesh.certs import tls_env
        from routemesh.common.tls import TlsFiles, channel_credentials

        files = TlsFiles.from_env(tls_env(self.tls_dir, "admin"))
        assert files is not None
        return grpc.secure_channel(self.layout.address(service), channel_credentials(files))

    def wait_healthy(self, service: str, deadline: float) -> None:
        while True:
            proc = self.processes[service]
            if proc.poll() is not None:
                raise MeshError(f"{service} exited with code {proc.returncode}{self._log_hint(service)}")
            if self.is_healthy(service):
                return
            if time.monotonic() > deadline:
                raise MeshError(f"{service} not healthy in time{self._log_hint(service)}")
            time.sleep(0.05)

    def _log_hint(self, service: str) -> str:
        if self.log_dir is None:
            return ""
        path = self.log_dir / f"{service}.log"
        tail = path.read_text(errors="replace").splitlines()[-15:] if path.exists() else []
        return f" (log {path}):\n" + "\n".join(tail)

    def is_healthy(self, service: str) -> bool:
        if service in HTTP_SERVICES:
            try:
                with socket.create_connection((self.layout.host, self.layout.ports[service]), timeout=0.2):
                    return True
            except OSError:
                return False
        with self.channel(service) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=0.5)
            except grpc.RpcError:
                return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    def dead(self) -> list[str]:
        """Services whose process has exited."""
        return [name for name, proc in self.processes.items() if proc.poll() is not None]

    def stop_service(self, service: str, timeout_s: float = 10.0, sig: int = signal.SIGTERM) -> int | None:
        proc = self.processes.get(service)
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        handle = self._logs.pop(service, None)
        if handle is not None:
            handle.close()  # type: ignore[attr-defined]
        return proc.returncode

    def stop(self, timeout_s: float = 35.0) -> None:
        """SIGTERM each process in reverse start order, waiting for each to drain before its dependencies go."""
        for service in reversed(list(self.processes)):
            self.stop_service(service, timeout_s)

    def __enter__(self) -> Mesh:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
