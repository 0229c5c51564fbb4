"""Fixtures that start real meshes: every service its own process, real gRPC, real HTTP, real Redis."""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Iterator

import httpx
import pytest

from routemesh.common.policy import load_default_policy_text
from routemesh.mesh import Mesh, MeshLayout, free_quiet_port
from tests.conftest import REDIS_URL, redis_available  # noqa: F401 - re-exported for the test modules

SIM_TIME_SCALE = 0.05


@pytest.fixture(scope="session")
def policy_file(tmp_path_factory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("policy") / "policy.yaml"
    path.write_text(load_default_policy_text())
    return path


@pytest.fixture(scope="session")
def mesh(tmp_path_factory, redis_prefix, policy_file) -> Iterator[Mesh]:
    """The shared mesh most integration tests talk to (Redis-backed telemetry, file policy)."""
    log_dir = tmp_path_factory.mktemp("mesh-logs")
    layout = MeshLayout.free()
    # The router serves the OpenAI API itself too (`router_http_url`), beside the gateway service.
    http_port = free_quiet_port(layout.host, taken=set(layout.ports.values()) | set(layout.metrics_ports.values()))
    m = Mesh(layout, policy=str(policy_file), redis_url=REDIS_URL, redis_prefix=redis_prefix,
             sim_time_scale=SIM_TIME_SCALE, log_dir=log_dir,
             extra_env={"ROUTEMESH_GRACE_S": "10"},
             extra_args={"router": ["--http-listen", f"{layout.host}:{http_port}"]})
    m.router_http_url = f"http://{layout.host}:{http_port}"  # type: ignore[attr-defined]
    m.start()
    yield m
    m.stop()


def write_atomically(path: pathlib.Path, text: str) -> None:
    """Replace a policy file in one step: control polls it, and a half-written file must never be what it reads."""
    staged = path.with_suffix(".staged")
    staged.write_text(text)
    os.replace(staged, path)


class SimAdmin:
    """The simulated provider's admin API."""

    def __init__(self, base: str):
        self.base = base.removesuffix("/v1")

    def patch(self, model: str, **fields: object) -> None:
        response = httpx.patch(f"{self.base}/admin/profiles/{model}", content=json.dumps(fields),
                               headers={"content-type": "application/json"}, timeout=5)
        response.raise_for_status()

    def reset(self) -> None:
        httpx.post(f"{self.base}/admin/reset", timeout=5).raise_for_status()

    def stats(self) -> dict:
        return httpx.get(f"{self.base}/admin/stats", timeout=5).json()


@pytest.fixture
def sim(mesh) -> Iterator[SimAdmin]:
    admin = SimAdmin(mesh.layout.sim_url)
    yield admin
    admin.reset()


@pytest.fixture
def router_address(mesh) -> str:
    return mesh.layout.address("router")
