"""Small asyncio and address helpers shared by every service."""

from __future__ import annotations

import asyncio


async def cancel_and_wait(task: asyncio.Task | None) -> None:
    """Cancel a background task and wait until it has finished (its cancellation is not an error)."""
    if task is None or task.done():
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass


def split_listen(address: str, program: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` -> (host, port); a bad address ends `program` with a clear message."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise SystemExit(f"{program}: --listen must be HOST:PORT, got {address!r}")
    return host.strip("[]") or "127.0.0.1", int(port)
