"""Relay with coalescing: whatever accumulated while the consumer was busy goes out as one batch."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TypeVar

from routemesh.common.tasks import cancel_and_wait

T = TypeVar("T")
_END = object()


async def batches(source: AsyncIterator[T], max_batch: int = 512) -> AsyncIterator[list[T]]:
    """Yield lists of items from `source`: one item when paced, many when the consumer lags.

    A pump task reads `source` into a queue; each batch drains the queue. Cancelling the consumer
    cancels the pump, which closes `source` (and the HTTP or gRPC stream behind it).
    """
    queue: asyncio.Queue[object] = asyncio.Queue()
    failure: list[BaseException] = []

    async def pump() -> None:
        try:
            async for item in source:
                queue.put_nowait(item)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            failure.append(exc)
        finally:
            queue.put_nowait(_END)

    task = asyncio.create_task(pump())
    try:
        while True:
            item = await queue.get()
            if item is _END:
                break
            batch: list[T] = [item]  # type: ignore[list-item]
            ended = False
            while not queue.empty() and len(batch) < max_batch:
                nxt = queue.get_nowait()
                if nxt is _END:
                    ended = True
                    break
                batch.append(nxt)  # type: ignore[arg-type]
            yield batch
            if ended:
                break
        if failure:
            raise failure[0]
    finally:
        await cancel_and_wait(task)
