"""The fault-injecting TCP proxy itself, against a tiny echo server: every mode, switched at runtime."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from tests.chaos.proxy import FaultProxy

pytestmark = [pytest.mark.chaos, pytest.mark.integration]


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        try:
            while data := self.request.recv(65536):
                self.server.received += len(data)  # type: ignore[attr-defined]
                self.request.sendall(data)
        except ConnectionResetError:
            pass  # the proxy resets connections on purpose


class EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    received = 0


@pytest.fixture(scope="module")
def echo() -> Iterator[EchoServer]:
    server = EchoServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(echo) -> Iterator[FaultProxy]:
    with FaultProxy(*echo.server_address) as p:
        yield p


def connect(proxy: FaultProxy, timeout: float = 2.0) -> socket.socket:
    return socket.create_connection((proxy.host, proxy.port), timeout=timeout)


def round_trip(sock: socket.socket, payload: bytes) -> bytes:
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def read_until_closed(sock: socket.socket) -> tuple[bytes, str]:
    """Everything readable, and how the connection ended: "eof", "reset" or "timeout"."""
    got = b""
    try:
        while chunk := sock.recv(65536):
            got += chunk
        return got, "eof"
    except ConnectionResetError:
        return got, "reset"
    except TimeoutError:
        return got, "timeout"


def test_pass_forwards_both_ways(proxy):
    assert proxy.mode == "pass"
    with connect(proxy) as sock:
        assert round_trip(sock, b"hello") == b"hello"
        assert round_trip(sock, b"x" * 200_000) == b"x" * 200_000
        assert proxy.active == 1
    assert proxy.accepted == 1


def test_refuse_stops_listening_and_resets_open_connections(proxy):
    with connect(proxy) as before:
        assert round_trip(before, b"ping") == b"ping"
        proxy.refuse()
        assert proxy.mode == "refuse"
        with pytest.raises(ConnectionRefusedError):
            connect(proxy)
        assert read_until_closed(before) == (b"", "reset")
    proxy.passthrough()
    with connect(proxy) as after:  # the same port again
        assert round_trip(after, b"back") == b"back"


def test_blackhole_accepts_and_swallows(proxy, echo):
    received = echo.received
    proxy.blackhole()
    with connect(proxy, timeout=0.3) as sock:
        sock.sendall(b"anyone there?")
        assert read_until_closed(sock) == (b"", "timeout")
    assert echo.received == received
    proxy.passthrough()
    with connect(proxy) as sock:
        assert round_trip(sock, b"yes") == b"yes"


def test_delay_adds_latency_per_chunk(proxy):
    with connect(proxy) as sock:
        started = time.monotonic()
        round_trip(sock, b"fast")
        undelayed = time.monotonic() - started
        proxy.delay(150)
        assert proxy.mode == "delay(150)"
        started = time.monotonic()
        assert round_trip(sock, b"slow") == b"slow"
        delayed = time.monotonic() - started
    # One chunk each way, each held 150 ms.
    assert undelayed < 0.1 and 0.3 <= delayed < 1.0


def test_reset_after_cuts_after_n_upstream_bytes(proxy):
    with connect(proxy) as early:
        assert round_trip(early, b"a" * 100) == b"a" * 100
        proxy.reset_after(10)
        early.sendall(b"0123456789abcdefghij")
        # Counted from the switch, not from the connection's start.
        assert read_until_closed(early) == (b"0123456789", "reset")
    with connect(proxy) as fresh:
        fresh.sendall(b"z" * 4)
        time.sleep(0.05)
        fresh.sendall(b"y" * 10)
        assert read_until_closed(fresh) == (b"zzzz" + b"y" * 6, "reset")
    proxy.reset_after(0)
    with connect(proxy) as nothing:
        nothing.sendall(b"hi")
        assert read_until_closed(nothing) == (b"", "reset")


def test_freeze_holds_everything_and_thaw_delivers_it(proxy, echo):
    with connect(proxy) as sock:
        assert round_trip(sock, b"warm") == b"warm"
        proxy.freeze()
        sock.settimeout(0.3)
        sock.sendall(b"held")
        assert read_until_closed(sock) == (b"", "timeout")
        with connect(proxy, timeout=0.3) as during:  # new connections are accepted and frozen too
            during.sendall(b"new")
            assert read_until_closed(during)[1] == "timeout"
            assert proxy.active == 2
            proxy.passthrough()
            during.settimeout(2)
            assert during.recv(16) == b"new"
        sock.settimeout(2)
        assert sock.recv(16) == b"held"


def test_close_connections_and_stop(echo):
    proxy = FaultProxy(*echo.server_address).start()
    socks = [connect(proxy) for _ in range(3)]
    for sock in socks:
        assert round_trip(sock, b"1") == b"1"
    assert proxy.close_connections() == 3
    assert all(read_until_closed(sock) == (b"", "reset") for sock in socks)
    proxy.stop()
    with pytest.raises(ConnectionRefusedError):
        connect(proxy)
    for sock in socks:
        sock.close()
