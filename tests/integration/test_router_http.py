"""A mesh whose router serves the OpenAI API itself (`Mesh(gateway="router")`, `serve router --http-listen`).

test_gateway.py runs the API's behaviours against this mode and the gateway service alike; here, what only a
router serving HTTP has: no gateway process, its HTTP metrics on the router's endpoint, and SIGTERM draining
HTTP streams beside gRPC ones.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from routemesh.mesh import Mesh, MeshLayout
from tests.integration.conftest import SIM_TIME_SCALE, SimAdmin

pytestmark = pytest.mark.integration
HELLO = [{"role": "user", "content": "What are your opening hours on Sunday?"}]


@pytest.fixture(scope="module")
def http_mesh(tmp_path_factory):
    mesh = Mesh(MeshLayout.free(), gateway="router", sim_time_scale=SIM_TIME_SCALE,
                log_dir=tmp_path_factory.mktemp("router-http-logs"), extra_env={"ROUTEMESH_GRACE_S": "10"})
    mesh.start()
    yield mesh
    mesh.stop()


def test_the_router_serves_the_api_with_no_gateway_process(http_mesh):
    assert "gateway" not in http_mesh.processes
    base = f"http://{http_mesh.layout.address('gateway')}"
    completion = httpx.post(f"{base}/v1/chat/completions", json={"model": "auto", "messages": HELLO, "max_tokens": 16},
                            timeout=30)
    assert completion.status_code == 200, completion.text
    assert completion.json()["choices"][0]["message"]["content"]
    assert completion.headers["x-routemesh-decision-id"]
    metrics = httpx.get(http_mesh.layout.metrics_url("router"), timeout=5).text
    assert 'routemesh_http_requests_total{code="200",path="/v1/chat/completions"}' in metrics
    assert metrics.count("# TYPE routemesh_policy_version gauge") == 1  # the router's own, not a second one


def test_sigterm_lets_an_open_http_stream_finish(http_mesh):
    SimAdmin(http_mesh.layout.sim_url).patch("sim-fast", tokens_per_s=1.0)  # ~50 ms a token at the test scale
    body = {"model": "fast-cheap", "messages": HELLO, "max_tokens": 12, "stream": True}
    url = f"http://{http_mesh.layout.address('gateway')}/v1/chat/completions"
    router = http_mesh.processes["router"]
    with httpx.stream("POST", url, json=body, timeout=30) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
        router.send_signal(signal.SIGTERM)
        exited = threading.Event()
        threading.Thread(target=lambda: (router.wait(20), exited.set()), daemon=True).start()
        rest = list(lines)
    assert "data: [DONE]" in rest
    assert exited.wait(20) and router.returncode == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://{http_mesh.layout.address('gateway')}/healthz", timeout=2)


def test_up_with_the_router_serving_http_runs_no_gateway_process(tmp_path):
    """`routemesh up --gateway router`: the API on BASE+7 from the router; with router replicas, a clear refusal."""
    from tests.integration.test_lifecycle import _free_port_base

    base = _free_port_base()
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path)}
    refused = subprocess.run([sys.executable, "-m", "routemesh", "up", "--gateway", "router", "--replicas", "router=2",
                              "--port-base", str(base)], capture_output=True, text=True, env=env, timeout=60)
    assert refused.returncode != 0 and "without router replicas" in refused.stderr
    assert "Traceback" not in refused.stderr
    proc = subprocess.Popen([sys.executable, "-m", "routemesh", "up", "--gateway", "router", "--port-base", str(base),
                             "--ledger-url", "off", "--sim-time-scale", "0.05"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines = []
        deadline = time.monotonic() + 60
        while "routemesh is up" not in (line := proc.stdout.readline()):
            lines.append(line)
            assert time.monotonic() < deadline and proc.poll() is None, lines
        assert not any(line.strip().startswith("gateway") for line in lines)
        reply = httpx.post(f"http://127.0.0.1:{base + 7}/v1/chat/completions", timeout=30,
                           json={"model": "auto", "messages": HELLO, "max_tokens": 8})
        assert reply.status_code == 200, reply.text
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
