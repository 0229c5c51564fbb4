"""CPU an idle mesh burns: `python -m routemesh.bench.idle [--seconds S] [--metrics on|off] [--tracing on|off]`.

Starts a private mesh (`routemesh up`'s services on free ports), lets it settle, then reads each process's
CPU time over S seconds with no request flowing, and prints ms of CPU per second per service and in all.
Linux only: it reads each thread's time on CPU from /proc/PID/task/*/schedstat (nanoseconds; a thread that
ends during the measurement loses what it used since the start), and falls back to /proc/PID/stat (the
kernel's clock tick, 10 ms) where schedstat is missing. `--threads` adds each process's CPU by thread name
(grpc's timer and EventEngine threads, the metrics thread, the event loop's "python" main thread...).

`--tracing on` exports spans to a local OTLP sink that discards them (bench.system.TraceSink), with the
BatchSpanProcessor's own defaults (a 5 s schedule), as deployed; off (the default) disables the SDK.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from routemesh.bench.system import process_ticks
from routemesh.mesh import Mesh, MeshLayout

# TraceSink.environment()'s bench settings that a deployment does not have: the idle mesh runs the defaults.
_BENCH_ONLY_OTEL = ("OTEL_BSP_SCHEDULE_DELAY", "OTEL_BSP_MAX_QUEUE_SIZE", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (clock-tick resolution; ended threads included; 0 when gone)."""
    return (process_ticks(pid) or 0) / os.sysconf("SC_CLK_TCK")


def thread_cpu_s(pid: int) -> dict[tuple[int, str], float]:
    """CPU seconds so far of each live thread of a process, by (thread id, name), to the nanosecond."""
    out: dict[tuple[int, str], float] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as handle:
                ns = int(handle.read().split()[0])
            with open(f"/proc/{pid}/task/{tid}/comm") as handle:
                name = handle.read().strip()
        except (OSError, ValueError, IndexError):
            continue  # ended meanwhile
        out[(int(tid), name)] = ns / 1e9
    return out


def _usage(pids: dict[str, int]) -> dict[str, dict[tuple[int, str], float]]:
    return {name: thread_cpu_s(pid) for name, pid in pids.items()}


def measure_threads(pids: dict[str, int], seconds: float) -> dict[str, Counter[str]]:
    """ms of CPU per second of each process over `seconds`, by thread name (summed over threads of a name)."""
    have_schedstat = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/schedstat").exists()
    before = _usage(pids) if have_schedstat else {}
    before_ticks = {name: cpu_s(pid) for name, pid in pids.items()}
    started = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    after = _usage(pids) if have_schedstat else {}
    figures: dict[str, Counter[str]] = {}
    for name, pid in pids.items():
        per_thread: Counter[str] = Counter()
        if have_schedstat:
            for key, used in after[name].items():
                per_thread[key[1]] += (used - before[name].get(key, 0.0)) * 1000 / elapsed
        else:
            per_thread["(process)"] = (cpu_s(pid) - before_ticks[name]) * 1000 / elapsed
        figures[name] = per_thread
    return figures


def measure(mesh: Mesh, seconds: float) -> dict[str, float]:
    """ms of CPU per second of each running process of `mesh` over `seconds`."""
    pids = {name: proc.pid for name, proc in mesh.processes.items()}
    return {name: sum(threads.values()) for name, threads in measure_threads(pids, seconds).items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m routemesh.bench.idle", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="how long to measure (default 30)")
    parser.add_argument("--settle", type=float, default=15.0,
                        help="seconds to wait after start (default 15: past CALL_IDLE_MS, when the services' call "
                             "channels, unused since start-up, go idle)")
    parser.add_argument("--metrics", choices=("on", "off"), default="on")
    parser.add_argument("--tracing", choices=("on", "off"), default="off",
                        help="on: spans exported to a local discarding OTLP sink (default off)")
    parser.add_argument("--gateway", choices=("service", "router"), default="service",
                        help="who serves the OpenAI API: a gateway process (default, as `routemesh up` runs it) or "
                             "the router itself (`up --gateway router`: one process fewer)")
    parser.add_argument("--threads", action="store_true", help="also print each process's CPU by thread name")
    args = parser.parse_args(argv)
    if not Path("/proc/self/stat").exists():
        print("routemesh.bench.idle reads /proc: Linux only", file=sys.stderr)
        return 2
    from routemesh.bench.system import TRACING_OFF_ENV, TraceSink

    sink = TraceSink() if args.tracing == "on" else None
    if sink is not None:
        sink.start()
        env = {k: v for k, v in sink.environment().items() if k not in _BENCH_ONLY_OTEL}
    else:
        env = dict(TRACING_OFF_ENV)
    mesh = Mesh(MeshLayout.free(), log_dir=Path(tempfile.mkdtemp(prefix="routemesh-idle-")),
                metrics=args.metrics == "on", extra_env=env, gateway=args.gateway)
    try:
        mesh.start()
        time.sleep(args.settle)
        figures = measure_threads({name: proc.pid for name, proc in mesh.processes.items()}, args.seconds)
    finally:
        mesh.stop()
        if sink is not None:
            sink.stop()
    for name, threads in figures.items():
        line = f"{name:<11} {sum(threads.values()):5.1f} ms/s"
        if args.threads:
            line += "   " + ", ".join(f"{thread} {ms:.2f}" for thread, ms in threads.most_common() if ms >= 0.005)
        print(line)
    total = sum(sum(threads.values()) for threads in figures.values())
    print(f"{'whole mesh':<11} {total:5.1f} ms/s (idle {args.seconds:g} s, metrics {args.metrics}, "
          f"tracing {args.tracing}, gateway {args.gateway})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
