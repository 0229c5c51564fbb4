"""A fault-injecting TCP proxy (a small toxiproxy) running its own asyncio loop in a background thread."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_READ_SIZE = 65536
_CALL_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Mode:
    """The proxy's current behaviour; `epoch` changes on every switch so per-connection counters restart."""

    name: str = "pass"  # pass, refuse, blackhole, delay, reset_after, freeze
    ms: float = 0.0
    nbytes: int = 0
    epoch: int = 0

    def __str__(self) -> str:
        if self.name == "delay":
            return f"delay({self.ms:g})"
        if self.name == "reset_after":
            return f"reset_after({self.nbytes})"
        return self.name


@dataclass(eq=False)
class _Conn:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    epoch: int = -1
    down_bytes: int = 0  # from upstream, since `epoch`


def _abort(writer: asyncio.StreamWriter | None) -> None:
    """Close with an RST (SO_LINGER 0), as a crashed peer or a middlebox reset would."""
    if writer is None or writer.transport.is_closing():
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    """Listens on host:port (0 picks one) and forwards to target, with modes switchable at runtime.

    Modes: `pass`; `refuse` (stop listening: new connections get ECONNREFUSED); `blackhole` (accept and
    read, never forward or answer); `delay(ms)` (each chunk, both ways, waits ms); `reset_after(n)`
    (each connection is reset once n more bytes came from upstream); `freeze` (nothing moves either
    way on any connection, all stay open). `refuse` and `blackhole` also reset open connections by
    default, because a pooled keep-alive connection would otherwise slip past the fault. Every method
    is thread-safe and returns once the switch is in effect; none blocks the caller's event loop for long.
    """

    def __init__(self, target_host: str, target_port: int, *, host: str = "127.0.0.1", port: int = 0):
        self.target = (target_host, target_port)
        self.host, self.port = host, port
        self.accepted = 0
        self._mode = Mode()
        self._conns: set[_Conn] = set()
        self._server: asyncio.Server | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"fault-proxy-{target_port}",
                                        daemon=True)
        self._thawed: asyncio.Event | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread.start()
        self._call(self._start)
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._shutdown)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(_CALL_TIMEOUT_S)
        self._loop.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def url(self, scheme: str = "http", path: str = "") -> str:
        return f"{scheme}://{self.address}{path}"

    # -- modes -------------------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        return str(self._mode)

    @property
    def active(self) -> int:
        """Connections open right now."""
        return self._call(lambda: len(self._conns))

    def passthrough(self) -> None:
        self._switch(Mode("pass"))

    def refuse(self, drop_existing: bool = True) -> None:
        self._switch(Mode("refuse"), drop_existing)

    def blackhole(self, drop_existing: bool = True) -> None:
        self._switch(Mode("blackhole"), drop_existing)

    def delay(self, ms: float) -> None:
        if ms < 0:
            raise ValueError("delay must not be negative")
        self._switch(Mode("delay", ms=ms))

    def reset_after(self, nbytes: int) -> None:
        if nbytes < 0:
            raise ValueError("reset_after needs a byte count >= 0")
        self._switch(Mode("reset_after", nbytes=nbytes))

    def freeze(self) -> None:
        self._switch(Mode("freeze"))

    def close_connections(self) -> int:
        """Reset every open connection; returns how many there were."""
        return self._call(self._drop_all)

    def _switch(self, mode: Mode, drop_existing: bool = False) -> None:
        async def apply() -> None:
            self._mode = Mode(mode.name, mode.ms, mode.nbytes, self._mode.epoch + 1)
            if mode.name == "refuse" and self._server is not None:
                self._server.close()
                self._server = None
            elif mode.name != "refuse" and self._server is None:
                await self._listen()
            if drop_existing:
                self._drop_all()
            assert self._thawed is not None
            if mode.name == "freeze":
                self._thawed.clear()
            else:
                self._thawed.set()

        self._call(apply)

    # -- loop side ---------------------------------------------------------------------------------

    def _call(self, fn: Callable[[], Any]) -> Any:
        """Run fn (a function or coroutine function) on the proxy's loop and return its result."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("FaultProxy methods must not be called from the proxy's own thread")

        async def run() -> Any:
            result = fn()
            return await result if asyncio.iscoroutine(result) else result

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(_CALL_TIMEOUT_S)

    async def _start(self) -> None:
        self._thawed = asyncio.Event()
        self._thawed.set()
        await self._listen()

    async def _listen(self) -> None:
        # reuse_address lets `refuse` give the port back and take the same one again.
        self._server = await asyncio.start_server(self._handle, self.host, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        self._drop_all()
        tasks = [t for conn in self._conns for t in conn.tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _drop_all(self) -> int:
        conns = list(self._conns)
        for conn in conns:
            self._close(conn)
        return len(conns)

    def _close(self, conn: _Conn) -> None:
        _abort(conn.client)
        _abort(conn.upstream)
        self._conns.discard(conn)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        conn = _Conn(client=writer)
        mode = self._mode
        if mode.name == "refuse":  # accepted just before the listener closed
            _abort(writer)
            return
        self._conns.add(conn)
        try:
            if mode.name == "blackhole":
                while await reader.read(_READ_SIZE):
                    pass
                return
            try:
                up_reader, conn.upstream = await asyncio.open_connection(*self.target)
            except OSError:
                return
            conn.tasks = [asyncio.current_task(), asyncio.create_task(self._pump(conn, reader, conn.upstream, False))]
            await self._pump(conn, up_reader, writer, True)
            await conn.tasks[1]
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._close(conn)

    async def _flowing(self) -> None:
        assert self._thawed is not None
        await self._thawed.wait()

    async def _pump(self, conn: _Conn, src: asyncio.StreamReader, dst: asyncio.StreamWriter, down: bool) -> None:
        """Copy src to dst under the current mode; `down` is the upstream-to-client direction."""
        try:
            while True:
                await self._flowing()
                data = await src.read(_READ_SIZE)
                # A freeze that began while this read waited holds the data too.
                await self._flowing()
                if not data:
                    if dst.can_write_eof():
                        dst.write_eof()
                    return
                mode = self._mode
                if mode.name == "delay" and mode.ms > 0:
                    await asyncio.sleep(mode.ms / 1000)
                if down and mode.name == "reset_after":
                    if conn.epoch != mode.epoch:
                        conn.epoch, conn.down_bytes = mode.epoch, 0
                    room = mode.nbytes - conn.down_bytes
                    if len(data) >= room:
                        if room > 0:
                            dst.write(data[:room])
                            await self._flushed(dst)
                        self._close(conn)
                        return
                    conn.down_bytes += len(data)
                dst.write(data)
                await dst.drain()
        except (OSError, RuntimeError):
            # The other side went away (or was reset by a mode switch): end this connection.
            self._close(conn)

    @staticmethod
    async def _flushed(writer: asyncio.StreamWriter, timeout_s: float = 1.0) -> None:
        """Wait until asyncio handed everything to the kernel, so a reset does not swallow it."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while writer.transport.get_write_buffer_size():
                    await asyncio.sleep(0.001)
