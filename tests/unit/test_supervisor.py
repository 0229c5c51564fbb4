"""routemesh up's supervisor: a service that exits comes back after a backoff that grows while it keeps dying."""

from __future__ import annotations

from routemesh.cli import Supervisor


class Proc:
    def __init__(self) -> None:
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode


class FakeMesh:
    def __init__(self) -> None:
        self.processes = {"executor": Proc(), "router": Proc()}
        self.started: list[str] = []

    def dead(self) -> list[str]:
        return [n for n, p in self.processes.items() if p.poll() is not None]

    def start_service(self, name: str) -> None:
        self.started.append(name)
        self.processes[name] = Proc()


def test_restarts_with_a_growing_backoff_that_resets_after_a_stable_minute(capsys) -> None:
    mesh = FakeMesh()
    supervisor = Supervisor(mesh)
    mesh.processes["executor"].returncode = -9
    supervisor.tick(100.0)
    assert mesh.started == [] and "executor exited (code -9); restarting it in 0.5 s" in capsys.readouterr().err
    supervisor.tick(100.6)
    assert mesh.started == ["executor"]
    mesh.processes["executor"].returncode = 1  # dies again at once: the backoff doubles
    supervisor.tick(101.0)
    supervisor.tick(101.9)
    assert mesh.started == ["executor"]
    supervisor.tick(102.1)
    assert mesh.started == ["executor", "executor"]
    mesh.processes["executor"].returncode = 1  # after a stable minute: back to the shortest backoff
    supervisor.tick(170.0)
    supervisor.tick(170.6)
    assert mesh.started == ["executor"] * 3 and mesh.processes["router"].poll() is None
