from routemesh.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExecuteRequest(_message.Message):
    __slots__ = ("messages", "plan", "max_tokens", "temperature", "decision_id", "estimated_input_tokens", "options", "tools", "tool_choice", "response_format", "policy_version", "policy_digest")
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    TOOL_CHOICE_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    POLICY_DIGEST_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[_common_pb2.Message]
    plan: _containers.RepeatedScalarFieldContainer[str]
    max_tokens: int
    temperature: float
    decision_id: str
    estimated_input_tokens: int
    options: ExecutionOptions
    tools: _containers.RepeatedCompositeFieldContainer[_common_pb2.Tool]
    tool_choice: str
    response_format: str
    policy_version: int
    policy_digest: str
    def __init__(self, messages: _Optional[_Iterable[_Union[_common_pb2.Message, _Mapping]]] = ..., plan: _Optional[_Iterable[str]] = ..., max_tokens: _Optional[int] = ..., temperature: _Optional[float] = ..., decision_id: _Optional[str] = ..., estimated_input_tokens: _Optional[int] = ..., options: _Optional[_Union[ExecutionOptions, _Mapping]] = ..., tools: _Optional[_Iterable[_Union[_common_pb2.Tool, _Mapping]]] = ..., tool_choice: _Optional[str] = ..., response_format: _Optional[str] = ..., policy_version: _Optional[int] = ..., policy_digest: _Optional[str] = ...) -> None: ...

class ExecutionOptions(_message.Message):
    __slots__ = ("max_tries_per_model", "backoff_initial_ms", "backoff_max_ms", "hedge_after_ms", "continue_on_truncation")
    MAX_TRIES_PER_MODEL_FIELD_NUMBER: _ClassVar[int]
    BACKOFF_INITIAL_MS_FIELD_NUMBER: _ClassVar[int]
    BACKOFF_MAX_MS_FIELD_NUMBER: _ClassVar[int]
    HEDGE_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    CONTINUE_ON_TRUNCATION_FIELD_NUMBER: _ClassVar[int]
    max_tries_per_model: int
    backoff_initial_ms: int
    backoff_max_ms: int
    hedge_after_ms: int
    continue_on_truncation: bool
    def __init__(self, max_tries_per_model: _Optional[int] = ..., backoff_initial_ms: _Optional[int] = ..., backoff_max_ms: _Optional[int] = ..., hedge_after_ms: _Optional[int] = ..., continue_on_truncation: _Optional[bool] = ...) -> None: ...

class ExecuteResponse(_message.Message):
    __slots__ = ("delta", "result")
    DELTA_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    delta: _common_pb2.Delta
    result: ExecutionResult
    def __init__(self, delta: _Optional[_Union[_common_pb2.Delta, _Mapping]] = ..., result: _Optional[_Union[ExecutionResult, _Mapping]] = ...) -> None: ...

class ExecutionResult(_message.Message):
    __slots__ = ("status", "usage", "cost_usd", "model", "provider", "attempts", "error")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    status: _common_pb2.FinishStatus
    usage: _common_pb2.Usage
    cost_usd: float
    model: str
    provider: str
    attempts: _containers.RepeatedCompositeFieldContainer[_common_pb2.Attempt]
    error: str
    def __init__(self, status: _Optional[_Union[_common_pb2.FinishStatus, str]] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ..., cost_usd: _Optional[float] = ..., model: _Optional[str] = ..., provider: _Optional[str] = ..., attempts: _Optional[_Iterable[_Union[_common_pb2.Attempt, _Mapping]]] = ..., error: _Optional[str] = ...) -> None: ...
