"""Fixtures that start real meshes: every service its own process, real gRPC, real HTTP, real Redis."""

from __future__ import annotations

import json
import os
import pathlib
import uuid
from collections.abc import Iterator

import httpx
import pytest
import redis

from routemesh.common.policy import load_default_policy_text
from routemesh.mesh import Mesh, MeshLayout

REDIS_URL = os.environ.get("ROUTEMESH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SIM_TIME_SCALE = 0.05


def redis_available() -> bool:
    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=1, socket_connect_timeout=1).ping()
        return True
    except redis.RedisError:
        return False


@pytest.fixture(scope="session")
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test run's own; its keys are deleted at the end."""
    if not redis_available():
        pytest.fail(f"Redis is required at {REDIS_URL} (set ROUTEMESH_TEST_REDIS_URL to use another)")
    prefix = f"rmtest:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(match=prefix + "*", count=1000):
        client.delete(key)


@pytest.fixture(scope="session")
def policy_file(tmp_path_factory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("policy") / "policy.yaml"
    path.write_text(load_default_policy_text())
    return path


@pytest.fixture(scope="session")
def mesh(tmp_path_factory, redis_prefix, policy_file) -> Iterator[Mesh]:
    """The shared mesh most integration tests talk to (Redis-backed telemetry, file policy)."""
    log_dir = tmp_path_factory.mktemp("mesh-logs")
    m = Mesh(MeshLayout.free(), policy=str(policy_file), redis_url=REDIS_URL, redis_prefix=redis_prefix,
             sim_time_scale=SIM_TIME_SCALE, log_dir=log_dir,
             extra_env={"ROUTEMESH_GRACE_S": "10"})
    m.start()
    yield m
    m.stop()


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
