"""POST /v1/chat/completions: one RouterService.Chat call answered as a completion or as SSE chunks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
from aiohttp import web
from google.protobuf import json_format
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from routemesh.common import semconv
from routemesh.common.tracing import set_attributes
from routemesh.gateway import openai_api
from routemesh.gateway.errors import http_error
from routemesh.gateway.openai_api import FINISH_REASONS, GatewayError, ParsedChat, ToolCallsSoFar
from routemesh.v1 import common_pb2, router_pb2, router_pb2_grpc

if TYPE_CHECKING:
    from routemesh.router.http_api import LocalRouter

log = logging.getLogger(__name__)
_NO_DELTA = common_pb2.Delta()


@dataclass
class _Answer:
    """What the router sent so far."""

    decision: router_pb2.Decision = field(default_factory=router_pb2.Decision)
    final: router_pb2.Final | None = None
    texts: list[str] = field(default_factory=list)
    tool_calls: ToolCallsSoFar = field(default_factory=ToolCallsSoFar)
    # The delta that ended the opening (streams send it with the role).
    first: common_pb2.Delta | None = None
    # A stream's chunk frame, rendered when the decision arrives.
    chunks: openai_api.ChunkStream | None = None

    def add(self, delta: common_pb2.Delta) -> None:
        self.texts.append(delta.text)
        self.tool_calls.add(delta.tool_calls)


def credentials(request: web.Request) -> list[tuple[str, str]]:
    """The caller's Authorization header, passed on to the router (which checks API keys when required)."""
    value = request.headers.get("Authorization", "")
    return [("authorization", value)] if value else []


def routemesh_headers(decision: router_pb2.Decision) -> dict[str, str]:
    return {"x-routemesh-decision-id": decision.decision_id, "x-routemesh-model": decision.model,
            "x-routemesh-trace-id": decision.trace_id, "x-routemesh-route": decision.route}


def _json_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type="application/json", headers=headers)


def error_response(error: GatewayError, headers: dict[str, str] | None = None) -> web.Response:
    response = _json_response(error.status, error.body(), {**(headers or {}), **error.headers})
    if error.close:
        response.force_close()
    return response


class _EventStream(web.StreamResponse):
    """An SSE response whose headers go out with its first event, in one write (as web.Response's do).

    Streams write their first event right after prepare(), so nothing waits for the headers; one write
    fewer per request, and the caller reads the status and the first text in one segment. aiohttp calls
    this `_send_headers_immediately` (a StreamResponse sends them at once, a Response with its body);
    tests/unit/test_gateway_stream.py checks that the attribute still exists.
    """

    _send_headers_immediately = False


async def _read_json(request: web.Request, timeout_s: float) -> Any:
    """The body, parsed and checked (openai_api.load_json); the whole of it must arrive within `timeout_s`.

    aiohttp waits for a body as long as bytes keep coming, so a client sending one byte a second would hold
    a handler (and up to the body cap of memory) for as long as it likes.
    """
    try:
        # asyncio.timeout, not wait_for: no task per request.
        async with asyncio.timeout(timeout_s):
            raw = await request.read()
    except TimeoutError:
        raise GatewayError(408, f"the request body did not arrive within {timeout_s:g} s", code="request_timeout",
                           close=True) from None
    except web.HTTPRequestEntityTooLarge as exc:
        raise GatewayError(413, f"the request body is too large: {exc.text}", code="request_too_large",
                           close=True) from None
    return openai_api.load_json(raw)


class ChatHandler:
    """Relays one chat per HTTP request; holds the router stub and the per-call deadline."""

    def __init__(self, stub: router_pb2_grpc.RouterServiceStub | LocalRouter, timeout_s: float,
                 body_timeout_s: float = 30.0):
        self.stub = stub
        self.timeout_s = timeout_s
        self.body_timeout_s = body_timeout_s

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        try:
            parsed = openai_api.parse_chat(await _read_json(request, self.body_timeout_s))
        except GatewayError as error:
            return error_response(error)
        # The channel starts the CLIENT span and sends the trace context (common/channels.py).
        call = self.stub.Chat(parsed.request, timeout=self.timeout_s, metadata=credentials(request))
        span = trace.get_current_span()
        if span.is_recording():
            # Once the request is on its way: grpc sends it from a task that runs at this handler's first
            # await, so whatever runs before that await delays the answer's first token.
            asyncio.get_running_loop().call_soon(set_attributes, span, {
                semconv.GEN_AI_REQUEST_MODEL: parsed.request.model,
                semconv.GEN_AI_REQUEST_MAX_TOKENS: parsed.request.max_tokens or None,
                "routemesh.gateway.stream": parsed.stream})
        try:
            if parsed.stream:
                return await self._stream(request, parsed, call)
            return await self._complete(parsed, call)
        finally:
            if not call.done():
                # The caller went away or the gateway is stopping: the router stops the upstream call too.
                call.cancel()

    async def explain(self, request: web.Request) -> web.Response:
        """POST /v1/routemesh/explain: the decision a chat-completions body would get, without running it."""
        try:
            parsed = openai_api.parse_chat(await _read_json(request, self.body_timeout_s))
        except GatewayError as error:
            return error_response(error)
        chat = parsed.request
        explain = router_pb2.ExplainRequest(messages=chat.messages, model=chat.model, max_tokens=chat.max_tokens,
                                            metadata=chat.metadata, routing=chat.routing, tools=chat.tools,
                                            response_format=chat.response_format)
        try:
            reply = await self.stub.Explain(explain, timeout=min(self.timeout_s, 30.0), metadata=credentials(request))
        except grpc.aio.AioRpcError as exc:
            return error_response(http_error(exc, parsed.param_of))
        self._record_decision(reply.decision)
        body = {"object": "routemesh.decision",
                "decision": json_format.MessageToDict(reply.decision, preserving_proto_field_name=True)}
        return _json_response(200, body, routemesh_headers(reply.decision))

    async def feedback(self, request: web.Request) -> web.Response:
        """POST /v1/feedback: a score of one answer, by its response id, into the outcome ledger."""
        try:
            feedback = openai_api.parse_feedback(await _read_json(request, self.body_timeout_s))
        except GatewayError as error:
            return error_response(error)
        try:
            reply = await self.stub.SubmitFeedback(router_pb2.SubmitFeedbackRequest(feedback=feedback),
                                                   timeout=min(self.timeout_s, 30.0), metadata=credentials(request))
        except grpc.aio.AioRpcError as exc:
            return error_response(http_error(exc, openai_api.feedback_param))
        receipt = reply.receipt
        return _json_response(200, {"object": "routemesh.feedback", "id": f"chatcmpl-{receipt.decision_id}",
                                    "decision_id": receipt.decision_id, "score": receipt.score,
                                    "model": receipt.model, "recorded_at": receipt.recorded_at_ms // 1000}, {})

    async def _opening(self, parsed: ParsedChat, events: AsyncIterator[router_pb2.ChatResponse],
                       answer: _Answer) -> GatewayError | None:
        """Read up to the first text (or the final): errors until then still get their own HTTP status."""
        try:
            async for event in events:
                kind = event.WhichOneof("event")
                if kind == "decision":
                    answer.decision = event.decision
                    if parsed.stream:
                        # While the first text is on its way: the frame of every chunk of the stream.
                        answer.chunks = openai_api.ChunkStream(event.decision, int(time.time()), parsed.include_usage)
                    self._record_decision(event.decision)
                elif kind == "delta":
                    answer.add(event.delta)
                    answer.first = event.delta
                    return None
                else:
                    answer.final = event.final
                    return None
        except grpc.aio.AioRpcError as exc:
            return http_error(exc, parsed.param_of)
        return GatewayError(502, "the router ended the stream without an answer", type="upstream_error",
                            code="truncated_upstream")

    @staticmethod
    def _record_decision(decision: router_pb2.Decision) -> None:
        set_attributes(trace.get_current_span(), {
            semconv.DECISION_ID: decision.decision_id, semconv.DECISION_MODEL: decision.model,
            semconv.DECISION_ROUTE: decision.route, semconv.DECISION_PROVIDER: decision.provider,
        })

    @staticmethod
    def _record_final(final: router_pb2.Final) -> None:
        set_attributes(trace.get_current_span(), {
            semconv.GEN_AI_RESPONSE_MODEL: final.model, semconv.COST_USD: final.cost_usd,
            semconv.GEN_AI_USAGE_INPUT_TOKENS: final.usage.input_tokens,
            semconv.GEN_AI_USAGE_OUTPUT_TOKENS: final.usage.output_tokens,
        })

    async def _complete(self, parsed: ParsedChat, call: Any) -> web.Response:
        answer = _Answer()
        events = call.__aiter__()
        opening_error = await self._opening(parsed, events, answer)
        headers = routemesh_headers(answer.decision) if answer.decision.decision_id else {}
        if opening_error is not None:
            return error_response(opening_error, headers)
        try:
            async for event in events:
                if event.HasField("delta"):
                    answer.add(event.delta)
                elif event.HasField("final"):
                    answer.final = event.final
        except grpc.aio.AioRpcError as exc:
            # Text already came: whatever the status, the answer is incomplete.
            return error_response(openai_api.broken_answer(None, f"router stream failed: {exc.code().name}"),
                                  headers)
        final = answer.final
        if final is None or final.status not in FINISH_REASONS:
            return error_response(openai_api.broken_answer(final), headers)
        self._record_final(final)
        body = openai_api.completion(answer.decision, final, "".join(answer.texts), int(time.time()),
                                     answer.tool_calls.openai())
        return _json_response(200, body, headers)

    async def _stream(self, request: web.Request, parsed: ParsedChat, call: Any) -> web.StreamResponse:
        answer = _Answer()
        events = call.__aiter__()
        opening_error = await self._opening(parsed, events, answer)
        headers = routemesh_headers(answer.decision) if answer.decision.decision_id else {}
        if opening_error is not None:
            return error_response(opening_error, headers)
        final = answer.final
        if final is not None and final.status not in FINISH_REASONS:
            # Nothing was sent yet, so the failure can still be an HTTP status.
            return error_response(openai_api.broken_answer(final), headers)
        response = _EventStream(status=200, headers={
            **headers, "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache",
            "x-accel-buffering": "no"})
        await response.prepare(request)
        decision = answer.decision
        chunks = answer.chunks or openai_api.ChunkStream(decision, int(time.time()), parsed.include_usage)
        try:
            await response.write(chunks.delta(answer.first or _NO_DELTA, first=True))
            try:
                async for event in events:
                    kind = event.WhichOneof("event")
                    if kind == "delta":
                        await response.write(chunks.delta(event.delta))
                    elif kind == "final":
                        final = event.final
            except grpc.aio.AioRpcError as exc:
                await self._stream_error(response, openai_api.broken_answer(
                    None, f"router stream failed: {exc.code().name}"))
                return response
            if final is None or final.status not in FINISH_REASONS:
                await self._stream_error(response, openai_api.broken_answer(final))
                return response
            self._record_final(final)
            # The finish, the usage, [DONE] and the chunked body's end in one write: a caller that stops
            # reading at [DONE] (as many do) finds the body ended, and keeps its connection for the next request.
            await response.write_eof(chunks.end(final))
        except ConnectionError:
            log.info("client of decision %s went away mid-stream", decision.decision_id)
        except asyncio.CancelledError:
            # Stopped from outside (gateway shutdown past its grace): say so rather than end silently.
            with contextlib.suppress(Exception):
                error = openai_api.broken_answer(None, "the gateway stopped the stream")
                await asyncio.wait_for(response.write(openai_api.sse(error.body())), 1.0)
            raise
        return response

    @staticmethod
    async def _stream_error(response: web.StreamResponse, error: GatewayError) -> None:
        """An SSE error event and no [DONE]: OpenAI clients raise instead of seeing a clean end."""
        span = trace.get_current_span()
        span.set_status(Status(StatusCode.ERROR, error.code or "upstream_error"))
        await response.write(openai_api.sse(error.body()))
