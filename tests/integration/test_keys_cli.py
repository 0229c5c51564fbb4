"""routemesh keys through a real control plane and a real Redis: the secret shown once, then only verified."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

from routemesh.common.keys import KeyStore
from routemesh.common.redis_client import create_client
from routemesh.mesh import Mesh, MeshLayout
from tests.integration.conftest import REDIS_URL

pytestmark = pytest.mark.integration
PEPPER = "k" * 40


@pytest.fixture(scope="module")
def control(tmp_path_factory, redis_prefix) -> Iterator[tuple[Mesh, str]]:
    prefix = f"{redis_prefix}keys:"
    mesh = Mesh(MeshLayout.free(), services=("control",), log_dir=tmp_path_factory.mktemp("keys-logs"),
                extra_env={"ROUTEMESH_KEY_PEPPER": PEPPER},
                extra_args={"control": ["--redis-url", REDIS_URL, "--redis-prefix", prefix]})
    mesh.start()
    yield mesh, prefix
    mesh.stop()


def keys(mesh: Mesh, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "routemesh", "keys", "--control", mesh.layout.address("control"),
                           *args], capture_output=True, text=True, timeout=60, env=os.environ.copy())


def verify(prefix: str, token: str):
    async def check():
        client = create_client(REDIS_URL, timeout_s=1.0)
        try:
            return await KeyStore(client, prefix, PEPPER.encode()).verify(token)
        finally:
            await client.aclose()
    return asyncio.run(check())


def test_create_list_rotate_revoke(control) -> None:
    mesh, prefix = control
    made = keys(mesh, "create", "--tenant", "acme", "--name", "ci", "--model", "fast-cheap", "--rpm", "60",
                "--budget-usd", "5", "--period", "day")
    assert made.returncode == 0, made.stderr
    token = re.search(r"shown once, keep it secret\): (rmk_\S+)", made.stdout).group(1)
    key_id = token.split("_")[1]
    assert verify(prefix, token).spec.tenant == "acme"
    listed = keys(mesh, "list")
    assert key_id in listed.stdout and "active" in listed.stdout and "[rpm 60, $5/day]" in listed.stdout
    assert token.split("_", 2)[2] not in listed.stdout
    rotated = keys(mesh, "rotate", key_id)
    new_token = re.search(r"no longer works\): (rmk_\S+)", rotated.stdout).group(1)
    assert verify(prefix, token) is None and verify(prefix, new_token).key_id == key_id
    revoked = keys(mesh, "revoke", key_id)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    assert verify(prefix, new_token) is None
    history = subprocess.run([sys.executable, "-m", "routemesh", "policy", "history", "--control",
                              mesh.layout.address("control")], capture_output=True, text=True, timeout=60)
    assert "key created" in history.stdout and f"key {key_id} (ci) of tenant acme" in history.stdout


def test_bad_settings_and_unknown_keys_are_clear_errors(control) -> None:
    mesh, _ = control
    bad = keys(mesh, "create", "--tenant", "not a name", "--rpm", "-1")
    assert bad.returncode == 1 and "INVALID_ARGUMENT" in bad.stderr
    assert "tenant:" in bad.stderr and "rpm: must not be negative" in bad.stderr
    missing = keys(mesh, "revoke", "0" * 16)
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr and "Traceback" not in missing.stderr
