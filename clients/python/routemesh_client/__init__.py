"""Typed Python client for the routemesh RouterService (sync and async)."""

from routemesh.client.client import (
    DEFAULT_ADDRESS,
    AsyncRouterClient,
    ChatOptions,
    ChatResult,
    RouterClient,
    RoutemeshError,
    to_messages,
)

__all__ = [
    "DEFAULT_ADDRESS",
    "AsyncRouterClient",
    "ChatOptions",
    "ChatResult",
    "RouterClient",
    "RoutemeshError",
    "to_messages",
]
