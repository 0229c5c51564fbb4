"""The executor's HTTP client for provider calls: one pooled aiohttp session; the only executor module using aiohttp.

Adapters see HttpClient, HttpResponse and the HttpError family, never aiohttp's own types, so a transport
failure has exactly one exception base to catch. Read timing (first token, between tokens, total) is not
aiohttp's job: StreamReader enforces it per chunk, so aiohttp only bounds connecting.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import urllib.request
from collections.abc import Mapping
from typing import Any

import aiohttp
from yarl import URL

__all__ = ["HttpClient", "HttpConnectError", "HttpError", "HttpInvalidURL", "HttpResponse"]

_SCHEMES = ("http", "https")
# Idle connections to a provider stay open this long for the next request.
_KEEPALIVE_S = 60.0
_DNS_CACHE_S = 30
_MAX_HEADER_BYTES = 16 * 1024


class HttpError(Exception):
    """A transport failure: no response, or a response body that broke off. The message names the cause.

    The message may contain aiohttp's text (hosts, ports, OS errors); callers scrub it before showing it.
    """


class HttpConnectError(HttpError):
    """No connection: refused, unreachable, DNS, TLS handshake, or none made or free within the connect timeout."""


class HttpInvalidURL(HttpError):
    """The URL cannot be requested: malformed, no host, or a scheme other than http and https."""


def _failure(exc: BaseException) -> HttpError:
    """The HttpError for an aiohttp or socket failure; the caller raises it `from exc`."""
    name = type(exc).__name__
    if isinstance(exc, (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError)):
        return HttpInvalidURL(name)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return HttpConnectError(f"{name}: {exc}")
    if isinstance(exc, asyncio.TimeoutError):
        # Only connecting (pool wait included) is timed by aiohttp here: total=None and no read timeout.
        return HttpConnectError(f"{name}: no connection within the connect timeout")
    text = str(exc)
    return HttpError(f"{name}: {text}" if text else name)


def _ssl_context() -> ssl.SSLContext:
    """The CA certificates httpx trusted: SSL_CERT_FILE or SSL_CERT_DIR when set, else certifi's bundle."""
    if os.environ.get("SSL_CERT_FILE"):
        return ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    if os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context(capath=os.environ["SSL_CERT_DIR"])
    try:
        import certifi
    except ImportError:  # pragma: no cover - certifi comes with httpx, a dependency of the project
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=certifi.where())


class _Proxies:
    """HTTP(S)_PROXY and NO_PROXY, read once (as httpx did by default); the answer is cached per host."""

    def __init__(self) -> None:
        proxies = urllib.request.getproxies()
        self._by_scheme = {s: URL(proxies[s]) for s in _SCHEMES if proxies.get(s)}
        self._cache: dict[tuple[str, str], URL | None] = {}

    def __call__(self, url: URL) -> URL | None:
        if not self._by_scheme:
            return None
        key = (url.scheme, url.host or "")
        if key not in self._cache:
            proxy = self._by_scheme.get(url.scheme)
            if proxy is not None and urllib.request.proxy_bypass(url.raw_host or ""):
                proxy = None
            self._cache[key] = proxy
        return self._cache[key]


class HttpResponse:
    """A response whose headers arrived; its body is read with aiter_bytes() or aread(), then aclose()."""

    __slots__ = ("_raw", "headers", "status_code")

    def __init__(self, raw: aiohttp.ClientResponse):
        self._raw = raw
        self.status_code: int = raw.status
        # A case-insensitive multidict: headers.get("retry-after") finds "Retry-After".
        self.headers: Mapping[str, str] = raw.headers

    def aiter_bytes(self) -> _Chunks:
        """The body in the pieces it arrives in; a broken body raises HttpError."""
        return _Chunks(self._raw.content)

    async def aread(self) -> bytes:
        """The whole body; a broken body raises HttpError."""
        try:
            return await self._raw.read()
        except (aiohttp.ClientError, OSError) as exc:
            raise _failure(exc) from exc

    async def aclose(self) -> None:
        """Give the connection back to the pool when the body was read to its end, else close it.

        Synchronous underneath, so that a cancelled caller still closes the upstream connection at once.
        """
        raw = self._raw
        if raw.content.is_eof() and raw.content.exception() is None:
            raw.release()
        else:
            raw.close()


class _Chunks:
    """An async iterator over a body's chunks, with aiohttp's failures as HttpError."""

    __slots__ = ("_content",)

    def __init__(self, content: aiohttp.StreamReader):
        self._content = content

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> bytes:
        try:
            chunk = await self._content.readany()
        except (aiohttp.ClientError, OSError) as exc:
            raise _failure(exc) from exc
        if not chunk:
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        """Nothing to release here: the response's aclose() decides the connection's fate."""


class HttpClient:
    """A pool of keep-alive connections to providers, shared by every call; create it in the running loop.

    Like the httpx client it replaces: no redirects followed, HTTP(S)_PROXY and NO_PROXY honoured, certifi's
    CA bundle (or SSL_CERT_FILE / SSL_CERT_DIR), cookies kept in one jar.
    """

    def __init__(self, *, max_connections: int = 1000, keepalive_s: float = _KEEPALIVE_S,
                 dns_cache_s: int = _DNS_CACHE_S):
        connector = aiohttp.TCPConnector(limit=max_connections, keepalive_timeout=keepalive_s,
                                         ttl_dns_cache=dns_cache_s, ssl=_ssl_context())
        # Header limits as roomy as httpx's (h11 allows 16 KiB of headers; aiohttp's default is 8 KiB a line).
        self._session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None),
                                              max_line_size=_MAX_HEADER_BYTES, max_field_size=_MAX_HEADER_BYTES)
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}
        self._proxy = _Proxies()

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._session.close()

    def _timeout(self, connect_s: float) -> aiohttp.ClientTimeout:
        timeout = self._timeouts.get(connect_s)
        if timeout is None:
            # connect covers waiting for a free pooled connection too (httpx's pool timeout).
            timeout = self._timeouts[connect_s] = aiohttp.ClientTimeout(total=None, connect=connect_s,
                                                                        sock_connect=connect_s)
        return timeout

    async def post_json(self, url: str, body: Any, *, headers: Mapping[str, str] | None = None,
                        params: Mapping[str, str] | None = None, connect_timeout_s: float = 10.0) -> HttpResponse:
        """POST `body` as JSON and return once the response headers arrived (redirects are not followed).

        Raises HttpInvalidURL for a URL that cannot be requested, HttpConnectError when no connection was
        made within connect_timeout_s, HttpError for any other failure before the headers, ValueError for a
        body JSON cannot encode (NaN, for one).
        """
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
        try:
            target = URL(url)
            if params:
                target = target.update_query(params)
        except (ValueError, TypeError) as exc:
            raise HttpInvalidURL(type(exc).__name__) from None
        if target.scheme not in _SCHEMES or not target.host:
            raise HttpInvalidURL(f"unsupported URL scheme {target.scheme!r}" if target.host else "no host in URL")
        request_headers = {"Content-Type": "application/json", **(headers or {})}
        try:
            raw = await self._session.request("POST", target, data=data, headers=request_headers,
                                              timeout=self._timeout(connect_timeout_s), allow_redirects=False,
                                              proxy=self._proxy(target))
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise _failure(exc) from exc
        return HttpResponse(raw)
