from routemesh.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SubmitFeedbackRequest(_message.Message):
    __slots__ = ("feedback",)
    FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    feedback: _common_pb2.Feedback
    def __init__(self, feedback: _Optional[_Union[_common_pb2.Feedback, _Mapping]] = ...) -> None: ...

class SubmitFeedbackResponse(_message.Message):
    __slots__ = ("receipt",)
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    receipt: _common_pb2.FeedbackReceipt
    def __init__(self, receipt: _Optional[_Union[_common_pb2.FeedbackReceipt, _Mapping]] = ...) -> None: ...

class ChatRequest(_message.Message):
    __slots__ = ("messages", "model", "max_tokens", "metadata", "temperature", "routing", "tools", "tool_choice", "response_format")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    ROUTING_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    TOOL_CHOICE_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[_common_pb2.Message]
    model: str
    max_tokens: int
    metadata: _containers.ScalarMap[str, str]
    temperature: float
    routing: RoutingOptions
    tools: _containers.RepeatedCompositeFieldContainer[_common_pb2.Tool]
    tool_choice: str
    response_format: str
    def __init__(self, messages: _Optional[_Iterable[_Union[_common_pb2.Message, _Mapping]]] = ..., model: _Optional[str] = ..., max_tokens: _Optional[int] = ..., metadata: _Optional[_Mapping[str, str]] = ..., temperature: _Optional[float] = ..., routing: _Optional[_Union[RoutingOptions, _Mapping]] = ..., tools: _Optional[_Iterable[_Union[_common_pb2.Tool, _Mapping]]] = ..., tool_choice: _Optional[str] = ..., response_format: _Optional[str] = ...) -> None: ...

class RoutingOptions(_message.Message):
    __slots__ = ("strategy", "max_cost_usd", "latency_target_ms", "allow_fallback", "provider", "required_capabilities")
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    MAX_COST_USD_FIELD_NUMBER: _ClassVar[int]
    LATENCY_TARGET_MS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_FALLBACK_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    strategy: str
    max_cost_usd: float
    latency_target_ms: float
    allow_fallback: bool
    provider: str
    required_capabilities: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, strategy: _Optional[str] = ..., max_cost_usd: _Optional[float] = ..., latency_target_ms: _Optional[float] = ..., allow_fallback: _Optional[bool] = ..., provider: _Optional[str] = ..., required_capabilities: _Optional[_Iterable[str]] = ...) -> None: ...

class ChatResponse(_message.Message):
    __slots__ = ("decision", "delta", "final")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    decision: Decision
    delta: _common_pb2.Delta
    final: Final
    def __init__(self, decision: _Optional[_Union[Decision, _Mapping]] = ..., delta: _Optional[_Union[_common_pb2.Delta, _Mapping]] = ..., final: _Optional[_Union[Final, _Mapping]] = ...) -> None: ...

class Decision(_message.Message):
    __slots__ = ("decision_id", "model", "provider", "strategy", "reason", "route", "fallbacks", "features", "policy_version", "trace_id", "rule", "experiment", "variant", "estimated_cost_usd", "budget_soft_limited", "candidates", "degraded")
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    FALLBACKS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_COST_USD_FIELD_NUMBER: _ClassVar[int]
    BUDGET_SOFT_LIMITED_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    decision_id: str
    model: str
    provider: str
    strategy: str
    reason: str
    route: str
    fallbacks: _containers.RepeatedScalarFieldContainer[str]
    features: _common_pb2.Features
    policy_version: int
    trace_id: str
    rule: str
    experiment: str
    variant: str
    estimated_cost_usd: float
    budget_soft_limited: bool
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    degraded: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, decision_id: _Optional[str] = ..., model: _Optional[str] = ..., provider: _Optional[str] = ..., strategy: _Optional[str] = ..., reason: _Optional[str] = ..., route: _Optional[str] = ..., fallbacks: _Optional[_Iterable[str]] = ..., features: _Optional[_Union[_common_pb2.Features, _Mapping]] = ..., policy_version: _Optional[int] = ..., trace_id: _Optional[str] = ..., rule: _Optional[str] = ..., experiment: _Optional[str] = ..., variant: _Optional[str] = ..., estimated_cost_usd: _Optional[float] = ..., budget_soft_limited: _Optional[bool] = ..., candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ..., degraded: _Optional[_Iterable[str]] = ...) -> None: ...

class Final(_message.Message):
    __slots__ = ("status", "usage", "cost_usd", "model", "provider", "attempts", "decision_id", "trace_id", "error", "experiment", "variant")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    status: _common_pb2.FinishStatus
    usage: _common_pb2.Usage
    cost_usd: float
    model: str
    provider: str
    attempts: _containers.RepeatedCompositeFieldContainer[_common_pb2.Attempt]
    decision_id: str
    trace_id: str
    error: str
    experiment: str
    variant: str
    def __init__(self, status: _Optional[_Union[_common_pb2.FinishStatus, str]] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ..., cost_usd: _Optional[float] = ..., model: _Optional[str] = ..., provider: _Optional[str] = ..., attempts: _Optional[_Iterable[_Union[_common_pb2.Attempt, _Mapping]]] = ..., decision_id: _Optional[str] = ..., trace_id: _Optional[str] = ..., error: _Optional[str] = ..., experiment: _Optional[str] = ..., variant: _Optional[str] = ...) -> None: ...

class ExplainRequest(_message.Message):
    __slots__ = ("messages", "model", "max_tokens", "metadata", "routing", "tools", "response_format")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    ROUTING_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[_common_pb2.Message]
    model: str
    max_tokens: int
    metadata: _containers.ScalarMap[str, str]
    routing: RoutingOptions
    tools: _containers.RepeatedCompositeFieldContainer[_common_pb2.Tool]
    response_format: str
    def __init__(self, messages: _Optional[_Iterable[_Union[_common_pb2.Message, _Mapping]]] = ..., model: _Optional[str] = ..., max_tokens: _Optional[int] = ..., metadata: _Optional[_Mapping[str, str]] = ..., routing: _Optional[_Union[RoutingOptions, _Mapping]] = ..., tools: _Optional[_Iterable[_Union[_common_pb2.Tool, _Mapping]]] = ..., response_format: _Optional[str] = ...) -> None: ...

class ExplainResponse(_message.Message):
    __slots__ = ("decision",)
    DECISION_FIELD_NUMBER: _ClassVar[int]
    decision: Decision
    def __init__(self, decision: _Optional[_Union[Decision, _Mapping]] = ...) -> None: ...

class Candidate(_message.Message):
    __slots__ = ("model", "provider", "eligible", "rank", "rejection_reason", "score", "estimated_cost_usd", "factors")
    class FactorsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    ELIGIBLE_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    REJECTION_REASON_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_COST_USD_FIELD_NUMBER: _ClassVar[int]
    FACTORS_FIELD_NUMBER: _ClassVar[int]
    model: str
    provider: str
    eligible: bool
    rank: int
    rejection_reason: str
    score: float
    estimated_cost_usd: float
    factors: _containers.ScalarMap[str, float]
    def __init__(self, model: _Optional[str] = ..., provider: _Optional[str] = ..., eligible: _Optional[bool] = ..., rank: _Optional[int] = ..., rejection_reason: _Optional[str] = ..., score: _Optional[float] = ..., estimated_cost_usd: _Optional[float] = ..., factors: _Optional[_Mapping[str, float]] = ...) -> None: ...
