"""Classify requests multiplexed on a few long-lived ClassifyStream calls, each answer matched to its request by id."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Callable, Sequence

import grpc

from routemesh.common.errors import status_code_of
from routemesh.common.tracing import traceparent
from routemesh.v1 import classifier_pb2, common_pb2

log = logging.getLogger(__name__)
# The first wait before a stream is opened again after one failed, doubled per failure up to the cap (grpc's
# own reconnect backoff, common.channels: 0.1 to 2 s); an answer resets it.
REOPEN_BACKOFF_S = 0.1
REOPEN_BACKOFF_MAX_S = 2.0


class ClassifyFailed(Exception):
    """A classify that got no features: the classifier's answer (`answered`: an error status), or no answer."""

    def __init__(self, code: grpc.StatusCode, details: str, answered: bool = False):
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details
        self.answered = answered


class Backoff:
    """When something that failed may be tried again: REOPEN_BACKOFF_S after the first failure since a success,
    doubling per failure up to REOPEN_BACKOFF_MAX_S. Times are the caller's clock (the event loop's)."""

    def __init__(self, initial_s: float = REOPEN_BACKOFF_S, max_s: float = REOPEN_BACKOFF_MAX_S):
        self.initial_s = initial_s
        self.max_s = max_s
        self._delay = initial_s
        self._until = 0.0

    def ready(self, now: float) -> bool:
        return now >= self._until

    def failed(self, now: float) -> None:
        self._until = now + self._delay
        self._delay = min(self._delay * 2, self.max_s)

    def succeeded(self) -> None:
        self._delay = self.initial_s
        self._until = 0.0


class _Stream:
    """One ClassifyStream call: what it has yet to send, and its unanswered requests by id."""

    __slots__ = ("call", "outgoing", "pending", "opened", "answered", "reader")

    def __init__(self, open_call: Callable[[AsyncIterator[classifier_pb2.ClassifyStreamRequest]], grpc.aio.Call],
                 opened: float):
        # grpc writes what the iterator yields from a task of its own: a write cancelled with its caller's task
        # would cancel the whole call, and grpc takes one write at a time. None half-closes the stream.
        self.outgoing: asyncio.Queue[classifier_pb2.ClassifyStreamRequest | None] = asyncio.Queue()
        self.pending: dict[int, asyncio.Future[classifier_pb2.ClassifyStreamResponse]] = {}
        self.opened = opened
        self.answered = False
        self.call = open_call(self._requests())
        self.reader: asyncio.Task | None = None

    async def _requests(self) -> AsyncIterator[classifier_pb2.ClassifyStreamRequest]:
        while (message := await self.outgoing.get()) is not None:
            yield message


class ClassifyStreams:
    """Classifies over at most `count` open ClassifyStream calls, round-robin, each opened on first need.

    The channel balances calls round-robin over the classifier's replicas, so one stream would pin one replica:
    a stream older than `max_age_s` takes no new request and is half-closed (the classifier answers what it
    holds, then ends it), and the next request opens a fresh one, on whichever replica the channel picks. With
    no request for `idle_s` every stream is closed, so the channel can go idle (an open call keeps its
    connection's keepalive pings going); one timer checks that, armed only while a stream is open.

    A broken stream fails its unanswered requests, and is not reopened for a backoff, while requests find no
    open stream: they fail at once (the caller asks otherwise). Create it inside the running loop.
    """

    def __init__(self, open_call: Callable[[AsyncIterator[classifier_pb2.ClassifyStreamRequest]], grpc.aio.Call],
                 count: int, max_age_s: float, idle_s: float):
        self._open_call = open_call
        self.count = count
        self.max_age_s = max_age_s
        self.idle_s = idle_s
        self.streams: list[_Stream] = []
        self._closing: set[_Stream] = set()  # half-closed, answering what they hold
        self._ids = itertools.count(1)
        self._turn = 0
        self._backoff = Backoff()
        self._loop = asyncio.get_running_loop()
        self._last_request = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None

    async def classify(self, messages: Sequence[common_pb2.Message],
                       timeout_s: float | None) -> classifier_pb2.ClassifyResponse:
        """The classifier's answer; ClassifyFailed with its status, or when no answer comes within `timeout_s`."""
        now = self._loop.time()
        self._last_request = now
        stream = self._stream(now)
        if stream is None:
            raise ClassifyFailed(grpc.StatusCode.UNAVAILABLE, "the last classify stream failed; reopened after a backoff")
        key = next(self._ids)
        answer = self._loop.create_future()
        stream.pending[key] = answer
        message = classifier_pb2.ClassifyStreamRequest(id=key, traceparent=traceparent())
        message.request.messages.extend(messages)  # one copy (a ClassifyRequest passed in would be copied again)
        stream.outgoing.put_nowait(message)
        expiry = None if timeout_s is None else self._loop.call_later(timeout_s, _expire, answer, timeout_s)
        try:
            reply = await answer
        finally:
            stream.pending.pop(key, None)
            if expiry is not None:
                expiry.cancel()
        if reply.HasField("error"):  # an RpcStatus reads as the google.rpc.Status it mirrors
            raise ClassifyFailed(status_code_of(reply.error), reply.error.message,  # type: ignore[arg-type]
                                 answered=True)
        return reply.response

    def _stream(self, now: float) -> _Stream | None:
        """The stream for the next request: round-robin over the young ones, opening one while fewer than `count`
        are open (and the backoff allows)."""
        while self.streams and now - self.streams[0].opened >= self.max_age_s:  # oldest first
            self._retire(self.streams[0])
        if len(self.streams) < self.count and self._backoff.ready(now):
            return self._open(now)
        if not self.streams:
            return None
        self._turn = (self._turn + 1) % len(self.streams)
        return self.streams[self._turn]

    def _open(self, now: float) -> _Stream:
        stream = _Stream(self._open_call, now)
        stream.reader = asyncio.create_task(self._read(stream))
        self.streams.append(stream)
        if self._idle_timer is None:
            self._idle_timer = self._loop.call_later(self.idle_s, self._check_idle)
        return stream

    def _retire(self, stream: _Stream) -> None:
        """No new request for `stream`; it ends once the classifier has answered what it was sent."""
        self.streams.remove(stream)
        self._closing.add(stream)
        stream.outgoing.put_nowait(None)

    def _check_idle(self) -> None:
        quiet_s = self._loop.time() - self._last_request
        if quiet_s < self.idle_s:
            self._idle_timer = self._loop.call_later(self.idle_s - quiet_s, self._check_idle)
            return
        self._idle_timer = None
        for stream in list(self.streams):
            self._retire(stream)

    async def _read(self, stream: _Stream) -> None:
        """Resolve each answer's request; when the stream ends, fail what it left unanswered."""
        code, details = grpc.StatusCode.UNAVAILABLE, "the classify stream ended before answering"
        try:
            async for message in stream.call:
                answer = stream.pending.get(message.id)
                if answer is not None and not answer.done():
                    answer.set_result(message)
                if not stream.answered:
                    stream.answered = True
                    self._backoff.succeeded()
        except grpc.aio.AioRpcError as exc:
            code, details = exc.code(), exc.details() or ""
            if code != grpc.StatusCode.UNIMPLEMENTED:
                self._backoff.failed(self._loop.time())
                log.debug("classify stream failed: %s %s", code.name, details)
        except asyncio.CancelledError:
            if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                raise
            code, details = grpc.StatusCode.CANCELLED, "the classify stream was closed"  # close() cancelled the call
        finally:
            if stream in self.streams:
                self.streams.remove(stream)
            self._closing.discard(stream)
            stream.outgoing.put_nowait(None)  # ends grpc's task writing the stream, if the call ended first
            for answer in stream.pending.values():
                if not answer.done():
                    answer.set_exception(ClassifyFailed(code, details))

    async def close(self) -> None:
        """Cancel every stream (their unanswered requests fail) and wait for their readers."""
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        streams = [*self.streams, *self._closing]
        for stream in streams:
            stream.call.cancel()
        await asyncio.gather(*(s.reader for s in streams if s.reader is not None), return_exceptions=True)


def _expire(answer: asyncio.Future, timeout_s: float) -> None:
    if not answer.done():
        answer.set_exception(ClassifyFailed(grpc.StatusCode.DEADLINE_EXCEEDED, f"no answer within {timeout_s:.3f} s"))
