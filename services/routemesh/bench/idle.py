"""CPU an idle mesh burns: `python -m routemesh.bench.idle [--seconds S] [--metrics on|off]`.

Starts a private mesh (`routemesh up`'s services on free ports), lets it settle, then reads each process's
CPU time (user + system, from /proc) over S seconds with no request flowing, and prints ms of CPU per second
per service and in all. Linux only (it reads /proc); the resolution is the kernel's clock tick (10 ms).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from routemesh.mesh import Mesh, MeshLayout


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(mesh: Mesh, seconds: float) -> dict[str, float]:
    """ms of CPU per second of each running process of `mesh` over `seconds`."""
    pids = {name: proc.pid for name, proc in mesh.processes.items()}
    before = {name: cpu_s(pid) for name, pid in pids.items()}
    started = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    return {name: (cpu_s(pid) - before[name]) * 1000 / elapsed for name, pid in pids.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m routemesh.bench.idle", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="how long to measure (default 30)")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds to wait after start (default 5)")
    parser.add_argument("--metrics", choices=("on", "off"), default="on")
    args = parser.parse_args(argv)
    if not Path("/proc/self/stat").exists():
        print("routemesh.bench.idle reads /proc: Linux only", file=sys.stderr)
        return 2
    mesh = Mesh(MeshLayout.free(), log_dir=Path(tempfile.mkdtemp(prefix="routemesh-idle-")),
                metrics=args.metrics == "on")
    mesh.start()
    try:
        time.sleep(args.settle)
        figures = measure(mesh, args.seconds)
    finally:
        mesh.stop()
    for name, ms in figures.items():
        print(f"{name:<11} {ms:5.1f} ms/s")
    print(f"{'whole mesh':<11} {sum(figures.values()):5.1f} ms/s (idle {args.seconds:g} s, metrics {args.metrics})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
