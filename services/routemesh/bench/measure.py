"""Runs the benchmark: a private mesh per tracing setting, each provider mode, interleaved rounds of both arms."""

from __future__ import annotations

import asyncio
import gc
import os
import secrets
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from routemesh.bench.floor import Floor, FloorError
from routemesh.bench.progress import Progress
from routemesh.bench.report import mode_levels
from routemesh.bench.stats import summarize
from routemesh.bench.system import TRACING_OFF_ENV, CpuMeter, MetricsScraper, Pinning, TraceSink
from routemesh.bench.workload import (
    MAX_TOKENS,
    PROFILES,
    REALISTIC_PROFILE,
    TIME_SCALES,
    UPSTREAM_MODEL,
    OpenAIArm,
    PhaseRun,
    ThroughArm,
    direct_arm,
    gateway_arm,
    run_phase,
)
from routemesh.common.keys import KeySpec, KeyStore
from routemesh.common.loop import run as run_loop
from routemesh.common.policy import load_default_policy_text
from routemesh.common.redis_client import create_client
from routemesh.mesh import Mesh, MeshError, MeshLayout

# Errors kept per phase in the JSON: enough to diagnose, bounded however many requests fail.
_ERRORS_KEPT = 3
_TIMEOUTS_S = {"zero": 30.0, "realistic": 60.0}
# With metrics on, every service's /metrics is scraped this often during the run (a common Prometheus setting).
METRICS_SCRAPE_S = 15.0
# Realistic mode: streams start spread over one answer's duration (TTFT, then a token every 20 ms), as
# independent callers do; started together they stay in lockstep and every request of a wave lands in the
# same millisecond, which measures a thundering herd, not the overhead per stream.
STAGGER_S = {"zero": 0.0, "realistic": REALISTIC_PROFILE["ttft_ms"] / 1000
             + (MAX_TOKENS - 1) / REALISTIC_PROFILE["tokens_per_s"]}


@dataclass
class BenchConfig:
    """What to run; `main` fills it from the command line."""

    modes: list[str] = field(default_factory=lambda: ["zero", "realistic"])
    tracings: list[str] = field(default_factory=lambda: ["off", "on"])
    rounds: int = 5
    # Zero mode, per round, per arm, per concurrency: CPU is counted in 10 ms clock ticks per process, so a
    # phase needs about a thousand requests for a per-request figure good to ~0.1 ms.
    requests: int = 1000
    realistic_requests: int = 20  # realistic mode: each request takes about 1.5 s
    concurrency: list[int] = field(default_factory=lambda: [1, 16, 64, 256])
    sweep: list[int] = field(default_factory=lambda: [4, 8])  # zero mode only, see report.mode_levels
    waves: int = 4  # zero mode sends at least waves x concurrency requests, so every stream slot is reused
    realistic_waves: int = 2  # realistic mode: every stream sends at least this many requests
    settle_s: float = 0.4  # after each phase, so deferred work (telemetry reports, span export) is counted
    decision_iterations: int = 5000
    classifier_iterations: int = 2000
    key_check_iterations: int = 20_000
    quick: bool = False
    classifier: str = "service"  # or "local": the router classifies in-process
    tls: bool = False  # mutual TLS between the services, and TLS from the bench to the router
    ledger: str = ""  # "sqlite": telemetry writes the outcome ledger to a SQLite file in the run's directory; or a URL
    metrics: str = "on"  # "off": no service serves (or records) Prometheus metrics
    via: list[str] = field(default_factory=lambda: ["grpc", "gateway"])  # routemesh's arms: router, gateway
    # A proxy of the user's, OpenAI-compatible, serving the sim's model (see `routemesh bench --help`).
    compare_url: str = ""
    compare_model: str = UPSTREAM_MODEL
    compare_key: str = ""
    compare_pid: int = 0  # its CPU is measured (with its children's) when given; pinned with the mesh
    sim_port: int = 0  # 0: a free port; a proxy to compare must know where the sim listens
    pin: Pinning | None = None  # the load generator (and the sim) on some cores, the system under test on others
    predictor: str = "on"  # "off": the default policy without its quality predictor (the classifier predicts nothing)
    keys: bool = False  # the router requires API keys (a key store in Redis at redis_url); both arms send one
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Where the gateway arm's HTTP API runs: "router" (the router serves it itself, --http-listen) or "service"
    # (the separate gateway process in front of the router).
    gateway: str = "router"
    # One more arm: routemesh's hops and messages in bare Python gRPC (bench/floor.py), beside the mesh.
    floor: bool = False

    def requests_at(self, mode: str, concurrency: int) -> int:
        if mode == "zero":
            return max(self.requests, self.waves * concurrency)
        return max(self.realistic_requests, self.realistic_waves * concurrency)

    def levels(self, mode: str) -> list[int]:
        return mode_levels(self.concurrency, self.sweep, mode)


class BenchError(RuntimeError):
    """The benchmark cannot go on (a mesh process died, nothing answers)."""


def _cpu_groups(mesh: Mesh, cfg: BenchConfig, floor: Floor | None) -> dict[str, int]:
    groups = {name: proc.pid for name, proc in mesh.processes.items()}
    if cfg.compare_pid:
        groups["compare"] = cfg.compare_pid
    if floor is not None:
        groups.update(floor.pids())
    return groups


def arm_names(cfg: BenchConfig) -> list[str]:
    """The arms of a run, as phases name them."""
    return ["direct", *(["through"] if "grpc" in cfg.via else []), *(["gateway"] if "gateway" in cfg.via else []),
            *(["compare"] if cfg.compare_url else []), *(["floor"] if cfg.floor else [])]


def _arms(mesh: Mesh, cfg: BenchConfig, timeout: float, api_key: str,
          floor: Floor | None = None) -> list[OpenAIArm | ThroughArm]:
    """direct first, then routemesh's arms, then the compared proxy's, then the floor's."""
    tls_ca = str(mesh.tls_dir / "ca.pem") if mesh.tls_dir is not None else None
    arms: list[OpenAIArm | ThroughArm] = [direct_arm(mesh.layout.sim_url, timeout)]
    if "grpc" in cfg.via:
        arms.append(ThroughArm(mesh.layout.address("router"), timeout, tls_ca, api_key))
    if "gateway" in cfg.via:
        scheme = "https" if tls_ca else "http"
        arms.append(gateway_arm(f"{scheme}://{mesh.layout.address('gateway')}/v1", timeout, tls_ca, api_key))
    if cfg.compare_url:
        arms.append(OpenAIArm("compare", cfg.compare_url, cfg.compare_model, timeout, api_key=cfg.compare_key))
    if floor is not None:
        arms.append(ThroughArm(floor.address(), timeout, name="floor"))
    return arms


def _pin(mesh: Mesh, cfg: BenchConfig, floor: Floor | None = None) -> None:
    """The sim with the load generator, every routemesh process (and the compared proxy, and the floor's) on the
    other cores."""
    if cfg.pin is None:
        return
    for name, proc in mesh.processes.items():
        cfg.pin.place(proc.pid, load=name == "sim")
    for pid in [cfg.compare_pid, *(floor.pids().values() if floor is not None else ())]:
        if pid:
            cfg.pin.place(pid, load=False)


def phase_record(tracing: str, mode: str, round_no: int, concurrency: int, arm: str, run: PhaseRun,
                 cpu_ms: dict[str, float], trace_export: tuple[int, int]) -> dict:
    """Everything measured in one phase; latencies of failed requests are left out."""
    ok = [s for s in run.samples if s.ok]
    gaps = [g for s in ok for g in s.gaps_ms]
    return {
        "tracing": tracing, "mode": mode, "round": round_no, "concurrency": concurrency, "arm": arm,
        "requests": len(run.samples), "ok": len(ok), "failed": len(run.samples) - len(ok),
        "errors": sorted({s.error for s in run.samples if not s.ok})[:_ERRORS_KEPT],
        "wall_s": round(run.wall_s, 6),
        "tokens": sum(s.tokens for s in ok),
        "chunks": sum(s.chunks for s in ok),
        "ttft_ms": [round(s.ttft_ms, 4) for s in ok],
        "total_ms": [round(s.total_ms, 4) for s in ok],
        "gap_ms": summarize(gaps),
        "tokens_per_chunk": summarize([s.tokens / s.chunks for s in ok if s.chunks]),
        "cpu_ms": {name: round(ms, 3) for name, ms in cpu_ms.items()},
        "trace_exports": trace_export[0], "trace_export_bytes": trace_export[1],
    }


async def _set_profile(mesh: Mesh, mode: str) -> None:
    root = mesh.layout.sim_url.removesuffix("/v1")
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.patch(f"{root}/admin/profiles/{UPSTREAM_MODEL}", json=PROFILES[mode])
        response.raise_for_status()


async def measure_mode(mesh: Mesh, mode: str, tracing: str, cfg: BenchConfig, sink: TraceSink | None,
                       progress: Progress, api_key: str = "", floor: Floor | None = None) -> list[dict]:
    """Warm up, then `rounds` rounds; in each, every concurrency runs every arm, rotating which goes first."""
    await _set_profile(mesh, mode)
    timeout = _TIMEOUTS_S[mode]
    arms = _arms(mesh, cfg, timeout, api_key, floor)
    phases: list[dict] = []
    try:
        top = max(cfg.levels(mode))
        for arm in arms:
            progress.phase(f"[tracing {tracing}, {mode}] warm-up, {arm.name}")
            run = await run_phase(arm, top, top, timeout, lambda d: progress.count(d, top))
            if not any(s.ok for s in run.samples):
                raise BenchError(f"{arm.name} arm: no request succeeded in warm-up: {run.samples[0].error}")
        for round_no in range(1, cfg.rounds + 1):
            for index, concurrency in enumerate(cfg.levels(mode)):
                # Rotating the order (alternating, with two arms) cancels slow drift (thermal, other load)
                # between the arms.
                shift = (round_no + index) % len(arms)
                order = arms[shift:] + arms[:shift]
                for arm in order:
                    n = cfg.requests_at(mode, concurrency)
                    progress.phase(f"[tracing {tracing}, {mode}] round {round_no}/{cfg.rounds}, "
                                   f"c={concurrency}, {arm.name}")
                    gc.collect()
                    meter = CpuMeter(_cpu_groups(mesh, cfg, floor))
                    exports_before = sink.counts() if sink else (0, 0)
                    meter.start()
                    run = await run_phase(arm, n, concurrency, timeout, lambda d, n=n: progress.count(d, n),
                                          stagger_s=STAGGER_S[mode])
                    await asyncio.sleep(cfg.settle_s)
                    cpu = meter.stop()
                    exports_after = sink.counts() if sink else (0, 0)
                    exported = (exports_after[0] - exports_before[0], exports_after[1] - exports_before[1])
                    record = phase_record(tracing, mode, round_no, concurrency, arm.name, run, cpu, exported)
                    phases.append(record)
                    if record["failed"]:
                        progress.note(f"warning: {record['failed']}/{n} requests failed "
                                      f"({arm.name}, c={concurrency}): {'; '.join(record['errors'])}")
                    dead = mesh.dead() + [f"floor {role}" for role in (floor.dead() if floor is not None else [])]
                    if dead:
                        raise BenchError(f"mesh process(es) exited: {', '.join(dead)}")
    finally:
        for arm in arms:
            await arm.aclose()
    return phases


def _restart_sim(mesh: Mesh, time_scale: float, cfg: BenchConfig) -> None:
    """Switch provider mode: the sim's time scale is a start-up flag, so the sim alone is restarted (on its port)."""
    mesh.stop_service("sim", timeout_s=10)
    mesh.sim_time_scale = time_scale
    mesh.start_service("sim")
    mesh.wait_healthy("sim", time.monotonic() + 30)
    if cfg.pin is not None:
        cfg.pin.place(mesh.processes["sim"].pid, load=True)


def policy_without_predictor(directory: Path) -> Path:
    """`--predictor off`: the default policy without its quality predictor; its quality_target routes score by
    the hybrid strategy instead (the bench pins the model either way: this measures the predictor's cost)."""
    doc = yaml.safe_load(load_default_policy_text())
    doc.pop("quality_predictor", None)
    for model in doc.get("models", {}).values():
        model.pop("predicted_as", None)

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if node.get("strategy") == "quality_target":
                node["strategy"] = "hybrid"
                node.pop("quality_target", None)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    path = directory / "policy-without-predictor.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


async def _issue_key(redis_url: str, prefix: str, pepper: str) -> str:
    """`--keys`: one API key for the bench's requests, in the run's own key store."""
    client = create_client(redis_url, timeout_s=2.0)
    try:
        token, _ = await KeyStore(client, prefix, pepper.encode()).create(KeySpec(tenant="bench", name="bench"))
        return token
    finally:
        await client.aclose()


async def _forget(redis_url: str, prefix: str) -> None:
    """Every Redis key of the run's prefix (key store, budgets, limits) deleted."""
    client = create_client(redis_url, timeout_s=2.0)
    try:
        names = [name async for name in client.scan_iter(match=f"{prefix}*", count=500)]
        for start in range(0, len(names), 500):
            await client.delete(*names[start:start + 500])
    finally:
        await client.aclose()


def layout_for(cfg: BenchConfig) -> MeshLayout:
    """Free ports for the mesh; the sim on `--sim-port` when given, where a compared proxy is told to call it."""
    if not cfg.sim_port:
        return MeshLayout.free()
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", cfg.sim_port))
        except OSError as exc:
            raise BenchError(f"--sim-port {cfg.sim_port}: cannot listen there ({exc.strerror})") from None
    return MeshLayout.free(fixed={"sim": cfg.sim_port})


def run_tracing(tracing: str, cfg: BenchConfig, sink: TraceSink | None, progress: Progress) -> list[dict]:
    """One private mesh with tracing on or off; every mode measured on it; the mesh always stopped."""
    log_dir = Path(tempfile.mkdtemp(prefix=f"routemesh-bench-{tracing}-"))
    env = sink.environment() if tracing == "on" and sink else dict(TRACING_OFF_ENV)
    # Short drain on shutdown: nothing is in flight when the bench stops the mesh, except after Ctrl-C.
    env["ROUTEMESH_GRACE_S"] = "2"
    if cfg.classifier == "local":
        env["ROUTEMESH_CLASSIFIER_ADDR"] = "local"
    ledger = f"sqlite:///{log_dir / 'ledger.db'}" if cfg.ledger == "sqlite" else cfg.ledger
    extra_args = {"telemetry": ["--ledger-url", ledger]} if ledger else {}
    redis_url = redis_prefix = None
    if cfg.keys:
        env["ROUTEMESH_KEY_PEPPER"] = secrets.token_urlsafe(32)
        extra_args["router"] = ["--require-keys"]
        redis_url, redis_prefix = cfg.redis_url, f"routemesh-bench-{os.getpid()}-{secrets.token_hex(4)}:"
    policy = str(policy_without_predictor(log_dir)) if cfg.predictor == "off" else None
    mesh = Mesh(layout_for(cfg), sim_time_scale=TIME_SCALES[cfg.modes[0]], log_dir=log_dir, extra_env=env,
                tls_dir=log_dir / "certs" if cfg.tls else None, extra_args=extra_args or None,
                metrics=cfg.metrics == "on", policy=policy, redis_url=redis_url, redis_prefix=redis_prefix,
                gateway=cfg.gateway)
    progress.phase(f"[tracing {tracing}] starting a private mesh")
    phases: list[dict] = []
    ok = False
    scraper = MetricsScraper([mesh.layout.metrics_url(s) for s in mesh.layout.metrics_ports], METRICS_SCRAPE_S)
    # The floor calls the mesh's sim, on its port across the sim's restarts; never traced.
    floor = Floor(mesh.layout.sim_url, UPSTREAM_MODEL, classifier=cfg.classifier == "service") if cfg.floor else None
    try:
        mesh.start(progress=lambda s: progress.phase(f"[tracing {tracing}] starting a private mesh: {s} is up"))
        if floor is not None:
            progress.phase(f"[tracing {tracing}] starting the floor")
            floor.start()
        _pin(mesh, cfg, floor)
        api_key = ""
        if redis_url and redis_prefix:
            api_key = run_loop(_issue_key(redis_url, redis_prefix, env["ROUTEMESH_KEY_PEPPER"]))
        if cfg.metrics == "on":
            scraper.start()
        for mode in cfg.modes:
            if mesh.sim_time_scale != TIME_SCALES[mode]:
                progress.phase(f"[tracing {tracing}] restarting the sim for {mode} mode")
                _restart_sim(mesh, TIME_SCALES[mode], cfg)
            phases += run_loop(measure_mode(mesh, mode, tracing, cfg, sink, progress, api_key, floor))
        ok = True
    except (MeshError, FloorError) as exc:
        raise BenchError(str(exc)) from None
    finally:
        if floor is not None:
            floor.stop()
        scraper.stop()
        if scraper.failures:
            progress.note(f"warning: {scraper.failures} metrics scrape(s) failed")
        progress.phase(f"[tracing {tracing}] stopping the mesh")
        mesh.stop(timeout_s=10)
        if redis_url and redis_prefix:
            run_loop(_forget(redis_url, redis_prefix))
        if ok:
            shutil.rmtree(log_dir, ignore_errors=True)
        else:
            progress.note(f"mesh logs kept in {log_dir}")
    return phases


def run_micro(cfg: BenchConfig, progress: Progress) -> dict:
    """The in-process micro-benchmarks: one routing decision over 20 candidates, classify(), and the API-key
    check with its verdict cached (with counting the key's usage), and what recording a request for the ledger
    adds to its summary."""
    from routemesh.classifier.bench import run_benchmark as classifier_benchmark
    from routemesh.router.bench import run_benchmark as decision_benchmark
    from routemesh.router.keys_bench import run_benchmark as keys_benchmark
    from routemesh.router.ledger_bench import run_benchmark as ledger_benchmark

    progress.phase("micro-benchmark: decision (20 candidates)")
    decision = decision_benchmark(iterations=cfg.decision_iterations)
    progress.phase("micro-benchmark: classifier (2,000-token prompt)")
    classifier = classifier_benchmark(iterations=cfg.classifier_iterations)
    progress.phase("micro-benchmark: key check (cached)")
    keys = keys_benchmark(iterations=cfg.key_check_iterations)
    progress.phase("micro-benchmark: ledger record (the summary's added fields)")
    ledger = ledger_benchmark(iterations=cfg.key_check_iterations)
    return {"decision": decision, "classifier": classifier, **keys, **ledger}


def run_all(cfg: BenchConfig, progress: Progress) -> tuple[dict, list[dict], dict]:
    """Micro-benchmarks first (the machine is quiet then), then each tracing setting's mesh."""
    if cfg.pin is not None:
        cfg.pin.place(os.getpid(), load=True)  # before the sink's and the mesh's threads and processes start
    micro = run_micro(cfg, progress)
    phases: list[dict] = []
    sink = TraceSink() if "on" in cfg.tracings else None
    totals = {"exports": 0, "bytes": 0}
    try:
        if sink:
            sink.start()
        for tracing in cfg.tracings:
            phases += run_tracing(tracing, cfg, sink, progress)
    finally:
        if sink:
            totals["exports"], totals["bytes"] = sink.counts()
            sink.stop()
    return micro, phases, totals
