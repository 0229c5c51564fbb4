"""Hostile clients against a real gateway process (issue 13): deep JSON, NaN, slowloris, slow bodies, floods.

The gateway runs from its CLI with short timeouts and a small connection cap, so the flags are what is
tested. No router or control plane is needed: every answer here is decided before the gateway calls one.
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from routemesh.mesh import free_port

pytestmark = pytest.mark.integration

HEADER_TIMEOUT_S = 2.0
BODY_TIMEOUT_S = 2.0
MAX_CONNECTIONS = 4
# Scheduling on a busy machine; the timeouts themselves fire on the event loop's clock.
MARGIN_S = 1.5
USER = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory) -> Iterator[tuple[str, int]]:
    port, nobody = free_port(), free_port()
    log = tmp_path_factory.mktemp("gateway-inputs") / "gateway.log"
    with pathlib.Path(log).open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "routemesh", "serve", "gateway", "--listen", f"127.0.0.1:{port}",
             "--router", f"127.0.0.1:{nobody}", "--control", f"127.0.0.1:{nobody}", "--grace-s", "1",
             "--header-timeout-s", str(HEADER_TIMEOUT_S), "--body-timeout-s", str(BODY_TIMEOUT_S),
             "--max-connections", str(MAX_CONNECTIONS)],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "OTEL_SDK_DISABLED": "true"})
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        # Let the probe connection's handler finish: it counts against the cap until then.
        time.sleep(0.2)
        yield "127.0.0.1", port
    finally:
        proc.terminate()
        proc.wait(10)


def _post(gateway: tuple[str, int], content: str | bytes, path: str = "/v1/chat/completions") -> httpx.Response:
    host, port = gateway
    return httpx.post(f"http://{host}:{port}{path}", content=content, timeout=10,
                      headers={"content-type": "application/json"})


def _error(response: httpx.Response) -> dict:
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    return response.json()["error"]


def _read_until_closed(sock: socket.socket, deadline: float) -> bytes:
    """Everything the server sends until it closes (b"" read or reset), failing at `deadline`."""
    data = b""
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        except TimeoutError:
            pytest.fail(f"the gateway kept the connection open; received {data!r}")
        if not chunk:
            return data
        data += chunk


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/routemesh/explain"])
def test_deep_json_is_a_400_never_a_500(gateway, path):
    for depth in (65, 10_000):
        response = _post(gateway, "[" * depth + "]" * depth, path)
        assert response.status_code == 400
        error = _error(response)
        assert (error["type"], error["code"]) == ("invalid_request_error", "json_too_deep")
        assert "deeper than 64 levels" in error["message"]
    # 64 levels pass the parse: the answer is about the body's content, not its depth.
    deep = json.loads("[" * 62 + "]" * 62)
    response = _post(gateway, json.dumps({"messages": USER, "metadata": {"x": deep}}), path)
    assert (response.status_code, _error(response)["param"]) == (400, "metadata")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
@pytest.mark.parametrize(("field", "param"), [
    ('"temperature": {}', "temperature"),
    ('"top_p": {}', "top_p"),
    ('"routemesh": {{"max_cost_usd": {}}}', "routemesh.max_cost_usd"),
    ('"routemesh": {{"latency_target_ms": {}}}', "routemesh.latency_target_ms"),
])
def test_nan_and_infinity_are_a_400_naming_the_parameter(gateway, field, param, literal):
    body = '{"model": "auto", "messages": [{"role": "user", "content": "hi"}], ' + field.format(literal) + "}"
    response = _post(gateway, body)
    assert response.status_code == 400
    error = _error(response)
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "invalid_value", param)
    assert "finite number" in error["message"]


def test_slowloris_headers_are_cut_at_the_header_timeout(gateway):
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Slow: " + b"a" * 60
    with socket.create_connection(gateway, timeout=5) as sock:
        opened = time.monotonic()
        closed_at = None
        for byte in head:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed_at = time.monotonic()
                break
            sock.settimeout(1.0)  # one byte a second, watching for the close in between
            try:
                if sock.recv(65536) == b"":
                    closed_at = time.monotonic()
                    break
            except TimeoutError:
                pass
            except ConnectionResetError:
                closed_at = time.monotonic()
                break
            assert time.monotonic() - opened < HEADER_TIMEOUT_S + MARGIN_S, "the gateway kept a slowloris open"
        assert closed_at is not None, "the headers never ended, yet the connection stayed open"
        assert HEADER_TIMEOUT_S - 0.2 <= closed_at - opened < HEADER_TIMEOUT_S + MARGIN_S


def test_a_body_that_arrives_too_slowly_is_a_408_and_the_connection_closes(gateway):
    body = json.dumps({"messages": USER}).encode()
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body))
    with socket.create_connection(gateway, timeout=5) as sock:
        sock.sendall(head + body[:5])
        started = time.monotonic()
        received = b""
        for byte in body[5:]:
            sock.settimeout(0.5)
            try:
                received += sock.recv(65536)
            except TimeoutError:
                pass
            if received:
                break
            sock.sendall(bytes([byte]))
        else:
            pytest.fail("the whole slow body was waited for")
        waited = time.monotonic() - started
        received += _read_until_closed(sock, time.monotonic() + 15)
    status, _, rest = received.partition(b"\r\n")
    assert status == b"HTTP/1.1 408 Request Timeout"
    assert b"connection: close" in rest.lower()
    assert json.loads(rest.partition(b"\r\n\r\n")[2])["error"]["code"] == "request_timeout"
    assert BODY_TIMEOUT_S - 0.2 <= waited < BODY_TIMEOUT_S + MARGIN_S


def test_connections_past_the_cap_get_a_503_and_are_closed(gateway):
    held = [socket.create_connection(gateway, timeout=5) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.2)
        started = time.monotonic()
        with socket.create_connection(gateway, timeout=5) as extra:
            received = _read_until_closed(extra, time.monotonic() + 2)
        assert time.monotonic() - started < 1.0
        status, _, rest = received.partition(b"\r\n")
        assert status == b"HTTP/1.1 503 Service Unavailable"
        assert json.loads(rest.partition(b"\r\n\r\n")[2])["error"]["code"] == "too_many_connections"
    finally:
        for sock in held:
            sock.close()
    # Once they are gone the gateway serves again (a 400 from the gateway itself, not the cap's 503).
    deadline = time.monotonic() + 2
    while (response := _post(gateway, "{not json")).status_code == 503:
        assert time.monotonic() < deadline, "closed connections still count against the cap"
        time.sleep(0.05)
    assert _error(response)["code"] == "invalid_json"


def test_idle_connections_are_closed_at_the_header_timeout_which_frees_the_cap(gateway):
    with socket.create_connection(gateway, timeout=5) as idle:
        opened = time.monotonic()
        assert _read_until_closed(idle, opened + HEADER_TIMEOUT_S + MARGIN_S) == b""
        assert time.monotonic() - opened >= HEADER_TIMEOUT_S - 0.2
