from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_UNSPECIFIED: _ClassVar[Role]
    ROLE_SYSTEM: _ClassVar[Role]
    ROLE_USER: _ClassVar[Role]
    ROLE_ASSISTANT: _ClassVar[Role]
    ROLE_TOOL: _ClassVar[Role]

class TaskType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_TYPE_UNSPECIFIED: _ClassVar[TaskType]
    TASK_TYPE_CHAT: _ClassVar[TaskType]
    TASK_TYPE_CODE: _ClassVar[TaskType]
    TASK_TYPE_MATH: _ClassVar[TaskType]
    TASK_TYPE_SUMMARIZATION: _ClassVar[TaskType]
    TASK_TYPE_TRANSLATION: _ClassVar[TaskType]
    TASK_TYPE_EXTRACTION: _ClassVar[TaskType]
    TASK_TYPE_CREATIVE_WRITING: _ClassVar[TaskType]
    TASK_TYPE_QUESTION_ANSWERING: _ClassVar[TaskType]

class FinishStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FINISH_STATUS_UNSPECIFIED: _ClassVar[FinishStatus]
    FINISH_STATUS_COMPLETE: _ClassVar[FinishStatus]
    FINISH_STATUS_LENGTH: _ClassVar[FinishStatus]
    FINISH_STATUS_TRUNCATED_UPSTREAM: _ClassVar[FinishStatus]
    FINISH_STATUS_FAILED: _ClassVar[FinishStatus]
    FINISH_STATUS_CONTENT_FILTER: _ClassVar[FinishStatus]
    FINISH_STATUS_CANCELLED: _ClassVar[FinishStatus]
    FINISH_STATUS_CONTINUED: _ClassVar[FinishStatus]
    FINISH_STATUS_TOOL_CALLS: _ClassVar[FinishStatus]

class AttemptOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ATTEMPT_OUTCOME_UNSPECIFIED: _ClassVar[AttemptOutcome]
    ATTEMPT_OUTCOME_SUCCESS: _ClassVar[AttemptOutcome]
    ATTEMPT_OUTCOME_RATE_LIMITED: _ClassVar[AttemptOutcome]
    ATTEMPT_OUTCOME_UPSTREAM_ERROR: _ClassVar[AttemptOutcome]
    ATTEMPT_OUTCOME_CONNECT_ERROR: _ClassVar[AttemptOutcome]
    ATTEMPT_OUTCOME_TIMEOUT: _ClassVar[AttemptOutcome]
    ATTEMPT_OUTCOME_TRUNCATED: _ClassVar[AttemptOutcome]
    ATTEMPT_OUTCOME_CANCELLED: _ClassVar[AttemptOutcome]
    ATTEMPT_OUTCOME_CONFIG_ERROR: _ClassVar[AttemptOutcome]
    ATTEMPT_OUTCOME_HEDGE_LOST: _ClassVar[AttemptOutcome]
    ATTEMPT_OUTCOME_CIRCUIT_OPEN: _ClassVar[AttemptOutcome]
    ATTEMPT_OUTCOME_RETRY_BUDGET_EXHAUSTED: _ClassVar[AttemptOutcome]

class ErrorReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_REASON_UNSPECIFIED: _ClassVar[ErrorReason]
    ERROR_REASON_INVALID_REQUEST: _ClassVar[ErrorReason]
    ERROR_REASON_NOT_FOUND: _ClassVar[ErrorReason]
    ERROR_REASON_UNKNOWN_MODEL: _ClassVar[ErrorReason]
    ERROR_REASON_UNKNOWN_PROVIDER: _ClassVar[ErrorReason]
    ERROR_REASON_NO_ELIGIBLE_MODEL: _ClassVar[ErrorReason]
    ERROR_REASON_ALL_CANDIDATES_FAILED: _ClassVar[ErrorReason]
    ERROR_REASON_NO_POLICY: _ClassVar[ErrorReason]
    ERROR_REASON_BUDGET_EXHAUSTED: _ClassVar[ErrorReason]
    ERROR_REASON_BUDGET_UNAVAILABLE: _ClassVar[ErrorReason]
    ERROR_REASON_RATE_LIMITED: _ClassVar[ErrorReason]
    ERROR_REASON_EXECUTOR_UNAVAILABLE: _ClassVar[ErrorReason]
    ERROR_REASON_DEADLINE_EXCEEDED: _ClassVar[ErrorReason]
    ERROR_REASON_TELEMETRY_STORE_UNAVAILABLE: _ClassVar[ErrorReason]
    ERROR_REASON_INTERNAL: _ClassVar[ErrorReason]
    ERROR_REASON_POLICY_SKEW: _ClassVar[ErrorReason]
    ERROR_REASON_MESSAGE_TOO_LARGE: _ClassVar[ErrorReason]
    ERROR_REASON_UNDECODABLE_MESSAGE: _ClassVar[ErrorReason]
    ERROR_REASON_CALLER_NOT_ALLOWED: _ClassVar[ErrorReason]
    ERROR_REASON_KEYS_NOT_CONFIGURED: _ClassVar[ErrorReason]
    ERROR_REASON_INVALID_API_KEY: _ClassVar[ErrorReason]
    ERROR_REASON_KEY_NOT_ALLOWED: _ClassVar[ErrorReason]
    ERROR_REASON_ADMIN_REQUIRED: _ClassVar[ErrorReason]
    ERROR_REASON_LEDGER_NOT_CONFIGURED: _ClassVar[ErrorReason]
    ERROR_REASON_LEDGER_UNAVAILABLE: _ClassVar[ErrorReason]
    ERROR_REASON_FEEDBACK_EXISTS: _ClassVar[ErrorReason]
    ERROR_REASON_UNKNOWN_DECISION: _ClassVar[ErrorReason]

class Thumbs(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    THUMBS_UNSPECIFIED: _ClassVar[Thumbs]
    THUMBS_UP: _ClassVar[Thumbs]
    THUMBS_DOWN: _ClassVar[Thumbs]
ROLE_UNSPECIFIED: Role
ROLE_SYSTEM: Role
ROLE_USER: Role
ROLE_ASSISTANT: Role
ROLE_TOOL: Role
TASK_TYPE_UNSPECIFIED: TaskType
TASK_TYPE_CHAT: TaskType
TASK_TYPE_CODE: TaskType
TASK_TYPE_MATH: TaskType
TASK_TYPE_SUMMARIZATION: TaskType
TASK_TYPE_TRANSLATION: TaskType
TASK_TYPE_EXTRACTION: TaskType
TASK_TYPE_CREATIVE_WRITING: TaskType
TASK_TYPE_QUESTION_ANSWERING: TaskType
FINISH_STATUS_UNSPECIFIED: FinishStatus
FINISH_STATUS_COMPLETE: FinishStatus
FINISH_STATUS_LENGTH: FinishStatus
FINISH_STATUS_TRUNCATED_UPSTREAM: FinishStatus
FINISH_STATUS_FAILED: FinishStatus
FINISH_STATUS_CONTENT_FILTER: FinishStatus
FINISH_STATUS_CANCELLED: FinishStatus
FINISH_STATUS_CONTINUED: FinishStatus
FINISH_STATUS_TOOL_CALLS: FinishStatus
ATTEMPT_OUTCOME_UNSPECIFIED: AttemptOutcome
ATTEMPT_OUTCOME_SUCCESS: AttemptOutcome
ATTEMPT_OUTCOME_RATE_LIMITED: AttemptOutcome
ATTEMPT_OUTCOME_UPSTREAM_ERROR: AttemptOutcome
ATTEMPT_OUTCOME_CONNECT_ERROR: AttemptOutcome
ATTEMPT_OUTCOME_TIMEOUT: AttemptOutcome
ATTEMPT_OUTCOME_TRUNCATED: AttemptOutcome
ATTEMPT_OUTCOME_CANCELLED: AttemptOutcome
ATTEMPT_OUTCOME_CONFIG_ERROR: AttemptOutcome
ATTEMPT_OUTCOME_HEDGE_LOST: AttemptOutcome
ATTEMPT_OUTCOME_CIRCUIT_OPEN: AttemptOutcome
ATTEMPT_OUTCOME_RETRY_BUDGET_EXHAUSTED: AttemptOutcome
ERROR_REASON_UNSPECIFIED: ErrorReason
ERROR_REASON_INVALID_REQUEST: ErrorReason
ERROR_REASON_NOT_FOUND: ErrorReason
ERROR_REASON_UNKNOWN_MODEL: ErrorReason
ERROR_REASON_UNKNOWN_PROVIDER: ErrorReason
ERROR_REASON_NO_ELIGIBLE_MODEL: ErrorReason
ERROR_REASON_ALL_CANDIDATES_FAILED: ErrorReason
ERROR_REASON_NO_POLICY: ErrorReason
ERROR_REASON_BUDGET_EXHAUSTED: ErrorReason
ERROR_REASON_BUDGET_UNAVAILABLE: ErrorReason
ERROR_REASON_RATE_LIMITED: ErrorReason
ERROR_REASON_EXECUTOR_UNAVAILABLE: ErrorReason
ERROR_REASON_DEADLINE_EXCEEDED: ErrorReason
ERROR_REASON_TELEMETRY_STORE_UNAVAILABLE: ErrorReason
ERROR_REASON_INTERNAL: ErrorReason
ERROR_REASON_POLICY_SKEW: ErrorReason
ERROR_REASON_MESSAGE_TOO_LARGE: ErrorReason
ERROR_REASON_UNDECODABLE_MESSAGE: ErrorReason
ERROR_REASON_CALLER_NOT_ALLOWED: ErrorReason
ERROR_REASON_KEYS_NOT_CONFIGURED: ErrorReason
ERROR_REASON_INVALID_API_KEY: ErrorReason
ERROR_REASON_KEY_NOT_ALLOWED: ErrorReason
ERROR_REASON_ADMIN_REQUIRED: ErrorReason
ERROR_REASON_LEDGER_NOT_CONFIGURED: ErrorReason
ERROR_REASON_LEDGER_UNAVAILABLE: ErrorReason
ERROR_REASON_FEEDBACK_EXISTS: ErrorReason
ERROR_REASON_UNKNOWN_DECISION: ErrorReason
THUMBS_UNSPECIFIED: Thumbs
THUMBS_UP: Thumbs
THUMBS_DOWN: Thumbs

class Message(_message.Message):
    __slots__ = ("role", "content", "name", "tool_calls", "tool_call_id")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_ID_FIELD_NUMBER: _ClassVar[int]
    role: Role
    content: str
    name: str
    tool_calls: _containers.RepeatedCompositeFieldContainer[ToolCall]
    tool_call_id: str
    def __init__(self, role: _Optional[_Union[Role, str]] = ..., content: _Optional[str] = ..., name: _Optional[str] = ..., tool_calls: _Optional[_Iterable[_Union[ToolCall, _Mapping]]] = ..., tool_call_id: _Optional[str] = ...) -> None: ...

class Tool(_message.Message):
    __slots__ = ("name", "description", "parameters_json")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_JSON_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    parameters_json: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., parameters_json: _Optional[str] = ...) -> None: ...

class ToolCall(_message.Message):
    __slots__ = ("id", "name", "arguments_json")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    arguments_json: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., arguments_json: _Optional[str] = ...) -> None: ...

class ToolCallDelta(_message.Message):
    __slots__ = ("index", "id", "name", "arguments_fragment")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FRAGMENT_FIELD_NUMBER: _ClassVar[int]
    index: int
    id: str
    name: str
    arguments_fragment: str
    def __init__(self, index: _Optional[int] = ..., id: _Optional[str] = ..., name: _Optional[str] = ..., arguments_fragment: _Optional[str] = ...) -> None: ...

class Features(_message.Message):
    __slots__ = ("input_tokens", "task_type", "task_confidence", "language", "complexity", "has_code", "signals", "source", "predicted_success", "quality_predictor_sha256")
    class PredictedSuccessEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TASK_TYPE_FIELD_NUMBER: _ClassVar[int]
    TASK_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    COMPLEXITY_FIELD_NUMBER: _ClassVar[int]
    HAS_CODE_FIELD_NUMBER: _ClassVar[int]
    SIGNALS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_SUCCESS_FIELD_NUMBER: _ClassVar[int]
    QUALITY_PREDICTOR_SHA256_FIELD_NUMBER: _ClassVar[int]
    input_tokens: int
    task_type: TaskType
    task_confidence: float
    language: str
    complexity: float
    has_code: bool
    signals: _containers.RepeatedScalarFieldContainer[str]
    source: str
    predicted_success: _containers.ScalarMap[str, float]
    quality_predictor_sha256: str
    def __init__(self, input_tokens: _Optional[int] = ..., task_type: _Optional[_Union[TaskType, str]] = ..., task_confidence: _Optional[float] = ..., language: _Optional[str] = ..., complexity: _Optional[float] = ..., has_code: _Optional[bool] = ..., signals: _Optional[_Iterable[str]] = ..., source: _Optional[str] = ..., predicted_success: _Optional[_Mapping[str, float]] = ..., quality_predictor_sha256: _Optional[str] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("input_tokens", "output_tokens", "estimated", "cached_input_tokens", "reasoning_tokens")
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_FIELD_NUMBER: _ClassVar[int]
    CACHED_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    REASONING_TOKENS_FIELD_NUMBER: _ClassVar[int]
    input_tokens: int
    output_tokens: int
    estimated: bool
    cached_input_tokens: int
    reasoning_tokens: int
    def __init__(self, input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., estimated: _Optional[bool] = ..., cached_input_tokens: _Optional[int] = ..., reasoning_tokens: _Optional[int] = ...) -> None: ...

class Attempt(_message.Message):
    __slots__ = ("model", "provider", "outcome", "http_status", "error", "ttft_ms", "duration_ms", "usage", "cost_usd", "hedge", "try_number", "error_reason")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    HTTP_STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TTFT_MS_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    HEDGE_FIELD_NUMBER: _ClassVar[int]
    TRY_NUMBER_FIELD_NUMBER: _ClassVar[int]
    ERROR_REASON_FIELD_NUMBER: _ClassVar[int]
    model: str
    provider: str
    outcome: AttemptOutcome
    http_status: int
    error: str
    ttft_ms: float
    duration_ms: float
    usage: Usage
    cost_usd: float
    hedge: bool
    try_number: int
    error_reason: str
    def __init__(self, model: _Optional[str] = ..., provider: _Optional[str] = ..., outcome: _Optional[_Union[AttemptOutcome, str]] = ..., http_status: _Optional[int] = ..., error: _Optional[str] = ..., ttft_ms: _Optional[float] = ..., duration_ms: _Optional[float] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., cost_usd: _Optional[float] = ..., hedge: _Optional[bool] = ..., try_number: _Optional[int] = ..., error_reason: _Optional[str] = ...) -> None: ...

class Delta(_message.Message):
    __slots__ = ("text", "tool_calls")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    text: str
    tool_calls: _containers.RepeatedCompositeFieldContainer[ToolCallDelta]
    def __init__(self, text: _Optional[str] = ..., tool_calls: _Optional[_Iterable[_Union[ToolCallDelta, _Mapping]]] = ...) -> None: ...

class Feedback(_message.Message):
    __slots__ = ("decision_id", "score", "thumbs", "label", "comment")
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    THUMBS_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    decision_id: str
    score: float
    thumbs: Thumbs
    label: str
    comment: str
    def __init__(self, decision_id: _Optional[str] = ..., score: _Optional[float] = ..., thumbs: _Optional[_Union[Thumbs, str]] = ..., label: _Optional[str] = ..., comment: _Optional[str] = ...) -> None: ...

class FeedbackReceipt(_message.Message):
    __slots__ = ("decision_id", "score", "model", "recorded_at_ms")
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    RECORDED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    decision_id: str
    score: float
    model: str
    recorded_at_ms: int
    def __init__(self, decision_id: _Optional[str] = ..., score: _Optional[float] = ..., model: _Optional[str] = ..., recorded_at_ms: _Optional[int] = ...) -> None: ...
