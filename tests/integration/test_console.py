"""The console's JSON API over HTTP against real meshes: what it answers after traffic, and who it answers.

The shared mesh is open (no credentials in use, as `routemesh up`); the locked mesh runs with a bootstrap admin
key, API keys and --require-admin, and keeps a ledger in SQLite.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import httpx
import pytest

from routemesh.mesh import Mesh, MeshLayout
from routemesh.v1 import control_pb2, control_pb2_grpc, telemetry_pb2, telemetry_pb2_grpc
from tests.integration.browser import artifacts_dir, chromium_page
from tests.integration.conftest import REDIS_URL, SIM_TIME_SCALE

pytestmark = pytest.mark.integration
XSS = "<img src=x onerror=alert(1)>"
BOOTSTRAP = "console-bootstrap-admin-key-" + "c" * 30
PEPPER = "q" * 40


def chat(gateway: str, tenant: str = "acme", text: str = "Write a Python function that adds two numbers") -> str:
    reply = httpx.post(f"{gateway}/v1/chat/completions", timeout=30, json={
        "model": "auto", "max_tokens": 64, "metadata": {"tenant": tenant},
        "messages": [{"role": "user", "content": text}]})
    reply.raise_for_status()
    return reply.json()["id"].removeprefix("chatcmpl-")


def get(gateway: str, path: str, key: str = "") -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.get(f"{gateway}/console/api/{path}", headers=headers, timeout=15)


def eventually(check, timeout_s: float = 10.0):
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "not in time"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def gateway(mesh) -> str:
    return f"http://{mesh.layout.address('gateway')}"


def test_the_page_and_its_files_are_served_with_a_strict_content_security_policy(gateway) -> None:
    page = httpx.get(f"{gateway}/console", timeout=5)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "frame-ancestors 'none'" in policy
    script = httpx.get(f"{gateway}/console/static/console.js", timeout=5)
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert script.headers["x-content-type-options"] == "nosniff"
    missing = httpx.get(f"{gateway}/console/static/..%2Fauth.py", timeout=5)
    assert missing.status_code == 404 and missing.json()["error"]["message"]


def test_after_traffic_the_api_has_the_models_routes_and_each_decisions_explain(mesh, gateway, policy_file) -> None:
    from routemesh.common.policy import parse_policy

    assert get(gateway, "session").json() == {"open": True, "locked_because": []}
    ids = [chat(gateway, tenant=XSS) for _ in range(3)]
    decisions = eventually(lambda: (lambda body: body if set(ids) <= {d["decision_id"] for d in body["decisions"]}
                                    else None)(get(gateway, "decisions").json()))
    overview = get(gateway, "overview").json()
    policy_models = set(parse_policy(policy_file.read_text()).models)
    assert {m["model"] for m in overview["models"]} >= policy_models
    assert sum(m["samples"] for m in overview["models"]) >= 3
    auto = next(r for r in overview["routes"] if r["route"] == "auto")
    assert auto["requests"] >= 3 and auto["ttft_p50_ms"] > 0
    assert overview["policy"]["version"] >= 1 and overview["history"]["t"]
    ours = [d for d in decisions["decisions"] if d["decision_id"] in ids]
    assert {d["tenant"] for d in ours} == {XSS}
    # The tenant comes back as a JSON string that no browser would read as markup.
    raw = get(gateway, f"decisions/{ids[0]}")
    assert "<img" not in raw.text and "\\u003cimg" in raw.text
    explain = raw.json()
    assert explain["tenant"] == XSS and explain["decision"]["candidates"]
    assert sum(c["chosen"] for c in explain["decision"]["candidates"]) == 1
    assert explain["decision"]["reason"] and explain["decision"]["features"]["source"]
    unknown = get(gateway, "decisions/" + "0" * 32)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "decision_not_found"
    assert get(gateway, "decisions/bad%20id").status_code == 400


def test_policy_alerts_and_no_ledger_on_the_open_mesh(gateway) -> None:
    policy = get(gateway, "policy").json()
    assert policy["current"]["version"] >= 1 and policy["changes"][0]["action"] == "applied"
    assert (policy["diff"] is None) == (policy["previous"] is None)
    alerts = get(gateway, "alerts").json()
    assert set(alerts) == {"firing", "resolved"}
    assert get(gateway, "ledger").json() == {"configured": False,
                                             "message": "no ledger: telemetry runs without --ledger-url"}


@pytest.fixture(scope="module")
def locked_mesh(tmp_path_factory, redis_prefix, policy_file) -> Iterator[Mesh]:
    """Credentials in use: the bootstrap key, API keys (control and the gateway read them in Redis), admin RPCs
    closed to anyone without one; and a ledger."""
    prefix = f"{redis_prefix}console:"
    redis = ["--redis-url", REDIS_URL, "--redis-prefix", prefix]
    folder = tmp_path_factory.mktemp("console-locked")
    started = Mesh(MeshLayout.free(), policy=str(policy_file), sim_time_scale=SIM_TIME_SCALE, log_dir=folder,
                   extra_env={"ROUTEMESH_ADMIN_KEY": BOOTSTRAP, "ROUTEMESH_KEY_PEPPER": PEPPER,
                              "ROUTEMESH_REQUIRE_ADMIN": "true", "ROUTEMESH_LEDGER_URL": f"sqlite:///{folder}/ledger.db"},
                   extra_args={"control": redis, "telemetry": redis,
                               "gateway": ["--keys-redis-url", REDIS_URL, "--keys-redis-prefix", prefix]})
    started.start()
    yield started
    started.stop()


def make_key(mesh: Mesh, role: str) -> str:
    with mesh.channel("control") as channel:
        reply = control_pb2_grpc.ControlPlaneServiceStub(channel).CreateKey(
            control_pb2.CreateKeyRequest(tenant="ops", role=role), timeout=10,
            metadata=[("authorization", f"Bearer {BOOTSTRAP}")])
    return reply.secret


def test_once_keys_exist_the_api_needs_an_admin_credential(locked_mesh) -> None:
    gateway = f"http://{locked_mesh.layout.address('gateway')}"
    assert httpx.get(f"{gateway}/console", timeout=5).status_code == 200  # the page, with its sign-in form
    user, admin = make_key(locked_mesh, "user"), make_key(locked_mesh, "admin")
    for key in ("", "not-a-key", BOOTSTRAP + "x", user):
        for path in ("session", "overview", "decisions", "policy", "alerts", "ledger"):
            refused = get(gateway, path, key)
            assert refused.status_code == 401, (path, key)
            error = refused.json()["error"]
            assert error["code"] == "admin_required" and "Traceback" not in refused.text
            assert BOOTSTRAP not in refused.text and (not key or key not in refused.text)
            assert refused.headers["www-authenticate"].startswith("Bearer")
    # Telemetry itself refuses a caller without the credential (no TLS here, so no certificate admits the gateway)...
    with locked_mesh.channel("telemetry") as channel, pytest.raises(grpc.RpcError) as refused_rpc:
        telemetry_pb2_grpc.TelemetryServiceStub(channel).ListRecentRequests(
            telemetry_pb2.ListRecentRequestsRequest(), timeout=5)
    assert refused_rpc.value.code() == grpc.StatusCode.UNAUTHENTICATED
    for key in (BOOTSTRAP, admin):
        session = get(gateway, "session", key)
        assert session.status_code == 200 and "ROUTEMESH_ADMIN_KEY is set" in session.json()["locked_because"]
        # ...so these answers show the gateway passed the credential on, and telemetry and control took it.
        assert get(gateway, "overview", key).json()["models"]
        assert get(gateway, "policy", key).json()["current"]["version"] == 1


def test_the_ledger_report_comes_through_the_console(locked_mesh) -> None:
    gateway = f"http://{locked_mesh.layout.address('gateway')}"
    ids = [chat(gateway) for _ in range(2)]
    time.sleep(0.5)  # a report read before the rows are written is reused for a few seconds
    # Rows reach the database within the writer's interval; the console reuses a report for a few seconds.
    report = eventually(lambda: (lambda body: body if body["configured"] and body["report"]["total"]["requests"] >= 2
                                 else None)(get(gateway, "ledger", BOOTSTRAP).json()), timeout_s=20)["report"]
    assert report["route"]["auto"]["requests"] >= 2 and "saved_vs_strongest" in report["total"]
    assert report["since"].endswith("Z") and len(ids) == 2


def test_the_page_asks_for_the_key_once_and_keeps_it_for_the_session(locked_mesh) -> None:
    gateway = f"http://{locked_mesh.layout.address('gateway')}"
    with chromium_page() as (page, dialogs):
        page.goto(f"{gateway}/console")
        page.wait_for_selector("#login-panel:not([hidden])")
        assert page.is_hidden("#console")
        page.fill("#key", "wrong-key-" + "w" * 30)
        page.click("#login button")
        # (wait_for_function cannot run here: the page's CSP forbids evaluating strings, as it should.)
        page.wait_for_selector("#login-error:has-text('not accepted')")
        page.fill("#key", BOOTSTRAP)
        page.click("#login button")
        page.wait_for_selector("#models tbody tr[data-model]")
        page.screenshot(path=str(artifacts_dir() / "console-signed-in.png"))
        page.reload()  # the key stays for the tab's session: no second sign-in
        page.wait_for_selector("#models tbody tr[data-model]")
        assert page.is_hidden("#login-panel")
        assert page.evaluate("sessionStorage.getItem('routemesh.console.key')") == BOOTSTRAP
        page.click("#sign-out")
        page.wait_for_selector("#login-panel:not([hidden])")
        assert page.evaluate("sessionStorage.getItem('routemesh.console.key')") is None
    assert dialogs == []
