"""A chat request as the router's pipeline sees it, validated, and what the pipeline hands back."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jsonschema.exceptions import SchemaError
from jsonschema.validators import validator_for

from routemesh.classifier.features import RequestFeatures
from routemesh.common.errors import InvalidRequest
from routemesh.common.messages import ROLE_NAMES
from routemesh.router.admission.guard import KeyQuota
from routemesh.router.decision.filters import RoutingFeatures, RoutingOptionsView
from routemesh.router.decision.planner import Plan
from routemesh.v1 import common_pb2

MAX_METADATA = 64
# A tool's parameter schema, as JSON text; real ones are a few KB.
MAX_TOOL_SCHEMA_CHARS = 256 * 1024
MAX_MODEL_NAME = 256
RESPONSE_FORMATS = ("", "text", "json_object")


@dataclass(frozen=True, slots=True)
class ChatInput:
    """One chat or explain request.

    Messages, tools and the tool-call pieces are relayed to the classifier and the executor as they came:
    the router reads only the last user text, so converting them would cost a copy per request for nothing.
    """

    messages: Sequence[common_pb2.Message]
    model: str = ""
    max_tokens: int = 0
    metadata: Mapping[str, str] = field(default_factory=dict)
    options: RoutingOptionsView = RoutingOptionsView()
    temperature: float | None = None
    tools: Sequence[common_pb2.Tool] = ()
    tool_choice: str = ""
    response_format: str = ""
    # The caller's API key (gRPC metadata "authorization: Bearer rmk_..."); "" when none was sent.
    api_key: str = field(default="", repr=False)
    # The limits of that key once the router verified it (RequestPipeline.authenticate); None without one.
    quota: KeyQuota | None = None

    @property
    def text(self) -> str:
        """The last user message, which rules' keywords and patterns read."""
        for message in reversed(self.messages):
            if message.role == common_pb2.ROLE_USER:
                return message.content
        return ""


def conversation_sha256(messages: Sequence[common_pb2.Message]) -> str:
    """SHA-256 (hex) of a conversation's roles and texts: what the ledger keeps instead of the text."""
    digest = hashlib.sha256()
    for message in messages:
        digest.update(b"%d\x00" % message.role)
        digest.update(message.content.encode())
        digest.update(b"\x00")
    return digest.hexdigest()


def validate(request: ChatInput) -> None:
    """Raise InvalidRequest naming every bad field."""
    problems: list[tuple[str, str]] = []
    messages = request.messages
    if not messages:
        problems.append(("messages", "at least one message is required"))
    for i, message in enumerate(messages):
        if message.role not in ROLE_NAMES:
            problems.append((f"messages[{i}].role", "must be set (SYSTEM, USER, ASSISTANT or TOOL)"))
    if messages and not any(m.content.strip() for m in messages):
        problems.append(("messages", "every message is empty"))
    if request.max_tokens < 0:
        problems.append(("max_tokens", f"must not be negative (got {request.max_tokens}); 0 means the policy default"))
    if len(request.model) > MAX_MODEL_NAME:
        problems.append(("model", f"longer than {MAX_MODEL_NAME} characters"))
    if len(request.metadata) > MAX_METADATA:
        problems.append(("metadata", f"more than {MAX_METADATA} entries"))
    if request.temperature is not None and not 0.0 <= request.temperature <= 2.0:
        problems.append(("temperature", f"must be between 0 and 2 (got {request.temperature})"))
    if problems:
        raise InvalidRequest("invalid chat request: " + "; ".join(f"{f}: {d}" for f, d in problems),
                             field_violations=problems)
    _validate_tools(request)


@functools.lru_cache(maxsize=1024)
def schema_problem(text: str) -> str:
    """What is wrong with a tool's parameters as a JSON Schema ("" when nothing is).

    Cached: an application sends the same tools with every request, and checking a schema against its
    metaschema takes about a millisecond.
    """
    if len(text) > MAX_TOOL_SCHEMA_CHARS:
        return f"longer than {MAX_TOOL_SCHEMA_CHARS:,} characters"
    try:
        schema = json.loads(text)
    except RecursionError:
        return "nested too deeply to read"
    except ValueError as exc:
        return f"must be a JSON Schema as JSON text ({exc})"
    if not isinstance(schema, dict | bool):
        return "must be a JSON Schema: an object (or true/false)"
    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        return f"not a valid JSON Schema{f' at {where}' if where else ''}: {exc.message[:200]}"
    except RecursionError:
        return "nested too deeply to check"
    return ""


def _validate_tools(request: ChatInput) -> None:
    problems = []
    if request.response_format not in RESPONSE_FORMATS:
        problems.append(("response_format", f"must be one of {list(RESPONSE_FORMATS[1:])}"))
    names = [t.name for t in request.tools]
    for i, tool in enumerate(request.tools):
        if not tool.name:
            problems.append((f"tools[{i}].name", "must not be empty"))
        if tool.parameters_json:
            problem = schema_problem(tool.parameters_json)
            if problem:
                problems.append((f"tools[{i}].parameters_json", problem))
    choice = request.tool_choice
    if choice and choice not in ("auto", "none", "required") and choice not in names:
        problems.append(("tool_choice", f"must be auto, none, required or one of the tools {names}"))
    if problems:
        raise InvalidRequest("invalid tools or response format", field_violations=problems)


@dataclass(frozen=True, slots=True)
class Classified:
    """A request's features and who computed them ("classifier", "router", "router-fallback").

    `predicted_success`: per policy model, the quality predictor's probability that it answers well (empty
    without a predictor); `predictor_sha256`: the digest of the artifact that predicted it.
    """

    features: RequestFeatures
    source: str
    predicted_success: Mapping[str, float] = field(default_factory=dict)
    predictor_sha256: str = ""

    def routing(self) -> RoutingFeatures:
        f = self.features
        return RoutingFeatures(input_tokens=f.input_tokens, task_type=f.task_type, language=f.language or "und",
                               complexity=f.complexity, has_code=f.has_code, predicted_success=self.predicted_success)


@dataclass(frozen=True, slots=True)
class Decision:
    """What the router decided for one request, built once from the stages' results and never changed."""

    decision_id: str
    plan: Plan
    provider: str  # of the first model
    classified: Classified
    policy_version: int
    policy_digest: str
    trace_id: str
    degraded: tuple[str, ...] = ()
    # Its wire form, made once (router.convert.decision_to_proto) for the caller and again for the ledger.
    wire: list[Any] = field(default_factory=list, compare=False, repr=False)


@dataclass(slots=True)  # not frozen: one per relayed message, and a frozen init costs a setattr per field
class Delta:
    """Text and tool-call pieces relayed from the executor as one message."""

    text: str
    tool_calls: Sequence[common_pb2.ToolCallDelta] = ()


@dataclass(frozen=True, slots=True)
class Finished:
    """How the request ended: the serving model, status, cost; usage and attempts relayed from the executor."""

    status: int  # FinishStatus
    model: str = ""
    provider: str = ""
    cost_usd: float = 0.0
    error: str = ""
    usage: common_pb2.Usage | None = None
    attempts: Sequence[common_pb2.Attempt] = ()

    @property
    def tokens_used(self) -> int:
        return self.usage.input_tokens + self.usage.output_tokens if self.usage is not None else 0
