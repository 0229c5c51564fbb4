"""Sync and async clients of RouterService: streaming iterators, collected results, typed errors."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from routemesh.v1 import common_pb2, router_pb2, router_pb2_grpc

DEFAULT_ADDRESS = "127.0.0.1:50051"
API_KEY_ENV = "ROUTEMESH_API_KEY"

# Chat is retried by the channel only while nothing was received (UNAVAILABLE before any response);
# once a decision arrived the stream is not replayed, so an answer is never duplicated.
_SERVICE_CONFIG = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [{
        "name": [{"service": "routemesh.v1.RouterService"}],
        "retryPolicy": {"maxAttempts": 3, "initialBackoff": "0.1s", "maxBackoff": "1s",
                        "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]},
    }],
}
CHANNEL_OPTIONS = [
    ("grpc.service_config", json.dumps(_SERVICE_CONFIG)),
    ("grpc.enable_retries", 1),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.http2.ping_timeout_ms", 5_000),  # grpcio 1.85 times keepalive pings by this (default 60 s)
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]

MessageLike = str | tuple[str, str] | common_pb2.Message
_ROLES = {"system": common_pb2.ROLE_SYSTEM, "user": common_pb2.ROLE_USER,
          "assistant": common_pb2.ROLE_ASSISTANT, "tool": common_pb2.ROLE_TOOL}


class RoutemeshError(Exception):
    """An error status from routemesh, with its google.rpc details decoded."""

    def __init__(self, code: grpc.StatusCode, message: str, reason: str = "",
                 metadata: Mapping[str, str] | None = None, field_violations: Sequence[tuple[str, str]] = ()):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.reason = reason
        self.metadata = dict(metadata or {})
        self.field_violations = list(field_violations)

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> RoutemeshError:
        reason, metadata, violations = "", {}, []
        status = rpc_status.from_call(error) if hasattr(error, "trailing_metadata") else None
        for detail in status.details if status else ():
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason, metadata = info.reason, dict(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations = [(v.field, v.description) for v in bad.field_violations]
        return cls(error.code(), error.details() or "", reason, metadata, violations)


@dataclass
class ChatResult:
    """A whole chat: the decision, the text, the tool calls and the final summary."""

    decision: router_pb2.Decision
    text: str
    final: router_pb2.Final
    deltas: int = 0
    tool_calls: list[common_pb2.ToolCall] = field(default_factory=list)

    @property
    def status(self) -> str:
        return common_pb2.FinishStatus.Name(self.final.status).removeprefix("FINISH_STATUS_")


@dataclass
class ChatOptions:
    """Per-request options."""

    model: str = "auto"
    max_tokens: int = 0
    metadata: Mapping[str, str] = field(default_factory=dict)
    temperature: float | None = None
    system: str | None = None
    timeout: float | None = None
    routing: router_pb2.RoutingOptions | None = None
    tools: Sequence[common_pb2.Tool] = ()
    tool_choice: str = ""
    response_format: str = ""  # "json_object" for JSON output


def to_messages(prompt: str | Sequence[MessageLike], system: str | None = None) -> list[common_pb2.Message]:
    """A prompt string, or (role, content) pairs, or Message protos, as Message protos."""
    items: Sequence[MessageLike] = [prompt] if isinstance(prompt, str) else prompt
    messages = [common_pb2.Message(role=common_pb2.ROLE_SYSTEM, content=system)] if system else []
    for item in items:
        if isinstance(item, common_pb2.Message):
            messages.append(item)
        elif isinstance(item, tuple):
            messages.append(common_pb2.Message(role=_ROLES[item[0]], content=item[1]))
        else:
            messages.append(common_pb2.Message(role=common_pb2.ROLE_USER, content=item))
    return messages


def build_chat_request(prompt: str | Sequence[MessageLike], options: ChatOptions) -> router_pb2.ChatRequest:
    request = router_pb2.ChatRequest(messages=to_messages(prompt, options.system), model=options.model,
                                     max_tokens=options.max_tokens, metadata=dict(options.metadata))
    if options.temperature is not None:
        request.temperature = options.temperature
    if options.routing is not None:
        request.routing.CopyFrom(options.routing)
    request.tools.extend(options.tools)
    request.tool_choice = options.tool_choice
    request.response_format = options.response_format
    return request


def _explain_request(chat: router_pb2.ChatRequest) -> router_pb2.ExplainRequest:
    return router_pb2.ExplainRequest(messages=chat.messages, model=chat.model, max_tokens=chat.max_tokens,
                                     metadata=chat.metadata, routing=chat.routing, tools=chat.tools,
                                     response_format=chat.response_format)


class _Collector:
    def __init__(self) -> None:
        self.decision = router_pb2.Decision()
        self.final: router_pb2.Final | None = None
        self.parts: list[str] = []
        self.tools: dict[int, common_pb2.ToolCall] = {}

    def add(self, event: router_pb2.ChatResponse) -> None:
        kind = event.WhichOneof("event")
        if kind == "decision":
            self.decision = event.decision
        elif kind == "delta":
            self.parts.append(event.delta.text)
            for piece in event.delta.tool_calls:
                call = self.tools.setdefault(piece.index, common_pb2.ToolCall())
                call.id = piece.id or call.id
                call.name = piece.name or call.name
                call.arguments_json += piece.arguments_fragment
        elif kind == "final":
            self.final = event.final

    def result(self) -> ChatResult:
        if self.final is None:
            raise RoutemeshError(grpc.StatusCode.DATA_LOSS, "stream ended without a final event")
        return ChatResult(self.decision, "".join(self.parts), self.final, len(self.parts),
                          [self.tools[i] for i in sorted(self.tools)])


def _tls_roots(tls_ca: str | bytes | None) -> bytes | None:
    """PEM CA certificates from bytes or a file path; None for plaintext."""
    if tls_ca is None or isinstance(tls_ca, bytes):
        return tls_ca
    with open(tls_ca, "rb") as handle:
        return handle.read()


def _key_metadata(api_key: str | None) -> tuple[tuple[str, str], ...] | None:
    """The call metadata that carries an API key: `api_key`, else $ROUTEMESH_API_KEY; None without one."""
    key = (os.environ.get(API_KEY_ENV, "") if api_key is None else api_key).strip()
    return (("authorization", f"Bearer {key}"),) if key else None


def _feedback_request(decision_id: str, score: float | None, thumbs: str | None, label: str,
                      comment: str) -> router_pb2.SubmitFeedbackRequest:
    """`thumbs` is "up" or "down"; give it or `score` (0..1). `decision_id` may be a gateway id (chatcmpl-...)."""
    feedback = common_pb2.Feedback(decision_id=decision_id, label=label, comment=comment)
    if score is not None:
        feedback.score = score
    if thumbs is not None:
        feedback.thumbs = {"up": common_pb2.THUMBS_UP, "down": common_pb2.THUMBS_DOWN}.get(
            thumbs, common_pb2.THUMBS_UNSPECIFIED)
    return router_pb2.SubmitFeedbackRequest(feedback=feedback)


class RouterClient:
    """Blocking client: `chat()` yields ChatResponse events; `complete()` returns a ChatResult.

    `tls_ca` (a PEM file path or its bytes) connects over TLS, checking the router's certificate against it.
    `api_key` (default $ROUTEMESH_API_KEY) is sent with every call, for a router that requires keys.
    """

    def __init__(self, address: str = DEFAULT_ADDRESS, *, timeout: float = 120.0,
                 channel: grpc.Channel | None = None, tls_ca: str | bytes | None = None,
                 api_key: str | None = None):
        self._metadata = _key_metadata(api_key)
        roots = _tls_roots(tls_ca)
        self._channel = channel or (
            grpc.secure_channel(address, grpc.ssl_channel_credentials(roots), options=CHANNEL_OPTIONS) if roots
            else grpc.insecure_channel(address, options=CHANNEL_OPTIONS))
        self._stub = router_pb2_grpc.RouterServiceStub(self._channel)
        self.timeout = timeout

    def chat(self, prompt: str | Sequence[MessageLike], **options: object) -> Iterator[router_pb2.ChatResponse]:
        opts = ChatOptions(**options)  # type: ignore[arg-type]
        try:
            yield from self._stub.Chat(build_chat_request(prompt, opts), timeout=opts.timeout or self.timeout,
                                      metadata=self._metadata)
        except grpc.RpcError as exc:
            raise RoutemeshError.from_rpc_error(exc) from None

    def complete(self, prompt: str | Sequence[MessageLike], **options: object) -> ChatResult:
        collector = _Collector()
        for event in self.chat(prompt, **options):
            collector.add(event)
        return collector.result()

    def explain(self, prompt: str | Sequence[MessageLike], **options: object) -> router_pb2.ExplainResponse:
        opts = ChatOptions(**options)  # type: ignore[arg-type]
        try:
            return self._stub.Explain(_explain_request(build_chat_request(prompt, opts)),
                                      timeout=opts.timeout or self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise RoutemeshError.from_rpc_error(exc) from None

    def feedback(self, decision_id: str, *, score: float | None = None, thumbs: str | None = None,
                 label: str = "", comment: str = "") -> common_pb2.FeedbackReceipt:
        """Score one answer (its decision id) for the outcome ledger: `score` in [0, 1] or `thumbs` "up"/"down"."""
        try:
            return self._stub.SubmitFeedback(_feedback_request(decision_id, score, thumbs, label, comment),
                                             timeout=self.timeout, metadata=self._metadata).receipt
        except grpc.RpcError as exc:
            raise RoutemeshError.from_rpc_error(exc) from None

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> RouterClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncRouterClient:
    """asyncio client; create it inside the running event loop. `tls_ca` and `api_key` as in RouterClient."""

    def __init__(self, address: str = DEFAULT_ADDRESS, *, timeout: float = 120.0,
                 channel: grpc.aio.Channel | None = None, tls_ca: str | bytes | None = None,
                 api_key: str | None = None):
        self._metadata = _key_metadata(api_key)
        roots = _tls_roots(tls_ca)
        self._channel = channel or (
            grpc.aio.secure_channel(address, grpc.ssl_channel_credentials(roots), options=CHANNEL_OPTIONS) if roots
            else grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS))
        self._stub = router_pb2_grpc.RouterServiceStub(self._channel)
        self.timeout = timeout

    async def chat(self, prompt: str | Sequence[MessageLike],
                   **options: object) -> AsyncIterator[router_pb2.ChatResponse]:
        opts = ChatOptions(**options)  # type: ignore[arg-type]
        call = self._stub.Chat(build_chat_request(prompt, opts), timeout=opts.timeout or self.timeout,
                               metadata=self._metadata)
        try:
            async for event in call:
                yield event
        except grpc.aio.AioRpcError as exc:
            raise RoutemeshError.from_rpc_error(exc) from None
        finally:
            call.cancel()

    async def complete(self, prompt: str | Sequence[MessageLike], **options: object) -> ChatResult:
        collector = _Collector()
        async for event in self.chat(prompt, **options):
            collector.add(event)
        return collector.result()

    async def explain(self, prompt: str | Sequence[MessageLike], **options: object) -> router_pb2.ExplainResponse:
        opts = ChatOptions(**options)  # type: ignore[arg-type]
        try:
            return await self._stub.Explain(_explain_request(build_chat_request(prompt, opts)),
                                            timeout=opts.timeout or self.timeout, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            raise RoutemeshError.from_rpc_error(exc) from None

    async def feedback(self, decision_id: str, *, score: float | None = None, thumbs: str | None = None,
                       label: str = "", comment: str = "") -> common_pb2.FeedbackReceipt:
        """As RouterClient.feedback."""
        try:
            reply = await self._stub.SubmitFeedback(_feedback_request(decision_id, score, thumbs, label, comment),
                                                    timeout=self.timeout, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            raise RoutemeshError.from_rpc_error(exc) from None
        return reply.receipt

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncRouterClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
