"""Conversation affinity: the model a conversation started on, kept for its next requests."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Protocol

from redis.exceptions import RedisError

from routemesh.common.redis_client import create_client

log = logging.getLogger(__name__)


class ConversationAffinity(Protocol):
    async def get(self, conversation: str) -> str: ...
    async def set(self, conversation: str, model: str) -> None: ...
    async def close(self) -> None: ...


class InMemoryAffinity:
    """One router's memory: bounded LRU with a TTL."""

    def __init__(self, ttl_s: float = 3600, capacity: int = 100_000):
        self.ttl_s = ttl_s
        self.capacity = capacity
        self._items: OrderedDict[str, tuple[str, float]] = OrderedDict()

    async def get(self, conversation: str) -> str:
        item = self._items.get(conversation)
        if item is None or item[1] < time.monotonic():
            return ""
        self._items.move_to_end(conversation)
        return item[0]

    async def set(self, conversation: str, model: str) -> None:
        self._items[conversation] = (model, time.monotonic() + self.ttl_s)
        self._items.move_to_end(conversation)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    async def close(self) -> None:
        self._items.clear()


class RedisAffinity:
    """Shared by every router replica; on Redis trouble a conversation just loses its affinity."""

    def __init__(self, url: str, prefix: str = "routemesh:", ttl_s: int = 3600):
        self._redis = create_client(url)
        self._prefix = f"{prefix}sticky:"
        self.ttl_s = ttl_s

    async def get(self, conversation: str) -> str:
        try:
            return await self._redis.get(self._prefix + conversation) or ""
        except RedisError as exc:
            log.debug("affinity lookup failed: %s", exc)
            return ""

    async def set(self, conversation: str, model: str) -> None:
        try:
            await self._redis.set(self._prefix + conversation, model, ex=self.ttl_s)
        except RedisError as exc:
            log.debug("affinity store failed: %s", exc)

    async def close(self) -> None:
        await self._redis.aclose()
