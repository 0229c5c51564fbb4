"""The benchmark workload: one streaming chat, sent to an OpenAI-compatible URL (the sim directly, routemesh's
gateway, or a proxy to compare; aiohttp, as the executor uses) or through routemesh's router (gRPC)."""

from __future__ import annotations

import asyncio
import ssl as ssl_module
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import orjson

from routemesh.client import AsyncRouterClient, RoutemeshError
from routemesh.v1 import common_pb2

# The router is pinned to one policy model so the routing choice is constant; the direct arm asks the
# sim for that model's upstream name.
PINNED_MODEL = "fast-cheap"
UPSTREAM_MODEL = "sim-fast"
MAX_TOKENS = 64

# min_tokens = max_tokens = MAX_TOKENS makes every answer exactly 64 tokens (the sim finishes its sentence,
# then max_tokens cuts it), so both arms relay the same number of tokens per request.
ZERO_PROFILE = {"min_tokens": MAX_TOKENS, "max_tokens": MAX_TOKENS, "jitter": 0.0}
REALISTIC_PROFILE = {"ttft_ms": 200.0, "tokens_per_s": 50.0, "min_tokens": MAX_TOKENS,
                     "max_tokens": MAX_TOKENS, "jitter": 0.0}
PROFILES = {"zero": ZERO_PROFILE, "realistic": REALISTIC_PROFILE}
TIME_SCALES = {"zero": 0.0, "realistic": 1.0}

_OK_STATUSES = (common_pb2.FINISH_STATUS_COMPLETE, common_pb2.FINISH_STATUS_LENGTH)


def prompt(index: int) -> str:
    """The i-th request's prompt; both arms send the same sequence, so the sim answers them identically."""
    return f"Request {index}: give a short overview of caching strategies for a web service."


@dataclass
class Sample:
    """One request as the caller saw it; times in milliseconds from the moment the request was sent."""

    ok: bool
    ttft_ms: float = 0.0
    total_ms: float = 0.0
    gaps_ms: list[float] = field(default_factory=list)  # between consecutive content-bearing chunks
    chunks: int = 0
    tokens: int = 0
    error: str = ""
    last_at: float = field(default=0.0, repr=False)

    def arrived(self, start: float) -> None:
        """A content-bearing chunk arrived now; `start` is when the request was sent (perf_counter)."""
        now = time.perf_counter()
        if self.chunks:
            self.gaps_ms.append((now - self.last_at) * 1000)
        else:
            self.ttft_ms = (now - start) * 1000
        self.last_at = now
        self.chunks += 1


class OpenAIArm:
    """Streams chat completions from an OpenAI-compatible URL with the executor's HTTP client (aiohttp).

    The same body for every such arm: the sim directly, routemesh's gateway, or a proxy of the user's
    (`--compare-url`). Tokens are counted from the final usage chunk when the server sends one (a gateway
    coalesces tokens into chunks), else one per content-bearing chunk (the sim sends one token per chunk).
    """

    def __init__(self, name: str, base_url: str, model: str, timeout_s: float, *, api_key: str = "",
                 tls_ca: str | None = None):
        self.name = name
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._model = model
        self._timeout_s = timeout_s
        self._headers = {"Accept": "text/event-stream"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._tls_ca = tls_ca
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:  # created inside the running loop
            ssl: ssl_module.SSLContext | bool = True
            if self._tls_ca:
                ssl = ssl_module.create_default_context(cafile=self._tls_ca)
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=1000, keepalive_timeout=60, ssl=ssl),
                timeout=aiohttp.ClientTimeout(total=self._timeout_s))
        return self._session

    async def one(self, index: int) -> Sample:
        body = {"model": self._model, "messages": [{"role": "user", "content": prompt(index)}],
                "max_tokens": MAX_TOKENS, "stream": True, "stream_options": {"include_usage": True}}
        start = time.perf_counter()
        sample = Sample(ok=False)
        usage_tokens: int | None = None
        done_at = 0.0
        try:
            async with self._client().post(self._url, json=body, headers=self._headers) as response:
                if response.status != 200:
                    text = (await response.read())[:120].decode(errors="replace")
                    sample.error = f"HTTP {response.status}: {text}"
                    return sample
                # Read to the end of the body, past [DONE]: a response left unfinished costs its connection,
                # and every arm would pay a reconnect per request for the servers that end the body late.
                async for raw in response.content:
                    line = raw.decode().rstrip("\r\n")
                    if not line.startswith("data:") or done_at:
                        continue
                    data = line[5:].lstrip()
                    if data == "[DONE]":
                        done_at = time.perf_counter()
                        continue
                    event = orjson.loads(data)
                    usage = event.get("usage")
                    if usage and usage.get("completion_tokens") is not None:
                        usage_tokens = int(usage["completion_tokens"])
                    choices = event.get("choices") or ()
                    text = choices[0].get("delta", {}).get("content") if choices else None
                    if not text:
                        continue
                    sample.arrived(start)
        except (aiohttp.ClientError, ValueError) as exc:
            sample.error = f"{type(exc).__name__}: {exc}"[:200]
            return sample
        sample.total_ms = ((done_at or time.perf_counter()) - start) * 1000
        sample.tokens = usage_tokens if usage_tokens is not None else sample.chunks
        sample.ok = sample.chunks > 0
        if not sample.ok:
            sample.error = "no tokens"
        return sample

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def direct_arm(sim_url: str, timeout_s: float) -> OpenAIArm:
    """The baseline: the sim itself, asked for the pinned model's upstream name."""
    return OpenAIArm("direct", sim_url, UPSTREAM_MODEL, timeout_s)


def gateway_arm(gateway_url: str, timeout_s: float, tls_ca: str | None = None, api_key: str = "") -> OpenAIArm:
    """routemesh's OpenAI-compatible gateway, the pinned model: the HTTP hop in front of the gRPC mesh."""
    return OpenAIArm("gateway", gateway_url, PINNED_MODEL, timeout_s, tls_ca=tls_ca, api_key=api_key)


class ThroughArm:
    """Streams RouterService.Chat with the model pinned, through the whole mesh (or the floor's router)."""

    def __init__(self, router_address: str, timeout_s: float, tls_ca: str | None = None, api_key: str = "",
                 name: str = "through"):
        self.name = name
        self._client = AsyncRouterClient(router_address, timeout=timeout_s, tls_ca=tls_ca, api_key=api_key or None)

    async def one(self, index: int) -> Sample:
        start = time.perf_counter()
        sample = Sample(ok=False)
        final = None
        try:
            async for event in self._client.chat(prompt(index), model=PINNED_MODEL, max_tokens=MAX_TOKENS):
                kind = event.WhichOneof("event")
                if kind == "delta":
                    if not event.delta.text:
                        continue
                    sample.arrived(start)
                elif kind == "final":
                    final = event.final
        except RoutemeshError as exc:
            sample.error = str(exc)[:200]
            return sample
        sample.total_ms = (time.perf_counter() - start) * 1000
        if final is None or final.status not in _OK_STATUSES:
            sample.error = final.error[:200] if final is not None else "no final event"
            return sample
        # Deltas carry coalesced text, so the token count comes from the final usage.
        sample.tokens = int(final.usage.output_tokens)
        sample.ok = sample.chunks > 0
        return sample

    async def aclose(self) -> None:
        await self._client.close()


@dataclass
class PhaseRun:
    """Every sample of one measured phase and its wall time."""

    samples: list[Sample]
    wall_s: float


async def run_phase(arm: OpenAIArm | ThroughArm, requests: int, concurrency: int, timeout_s: float,
                    on_done: Callable[[int], None] | None = None, first_index: int = 0,
                    stagger_s: float = 0.0) -> PhaseRun:
    """Send `requests` requests with `concurrency` in flight; each one is cut at `timeout_s`, so this ends.

    With `stagger_s`, stream i sends its first request i/concurrency of `stagger_s` after the start.
    """
    samples: list[Sample] = []
    next_index = 0
    streams = min(concurrency, requests)

    async def worker(slot: int) -> None:
        nonlocal next_index
        if stagger_s:
            await asyncio.sleep(stagger_s * slot / streams)
        while next_index < requests:
            index = next_index
            next_index += 1
            try:
                sample = await asyncio.wait_for(arm.one(first_index + index), timeout_s)
            except TimeoutError:
                sample = Sample(ok=False, error=f"no answer in {timeout_s:g} s")
            samples.append(sample)
            if on_done is not None:
                on_done(len(samples))

    start = time.perf_counter()
    await asyncio.gather(*(worker(slot) for slot in range(streams)))
    return PhaseRun(samples, time.perf_counter() - start)
