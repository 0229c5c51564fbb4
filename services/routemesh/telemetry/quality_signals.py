"""Quality signals per (model, task type): callers' feedback and automatic signals, shared by telemetry replicas.

Routers read them in the pushed snapshot and correct a model's quality for a task with them (the static table's
or the learned predictor's value as the prior): a model that answers a task badly loses its traffic for it.
Counts accumulate without decay; a policy's `learning.prior_weight` decides how fast they outweigh the prior.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from typing import Protocol

from redis import asyncio as aioredis

log = logging.getLogger(__name__)
# (score sum, count) per task type, per model.
Signals = dict[str, dict[str, tuple[float, int]]]
CACHE_S = 1.0


class QualitySignalStore(Protocol):
    async def add(self, model: str, task: str, score: float) -> None: ...

    async def signals(self, models: Iterable[str]) -> Signals: ...

    async def close(self) -> None: ...


class InMemoryQualitySignals:
    """This process's signals only (telemetry without Redis)."""

    def __init__(self) -> None:
        self._sums: dict[str, dict[str, list[float]]] = defaultdict(dict)

    async def add(self, model: str, task: str, score: float) -> None:
        entry = self._sums[model].setdefault(task, [0.0, 0])
        entry[0] += score
        entry[1] += 1

    async def signals(self, models: Iterable[str]) -> Signals:
        return {m: {task: (s, int(n)) for task, (s, n) in self._sums[m].items()} for m in models if m in self._sums}

    async def close(self) -> None:
        return None


class RedisQualitySignals:
    """Signals in Redis, one hash per model (`{prefix}qsig:<model>`: `<task>:sum`, `<task>:n`), read at most
    once per CACHE_S; a Redis that does not answer leaves the last signals in place (they are a correction)."""

    def __init__(self, client: aioredis.Redis, prefix: str):
        self._redis = client
        self._prefix = prefix
        self._cached: Signals = {}
        self._cached_at = 0.0
        self._cached_models: tuple[str, ...] = ()

    async def add(self, model: str, task: str, score: float) -> None:
        key = f"{self._prefix}qsig:{model}"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hincrbyfloat(key, f"{task}:sum", score)
            pipe.hincrby(key, f"{task}:n", 1)
            await pipe.execute()
        self._cached_at = 0.0

    async def signals(self, models: Iterable[str]) -> Signals:
        names = tuple(models)
        now = time.monotonic()
        if names == self._cached_models and now - self._cached_at < CACHE_S:
            return self._cached
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.hgetall(f"{self._prefix}qsig:{name}")
                hashes = await pipe.execute()
        except Exception as exc:  # noqa: BLE001 - the last signals stay; the health snapshot must not fail
            log.debug("quality signals unavailable: %s", exc)
            return self._cached
        out: Signals = {}
        for name, fields in zip(names, hashes, strict=True):
            tasks: dict[str, tuple[float, int]] = {}
            for raw, value in fields.items():
                field = raw.decode() if isinstance(raw, bytes) else raw
                task, _, kind = field.rpartition(":")
                total, count = tasks.get(task, (0.0, 0))
                tasks[task] = (float(value), count) if kind == "sum" else (total, int(value))
            if tasks:
                out[name] = tasks
        self._cached, self._cached_at, self._cached_models = out, now, names
        return out

    async def close(self) -> None:
        await self._redis.aclose()
