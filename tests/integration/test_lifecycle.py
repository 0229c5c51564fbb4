"""Policy hot reload, degraded dependencies, graceful drain, and the CLI, against a real mesh."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from routemesh.client import RouterClient, RoutemeshError
from routemesh.common.policy import load_default_policy_text
from routemesh.v1 import common_pb2, control_pb2, control_pb2_grpc

pytestmark = pytest.mark.integration
FAQ = "What are your opening hours on Sunday?"


def wait_for(predicate, timeout_s: float = 10.0, interval_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval_s)


def test_policy_file_edit_is_hot_reloaded(router_address, policy_file):
    original = policy_file.read_text()
    with RouterClient(router_address) as client:
        before = client.explain(FAQ).decision
        assert before.model == "fast-cheap"
        # FAQ is a question: the rule for questions and math decides it.
        edited = original.replace("models: [fast-cheap, strong]", "models: [balanced]")
        assert edited != original
        try:
            policy_file.write_text(edited)
            after = wait_for(lambda: (d := client.explain(FAQ).decision).model == "balanced" and d, 10)
            assert after, "the router did not pick up the edited policy"
            assert after.policy_version > before.policy_version
            # An invalid edit is rejected by control; the last good policy stays in force.
            policy_file.write_text(edited.replace("pricing: {input_per_mtok: 0.50", "pricing: {input_per_mtok: -5"))
            time.sleep(2.5)
            still = client.explain(FAQ).decision
            assert still.policy_version == after.policy_version and still.model == "balanced"
            assert client.complete(FAQ).final.status == common_pb2.FINISH_STATUS_COMPLETE
        finally:
            policy_file.write_text(original)
        restored = wait_for(lambda: (d := client.explain(FAQ).decision).model == "fast-cheap" and d, 10)
        assert restored


def test_invalid_policy_through_the_api_names_the_fields(mesh, router_address):
    bad = load_default_policy_text().replace("provider: sim\n    upstream_model: sim-fast",
                                             "provider: nowhere\n    upstream_model: sim-fast")
    with grpc.insecure_channel(mesh.layout.address("control")) as channel:
        stub = control_pb2_grpc.ControlPlaneServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.ApplyPolicy(control_pb2.ApplyPolicyRequest(policy_yaml=bad), timeout=5)
    wrapped = RoutemeshError.from_rpc_error(err.value)
    assert wrapped.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "models.fast-cheap.provider" in [f for f, _ in wrapped.field_violations]
    with RouterClient(router_address) as client:
        assert client.complete(FAQ).final.status == common_pb2.FINISH_STATUS_COMPLETE


def test_classifier_down_router_decides_on_its_own_and_says_so(mesh, router_address):
    mesh.stop_service("classifier")
    try:
        with RouterClient(router_address) as client:
            result = client.complete(FAQ)
        assert result.decision.features.source == "router-fallback"
        assert result.final.status == common_pb2.FINISH_STATUS_COMPLETE
    finally:
        mesh.start_service("classifier")
        mesh.wait_healthy("classifier", time.monotonic() + 30)


def test_control_down_data_plane_keeps_last_good_policy(mesh, router_address):
    mesh.stop_service("control")
    try:
        with RouterClient(router_address) as client:
            for _ in range(3):
                assert client.complete(FAQ).final.status == common_pb2.FINISH_STATUS_COMPLETE
    finally:
        mesh.start_service("control")
        mesh.wait_healthy("control", time.monotonic() + 30)


def test_telemetry_down_chat_still_works(mesh, router_address):
    mesh.stop_service("telemetry")
    try:
        with RouterClient(router_address) as client:
            assert client.complete(FAQ).final.status == common_pb2.FINISH_STATUS_COMPLETE
            # The pushed snapshot is used until it is 2 s old, then decisions say telemetry is degraded.
            time.sleep(2.5)
            result = client.complete(FAQ)
            assert result.final.status == common_pb2.FINISH_STATUS_COMPLETE
            assert "telemetry" in result.decision.degraded
    finally:
        mesh.start_service("telemetry")
        mesh.wait_healthy("telemetry", time.monotonic() + 30)
    # The watch reconnects by itself (backoff at most 2 s) and decisions are fresh again.
    deadline = time.monotonic() + 10
    with RouterClient(router_address) as client:
        while "telemetry" in client.complete(FAQ).decision.degraded:
            assert time.monotonic() < deadline, "the health watch did not come back after telemetry restarted"
            time.sleep(0.2)


def test_cli_chat_and_explain(mesh, router_address):
    env_cmd = [sys.executable, "-m", "routemesh"]
    chat = subprocess.run([*env_cmd, "chat", "Translate into Spanish: good morning", "--router", router_address],
                          capture_output=True, text=True, timeout=60)
    assert chat.returncode == 0, chat.stderr
    assert "[decision]" in chat.stderr and "[final] COMPLETE" in chat.stderr
    assert chat.stdout.strip()
    explain = subprocess.run([*env_cmd, "explain", "Prove that sqrt(2) is irrational", "--router", router_address],
                             capture_output=True, text=True, timeout=60)
    assert explain.returncode == 0, explain.stderr
    assert "rank" in explain.stdout and "balanced" in explain.stdout
    bad = subprocess.run([*env_cmd, "chat", "hi", "--model", "nope", "--router", router_address],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1
    assert "NOT_FOUND" in bad.stderr and "Traceback" not in bad.stderr


def test_cli_policy_validate_reports_every_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(load_default_policy_text().replace("output_per_mtok: 0.40", "output_per_mtok: -1")
                   .replace("context_window: 16384\n    max_output_tokens: 4096\n    capabilities: [streaming, json]",
                            "context_window: 0\n    max_output_tokens: 4096\n    capabilities: [streaming, json]"))
    result = subprocess.run([sys.executable, "-m", "routemesh", "policy", "validate", str(bad)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "models.fast-cheap.pricing.output_per_mtok" in result.stderr
    assert "models.fast-cheap.context_window" in result.stderr
    assert "Traceback" not in result.stderr


def test_sigterm_drains_in_flight_streams(mesh, router_address, sim):
    """Runs last in this module: it restarts the router."""
    # 40 tokens at 0.4 tokens/s x the test time scale 0.05 = 20 tokens/s: a ~2 s stream.
    sim.patch("sim-strong", tokens_per_s=0.4, min_tokens=40, max_tokens=40)
    results: dict[str, object] = {}

    def stream() -> None:
        try:
            with RouterClient(router_address) as client:
                results["result"] = client.complete("Tell me about lighthouses", model="strong")
        except Exception as exc:  # noqa: BLE001 - recorded for the assertion
            results["error"] = exc

    worker = threading.Thread(target=stream)
    worker.start()
    time.sleep(0.4)
    proc = mesh.processes["router"]
    assert "result" not in results, "the stream should still be running when SIGTERM arrives"
    proc.send_signal(15)
    signalled = time.monotonic()
    # While draining, health says NOT_SERVING (or the port is gone) and new calls are refused.
    with grpc.insecure_channel(router_address) as channel:
        try:
            status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1).status
            assert status == health_pb2.HealthCheckResponse.NOT_SERVING
        except grpc.RpcError:
            pass
    worker.join(30)
    assert proc.wait(30) == 0
    assert "error" not in results, results.get("error")
    result = results["result"]
    assert result.final.status == common_pb2.FINISH_STATUS_COMPLETE
    assert result.final.usage.output_tokens >= 40
    assert time.monotonic() - signalled > 0.5, "the router should have kept streaming after SIGTERM"
    mesh.start_service("router")
    mesh.wait_healthy("router", time.monotonic() + 30)


def test_demo_runs_end_to_end():
    result = subprocess.run([sys.executable, "-m", "routemesh", "demo", "--requests", "12"],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "decision mix:" in result.stdout
    assert "failed: 0" in result.stdout
    assert "Traceback" not in result.stderr


def _free_port_base(span: int = 8) -> int:
    import random
    import socket

    for _ in range(50):
        base = random.randrange(20_000, 40_000, 10)
        try:
            socks = []
            for offset in range(span):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", base + offset))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no free port range")


def test_up_starts_every_service_and_stops_them_on_sigint(tmp_path):
    import os
    import signal
    import sqlite3

    base = _free_port_base()
    # The ledger goes to the user's state directory with no set-up: here, the test's own.
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path)}
    env.pop("ROUTEMESH_LEDGER_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "routemesh", "up", "--port-base", str(base)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "routemesh is up" in line or not line:
                break
        assert any("routemesh is up" in line for line in lines), "".join(lines) + proc.stderr.read()
        assert f"router at 127.0.0.1:{base + 1}" in lines[-1]
        ledger = tmp_path / "routemesh" / "ledger.db"
        assert f"ledger: SQLite {ledger}" in lines[-1]
        console = f"http://127.0.0.1:{base + 7}/console"
        assert f"console at {console}" in lines[-1]
        import httpx

        page = httpx.get(console, timeout=10)
        assert page.status_code == 200 and "routemesh" in page.text
        assert f"metrics at http://127.0.0.1:{base + 11}/metrics" in "".join(lines)
        with RouterClient(f"127.0.0.1:{base + 1}") as client:
            result = client.complete(FAQ)
            assert result.final.status == common_pb2.FINISH_STATUS_COMPLETE
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        assert "stopped" in out
        with sqlite3.connect(ledger) as db:
            rows = db.execute("SELECT decision_id, serving_model FROM ledger_requests").fetchall()
        assert rows == [(result.decision.decision_id, result.final.model)]
        # Nothing listens any more: every service was stopped.
        import socket

        for offset in range(1, 8):
            with socket.socket() as sock:
                assert sock.connect_ex(("127.0.0.1", base + offset)) != 0, f"port {base + offset} still open"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_up_restarts_a_service_that_dies(tmp_path):
    """SIGKILL routemesh up's only executor: it comes back, and a new chat completes within 15 s of the kill."""
    import os
    import signal

    base = _free_port_base()
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "routemesh", "up", "--port-base", str(base), "--ledger-url", "off"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        while "routemesh is up" not in proc.stdout.readline():
            assert time.monotonic() < deadline and proc.poll() is None
        executor = _pid_listening(f"127.0.0.1:{base + 4}", "executor")
        os.kill(executor, signal.SIGKILL)
        killed = time.monotonic()
        answered = None
        while answered is None and time.monotonic() - killed < 15:
            try:
                with RouterClient(f"127.0.0.1:{base + 1}", timeout=5) as client:
                    result = client.complete(FAQ)
                if result.final.status == common_pb2.FINISH_STATUS_COMPLETE:
                    answered = time.monotonic() - killed
            except Exception:  # noqa: BLE001 - refused while the executor is away: try again
                time.sleep(0.2)
        assert answered is not None, "no chat completed within 15 s of killing the executor"
        print(f"\n[up] a chat completed {answered:.1f} s after the executor was killed")
        assert proc.poll() is None, "routemesh up stopped"
        assert _pid_listening(f"127.0.0.1:{base + 4}", "executor") != executor
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert "executor exited (code -9); restarting it in 0.5 s" in err and "executor restarted" in err
    finally:
        if proc.poll() is None:
            proc.kill()


def test_streams_cut_by_a_killed_executor_all_end_honestly(tmp_path):
    """100 long streams through routemesh up; SIGKILL its only executor mid-stream: each stream ends with a
    final status or an error status, none silent, none hung."""
    import asyncio
    import os
    import signal

    from routemesh.client import AsyncRouterClient, RoutemeshError

    base = _free_port_base()
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "routemesh", "up", "--port-base", str(base), "--ledger-url", "off",
                             "--sim-time-scale", "3"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)

    async def streams() -> list[str]:
        async with AsyncRouterClient(f"127.0.0.1:{base + 1}", timeout=60) as client:
            async def one() -> str:
                try:
                    result = await client.complete("Write a long story about a lighthouse keeper.", max_tokens=200)
                except RoutemeshError as exc:
                    return f"error {exc.code.name}"
                return f"final {result.final.status}"

            tasks = [asyncio.create_task(one()) for _ in range(100)]
            await asyncio.sleep(1.5)  # every stream is under way
            os.kill(_pid_listening(f"127.0.0.1:{base + 4}", "executor"), signal.SIGKILL)
            return await asyncio.wait_for(asyncio.gather(*tasks), 45)

    try:
        deadline = time.monotonic() + 60
        while "routemesh is up" not in proc.stdout.readline():
            assert time.monotonic() < deadline and proc.poll() is None
        outcomes = asyncio.run(streams())
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert len(outcomes) == 100
    ended = {o for o in outcomes}
    print(f"\n[up] 100 streams, executor killed mid-stream: {sorted(ended)}")
    # Every stream said how it ended; some were cut (not all completed before the kill).
    assert all(o.startswith(("final ", "error ")) for o in outcomes)
    assert any(o != f"final {common_pb2.FINISH_STATUS_COMPLETE}" for o in outcomes)


def _start_up(base: int, tmp_path, *extra: str) -> tuple[subprocess.Popen, list[str]]:
    """`routemesh up` on ports from `base`, returned once it says it is up, with what it printed."""
    import os

    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "routemesh", "up", "--port-base", str(base), "--ledger-url", "off",
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []
    deadline = time.monotonic() + 90
    while not lines or "routemesh is up" not in lines[-1]:
        lines.append(proc.stdout.readline())
        assert time.monotonic() < deadline and proc.poll() is None, "".join(lines) + proc.stderr.read()
    return proc, lines


ANSWERED = ("FINISH_STATUS_COMPLETE", "FINISH_STATUS_LENGTH")


def test_up_replicas_balance_and_lose_no_uncommitted_request(tmp_path):
    """`routemesh up --replicas executor=2,router=2`: every replica on its own port. SIGKILL one executor under
    60 streams: each stream that had no token before the kill is answered (by the other executor), each cut one
    ends with a status. SIGKILL one router: the gateway's requests go to the other."""
    import asyncio
    import os
    import signal

    import httpx

    from routemesh.client import AsyncRouterClient

    base = _free_port_base(span=24)
    proc, lines = _start_up(base, tmp_path, "--replicas", "executor=2,router=2", "--sim-time-scale", "1")
    routers = [f"127.0.0.1:{base + 1}", f"127.0.0.1:{base + 21}"]
    executors = [f"127.0.0.1:{base + 4}", f"127.0.0.1:{base + 20}"]
    try:
        printed = "".join(lines)
        assert f"executor-2  healthy at {executors[1]}" in printed, printed
        assert f"router-2    healthy at {routers[1]}" in printed, printed
        assert f"router at {routers[0]} and {routers[1]}" in lines[-1]

        async def streams() -> list[tuple[bool, str]]:
            killed = asyncio.Event()
            async with AsyncRouterClient(routers[0], timeout=60) as client:
                async def one(i: int) -> tuple[bool, str]:
                    """(whether a token arrived before the kill, how the stream ended)"""
                    if i >= 30:  # half start at once, half arrive in the second after the kill
                        await killed.wait()
                        await asyncio.sleep((i - 30) * 0.03)
                    committed = False
                    try:
                        async for event in client.chat(f"Tell me a fact about the number {i}.", max_tokens=40):
                            kind = event.WhichOneof("event")
                            committed |= kind == "delta" and not killed.is_set()
                            if kind == "final":
                                return committed, common_pb2.FinishStatus.Name(event.final.status)
                    except RoutemeshError as exc:
                        return committed, f"error {exc.code.name}"
                    return committed, "no final event"

                tasks = [asyncio.create_task(one(i)) for i in range(60)]
                await asyncio.sleep(0.6)
                os.kill(_pid_listening(executors[1], "executor"), signal.SIGKILL)
                killed.set()
                return await asyncio.wait_for(asyncio.gather(*tasks), 45)

        outcomes = asyncio.run(streams())
        uncommitted = sum(not committed for committed, _ in outcomes)
        print(f"\n[up --replicas] 60 streams, executor-2 killed: "
              f"{sorted(Counter(status for _, status in outcomes).items())}; "
              f"{uncommitted} had no token before the kill, all answered")
        assert uncommitted >= 30
        for committed, status in outcomes:
            assert status.startswith(("FINISH_STATUS_", "error ")), status
            if not committed:  # no token had come from the killed executor: the other one serves it
                assert status in ANSWERED, status
        assert any(status not in ANSWERED for _, status in outcomes), "no stream was cut: the kill hit nothing"

        os.kill(_pid_listening(routers[1], "router"), signal.SIGKILL)
        with httpx.Client(base_url=f"http://127.0.0.1:{base + 7}/v1", timeout=30) as http:
            codes = [http.post("/chat/completions", json={"model": "auto", "messages": [
                {"role": "user", "content": f"{FAQ} ({i})"}]}).status_code for i in range(10)]
        assert codes == [200] * 10
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert "executor-2 exited (code -9)" in err and "router-2 exited (code -9)" in err


def test_up_refuses_replicas_it_cannot_run(tmp_path):
    for value, problem in (("gateway=2", "SERVICE one of executor"), ("executor=0", "COUNT must be 1 to 16"),
                           ("telemetry=2", "needs --redis-url")):
        result = subprocess.run([sys.executable, "-m", "routemesh", "up", "--replicas", value],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode != 0 and problem in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def _pid_listening(listen: str, service: str) -> int:
    """The pid of the `routemesh serve SERVICE --listen LISTEN` process."""
    import os

    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                args = handle.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "serve" in args and service in args and listen in args:
            return int(pid)
    raise AssertionError(f"no {service} process listening on {listen}")


def test_top_shows_every_model(mesh, router_address):
    with RouterClient(router_address) as client:
        client.complete(FAQ)
    result = subprocess.run([sys.executable, "-m", "routemesh", "top", "--once", "--telemetry",
                             mesh.layout.address("telemetry")], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    for name in ("fast-cheap", "balanced", "strong", "long-context", "flaky", "ttft p50", "circuit"):
        assert name in result.stdout
    down = subprocess.run([sys.executable, "-m", "routemesh", "top", "--once", "--telemetry", "127.0.0.1:1"],
                          capture_output=True, text=True, timeout=30)
    assert down.returncode == 1 and "unreachable" in down.stderr and "Traceback" not in down.stderr
