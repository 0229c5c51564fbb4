"""One long-lived server stream kept open: reconnected with backoff, each message handed to a callback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Generic, TypeVar

import grpc

from routemesh.common.channels import WATCH_KEEPALIVE_MS, TracedChannel, open_channel
from routemesh.common.tasks import cancel_and_wait

Message = TypeVar("Message")

INITIAL_BACKOFF_S = 0.1
MAX_BACKOFF_S = 2.0


class WatchStream(Generic[Message]):
    """Watches `address` for as long as it runs: the policy from control, health from telemetry.

    `open_stream(channel)` starts the stream (called again after every loss); `on_message` takes each
    message; `on_lost(code)` is told when an established or failed stream ends. The watch opens its own
    channel when it starts and closes it when it stops.
    """

    def __init__(self, name: str, address: str,
                 open_stream: Callable[[TracedChannel], AsyncIterator[Message]],
                 on_message: Callable[[Message], None],
                 on_lost: Callable[[grpc.StatusCode], None] | None = None, silence_s: float | None = None):
        self.name = name
        # A stream with no message for this long is given up and opened again (None: only the channel's
        # keepalive ends it): the health watch's heartbeat makes silence mean a frozen or lost peer.
        self.silence_s = silence_s
        self.address = address
        self._open_stream = open_stream
        self._on_message = on_message
        self._on_lost = on_lost
        self._task: asyncio.Task[None] | None = None
        self.connected = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"watch-{self.name}")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def _run(self) -> None:
        backoff = INITIAL_BACKOFF_S
        channel = open_channel(self.address, WATCH_KEEPALIVE_MS)
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    async with asyncio.timeout(None) as silence:
                        async for message in self._open_stream(channel):
                            self.connected = True
                            backoff = INITIAL_BACKOFF_S
                            self._on_message(message)
                            if self.silence_s is not None:
                                silence.reschedule(loop.time() + self.silence_s)
                except grpc.aio.AioRpcError as exc:
                    if self._on_lost is not None:
                        self._on_lost(exc.code())
                except TimeoutError:
                    if self._on_lost is not None:
                        self._on_lost(grpc.StatusCode.DEADLINE_EXCEEDED)
                self.connected = False
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
        finally:
            await channel.close()
