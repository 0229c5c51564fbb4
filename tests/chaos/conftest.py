"""Chaos fixtures: meshes with chaos policies (one or two executors), a fault proxy, measured figures."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from routemesh.common.policy import load_default_policy_text, parse_policy
from routemesh.mesh import Mesh, MeshLayout
from tests.chaos.proxy import FaultProxy
from tests.integration.conftest import REDIS_URL, SIM_TIME_SCALE, SimAdmin

__all__ = ["REDIS_URL", "SIM_TIME_SCALE", "FaultProxy", "SimAdmin", "base_policy", "paused", "policy_text"]

# Short enough that every timeout case costs about a second, long enough for the sim at SIM_TIME_SCALE.
FAST_TIMEOUTS = {"connect_s": 1, "first_token_s": 1.5, "between_tokens_s": 1.0}
# Meshes here end with streams still hanging on purpose; a short drain keeps teardown quick.
GRACE_S = "2"


def base_policy() -> dict[str, Any]:
    """The default policy as a dict, with health gating and circuit breaking switched off.

    Chaos tests fail the same model over and over; a health gate or a breaker would then take it out of
    the plan, and the tests would check routing instead of the executor's failover they are about.
    """
    doc = yaml.safe_load(load_default_policy_text())
    doc["health"] = {"max_error_rate": 1.0, "min_samples": 1_000_000,
                     "circuit": {"consecutive_failures": 1_000_000, "min_samples": 1_000_000}}
    return doc


class _PlainDumper(yaml.SafeDumper):
    """Writes an object used twice out twice: policies refuse YAML anchors and aliases (alias bombs)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def policy_text(doc: dict[str, Any]) -> str:
    """YAML for `doc`, validated here so a bad test policy fails with its field, not as a mesh that never starts."""
    text = yaml.dump(doc, Dumper=_PlainDumper, sort_keys=False)
    parse_policy(text, environ={"ROUTEMESH_SIM_URL": "http://127.0.0.1:1/v1"})
    return text


class MeshFactory:
    """Starts meshes for one test module and stops them all at its end."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory, prefix: str):
        self.tmp = tmp_path_factory
        self.prefix = prefix
        self.meshes: list[Mesh] = []

    def __call__(self, name: str, policy: dict[str, Any] | None = None, *, executors: int = 1,
                 layout: MeshLayout | None = None, redis_url: str | None = REDIS_URL, **options: Any) -> Mesh:
        """A started mesh; `policy` is a dict (default: base_policy()), `options` go to Mesh().

        Pass `layout` when the policy must know a port first (a proxy in front of the sim, say).
        """
        path = self.tmp.mktemp(f"{name}-policy") / "policy.yaml"
        path.write_text(policy_text(policy if policy is not None else base_policy()))
        env = {"ROUTEMESH_GRACE_S": GRACE_S, **options.pop("extra_env", {})}
        mesh = Mesh(layout or MeshLayout.free(executors=executors), policy=str(path), redis_url=redis_url,
                    redis_prefix=f"{self.prefix}{name}:", sim_time_scale=SIM_TIME_SCALE,
                    log_dir=self.tmp.mktemp(f"{name}-logs"), extra_env=env, **options)
        mesh.start()
        self.meshes.append(mesh)
        return mesh

    def stop_all(self) -> None:
        for mesh in reversed(self.meshes):
            # A test may leave a process stopped (SIGSTOP); it must run again to drain and exit.
            for proc in mesh.processes.values():
                if proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(proc.pid, signal.SIGCONT)
            mesh.stop(timeout_s=10)


@pytest.fixture(scope="module")
def mesh_factory(tmp_path_factory, redis_prefix) -> Iterator[MeshFactory]:
    factory = MeshFactory(tmp_path_factory, redis_prefix + "chaos:")
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture(scope="module")
def two_executor_mesh(mesh_factory) -> Mesh:
    """Router balancing over two executors ("executor", "executor-2"); for process-fault tests.

    `mesh.processes[name]` are the Popen objects; `paused(mesh, name)` SIGSTOPs one for a while,
    `mesh.stop_service(name, sig=signal.SIGKILL)` kills it and `mesh.start_service(name)` restarts it.
    """
    doc = base_policy()
    for provider in doc["providers"].values():
        provider["timeouts"] = dict(FAST_TIMEOUTS)
    return mesh_factory("two-executors", doc, executors=2)


@contextlib.contextmanager
def paused(mesh: Mesh, service: str) -> Iterator[int]:
    """SIGSTOP one service's process for the block (yields its pid), SIGCONT after, whatever happens."""
    pid = mesh.processes[service].pid
    os.kill(pid, signal.SIGSTOP)
    try:
        yield pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


class Figures:
    """Measured figures of this run, printed as they come and written as JSON at the end."""

    def __init__(self, path: Path):
        self.path = path
        self.values: dict[str, Any] = {}

    def record(self, name: str, value: float, unit: str = "ms", note: str = "") -> None:
        self.values[name] = {"value": round(value, 1), "unit": unit, **({"note": note} if note else {})}
        print(f"\n[chaos] {name}: {value:.0f} {unit}" + (f" ({note})" if note else ""))

    def write(self) -> None:
        if self.values:
            self.path.write_text(json.dumps(self.values, indent=2, sort_keys=True) + "\n")
            print(f"\n[chaos] figures written to {self.path}")


@pytest.fixture(scope="session")
def figures(tmp_path_factory) -> Iterator[Figures]:
    """ROUTEMESH_CHAOS_FIGURES names the JSON file; by default it goes to pytest's temporary directory."""
    default = tmp_path_factory.getbasetemp() / "chaos-figures.json"
    recorder = Figures(Path(os.environ.get("ROUTEMESH_CHAOS_FIGURES", default)))
    yield recorder
    recorder.write()

