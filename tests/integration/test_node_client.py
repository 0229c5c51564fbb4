"""The Node.js client (clients/node) against a real mesh: its own `node --test` suite, run here."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest

pytestmark = pytest.mark.integration

NODE_CLIENT = pathlib.Path(__file__).resolve().parents[2] / "clients" / "node"


def _tool(name: str) -> str:
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} not found: install Node.js 20+ with npm to test clients/node")
    return found


def _install_if_stale(npm: str) -> None:
    """`npm ci` when node_modules is missing or older than package-lock.json (a dependency changed)."""
    marker = NODE_CLIENT / "node_modules" / ".package-lock.json"
    lock = NODE_CLIENT / "package-lock.json"
    if marker.exists() and marker.stat().st_mtime >= lock.stat().st_mtime:
        return
    # --ignore-scripts: no dependency needs its install script (protobufjs's only checks its CLI).
    result = subprocess.run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=NODE_CLIENT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"npm ci failed in {NODE_CLIENT}:\n{result.stdout}\n{result.stderr}"


def test_node_client_suite_passes_against_the_mesh(mesh):
    node, npm = _tool("node"), _tool("npm")
    _install_if_stale(npm)
    env = {**os.environ, "ROUTEMESH_ROUTER_ADDR": mesh.layout.address("router")}
    result = subprocess.run([node, "--test", "test/"], cwd=NODE_CLIENT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"node --test failed:\n{result.stdout}\n{result.stderr}"
