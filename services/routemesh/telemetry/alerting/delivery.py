"""Webhook delivery off the evaluation path: a bounded queue per webhook, retries with exponential backoff."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from routemesh.common.policy import PolicyError, expand_env
from routemesh.common.policy_alerts import Webhook

log = logging.getLogger(__name__)

QUEUE_SIZE = 1000
BASE_DELAY_S = 0.5
MAX_DELAY_S = 30.0
# A stop waits this long for queued notifications before it gives up on them.
DRAIN_S = 2.0
DELIVERED, RETRIED, FAILED, DROPPED = "delivered", "retried", "failed", "dropped"
OUTCOMES = (DELIVERED, RETRIED, FAILED, DROPPED)


@dataclass(frozen=True)
class Target:
    """A webhook ready to send to: its ${VAR}s expanded from this process's environment (never logged)."""

    name: str
    url: str
    headers: tuple[tuple[str, str], ...]
    format: str
    timeout_s: float
    max_attempts: int


def resolve(hook: Webhook, environ: Mapping[str, str] | None = None) -> Target:
    """The Target of a policy webhook; ValueError naming the problem (a variable, never a value)."""
    try:
        url = expand_env(hook.url, environ)
        headers = tuple((name, expand_env(value, environ)) for name, value in hook.headers.items())
    except PolicyError as exc:
        raise ValueError("; ".join(message for _, message in exc.violations)) from None
    if not url.startswith(("http://", "https://")):
        raise ValueError("its URL does not expand to an http:// or https:// URL")
    if any(c in value for _, value in headers for c in "\r\n\0"):
        raise ValueError("a header value expands to text with a line break")
    return Target(hook.name, url, headers, hook.format, hook.timeout_s, hook.max_attempts)


def backoff_s(attempt: int, base_s: float = BASE_DELAY_S, cap_s: float = MAX_DELAY_S) -> float:
    """The wait after failed attempt number `attempt` (1-based): base, doubling, capped."""
    return min(cap_s, base_s * 2 ** (attempt - 1))


def retryable(status: int) -> bool:
    """Timeouts, rate limits and server errors are tried again; other refusals would fail the same way."""
    return status in (408, 425, 429) or status >= 500


class _Refused(Exception):
    def __init__(self, status: int, retry_after_s: float | None):
        self.status = status
        self.retry_after_s = retry_after_s


class WebhookSender:
    """Sends each notification to its webhook in order, one worker per webhook, never blocking the caller.

    submit() only enqueues: a full queue drops the notification and counts it. A worker retries a failed
    delivery up to the webhook's max_attempts, waiting backoff_s between tries (or the receiver's Retry-After,
    capped), so a down receiver delays only its own notifications.
    """

    def __init__(self, *, queue_size: int = QUEUE_SIZE, base_delay_s: float = BASE_DELAY_S,
                 max_delay_s: float = MAX_DELAY_S, environ: Mapping[str, str] | None = None):
        self.queue_size = queue_size
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.environ = environ
        self.counts: Counter[str] = Counter({outcome: 0 for outcome in OUTCOMES})
        self.targets: dict[str, Target] = {}
        self.problems: dict[str, str] = {}
        self._configured: tuple[Webhook, ...] | None = None
        self._queues: dict[str, asyncio.Queue[tuple[Target, bytes, str]]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None

    def configure(self, hooks: Sequence[Webhook]) -> None:
        """Take the policy's webhooks (again only when they changed); a webhook that cannot be used is logged."""
        hooks = tuple(hooks)
        if hooks == self._configured:
            return
        self._configured = hooks
        self.targets, self.problems = {}, {}
        environ = os.environ if self.environ is None else self.environ
        for hook in hooks:
            try:
                self.targets[hook.name] = resolve(hook, environ)
            except ValueError as exc:
                self.problems[hook.name] = str(exc)
                log.error("alert webhook %s cannot be used, its notifications are dropped: %s", hook.name, exc)

    def submit(self, webhook: str, body: dict[str, Any], what: str) -> bool:
        """Queue `body` for `webhook` (`what` names it in logs); False when dropped."""
        target = self.targets.get(webhook)
        if target is None:
            self.counts[DROPPED] += 1
            return False
        queue = self._queues.get(webhook)
        if queue is None:
            queue = self._queues[webhook] = asyncio.Queue(self.queue_size)
            self._workers[webhook] = asyncio.create_task(self._work(queue), name=f"alert-webhook-{webhook}")
        try:
            queue.put_nowait((target, json.dumps(body).encode(), what))
        except asyncio.QueueFull:
            self.counts[DROPPED] += 1
            log.warning("alert webhook %s: %d notifications queued, %s dropped", webhook, queue.qsize(), what)
            return False
        return True

    def backlog(self) -> int:
        return sum(queue.qsize() for queue in self._queues.values())

    async def stop(self, drain_s: float = DRAIN_S) -> None:
        """Give queued notifications up to `drain_s`, then stop the workers and close the HTTP session."""
        deadline = time.monotonic() + drain_s
        while self.backlog() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for task in self._workers.values():
            task.cancel()
        for task in self._workers.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers.clear()
        self._queues.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _work(self, queue: asyncio.Queue[tuple[Target, bytes, str]]) -> None:
        while True:
            target, payload, what = await queue.get()
            try:
                await self._deliver(target, payload, what)
            except Exception:  # a worker must outlive any one delivery
                self.counts[FAILED] += 1
                log.exception("alert webhook %s: delivery of %s failed", target.name, what)
            finally:
                queue.task_done()

    async def _deliver(self, target: Target, payload: bytes, what: str) -> None:
        reason = ""
        for attempt in range(1, target.max_attempts + 1):
            wait_s = backoff_s(attempt, self.base_delay_s, self.max_delay_s)
            try:
                await self._post(target, payload)
                self.counts[DELIVERED] += 1
                if attempt > 1:
                    log.info("alert webhook %s: %s delivered at attempt %d", target.name, what, attempt)
                return
            except _Refused as exc:
                reason = f"HTTP {exc.status}"
                if not retryable(exc.status):
                    break
                if exc.retry_after_s is not None:
                    wait_s = min(self.max_delay_s, max(wait_s, exc.retry_after_s))
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                reason = type(exc).__name__  # the message may carry the URL, which may be a secret
            if attempt < target.max_attempts:
                self.counts[RETRIED] += 1
                await asyncio.sleep(wait_s)
        self.counts[FAILED] += 1
        log.warning("alert webhook %s: %s not delivered after %d attempt(s) (last: %s)", target.name, what,
                    attempt, reason)

    async def _post(self, target: Target, payload: bytes) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(headers={"User-Agent": "routemesh-alerts"})
        headers = {"Content-Type": "application/json", **dict(target.headers)}
        timeout = aiohttp.ClientTimeout(total=target.timeout_s)
        async with self._session.post(target.url, data=payload, headers=headers, timeout=timeout,
                                      allow_redirects=False) as response:
            if 200 <= response.status < 300:
                return
            raise _Refused(response.status, _retry_after(response.headers.get("Retry-After")))


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
