"""Which adapter speaks each provider API, and the OpenAI-compatible family's wire quirks as data."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from typing import Any, Protocol

from routemesh.common.outcomes import AttemptOutcome
from routemesh.executor import anthropic_adapter, gemini_adapter, openai_adapter
from routemesh.executor.http import HttpClient
from routemesh.executor.openai_adapter import OpenAIQuirks
from routemesh.executor.provider_base import ProviderError, ProviderTarget, StreamEvent


class StreamChat(Protocol):
    """The signature every adapter's stream_chat has."""

    def __call__(self, client: HttpClient, target: ProviderTarget, messages: list[dict[str, Any]], *,
                 max_tokens: int, temperature: float | None, headers: dict[str, str] | None = None,
                 total_timeout_s: float | None = None, tools: list[dict[str, Any]] | None = None,
                 tool_choice: str = "", response_format: str = "") -> AsyncIterator[StreamEvent]: ...


# Keyed by the policy's provider `api`; every entry speaks the OpenAI wire format with these differences.
QUIRKS: dict[str, OpenAIQuirks] = {
    "openai": OpenAIQuirks(),
    # base_url is the resource endpoint (https://NAME.openai.azure.com), upstream_model the deployment name.
    # api_version "v1" selects Azure's unversioned v1 API; 2024-10-21 is the oldest GA version that streams
    # usage (stream_options.include_usage).
    "azure_openai": OpenAIQuirks(key_header="api-key", key_prefix="", deployment_url=True,
                                 api_version_param="api-version", default_api_version="2024-10-21"),
}

ADAPTERS: dict[str, StreamChat] = {
    "openai": openai_adapter.stream_chat,
    "anthropic": anthropic_adapter.stream_chat,
    "gemini": gemini_adapter.stream_chat,
    **{api: functools.partial(openai_adapter.stream_chat, quirks=quirks)
       for api, quirks in QUIRKS.items() if api != "openai"},
}


def stream_for(api: str) -> StreamChat:
    """The stream_chat of a provider API; an unknown API fails each call with a config_error."""
    return ADAPTERS.get(api) or functools.partial(_unknown_api, api)


async def _unknown_api(api: str, client: HttpClient, target: ProviderTarget, messages: list[dict[str, Any]],
                       **_: Any) -> AsyncIterator[StreamEvent]:
    raise ProviderError(AttemptOutcome.CONFIG_ERROR,
                        f"{target.provider}/{target.upstream_model}: unknown provider api {api!r}")
    yield  # makes this an async generator, like every adapter
