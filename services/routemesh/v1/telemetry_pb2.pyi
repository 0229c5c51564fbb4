from routemesh.v1 import common_pb2 as _common_pb2
from routemesh.v1 import router_pb2 as _router_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ObservationPhase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OBSERVATION_PHASE_UNSPECIFIED: _ClassVar[ObservationPhase]
    OBSERVATION_PHASE_STARTED: _ClassVar[ObservationPhase]
    OBSERVATION_PHASE_FINISHED: _ClassVar[ObservationPhase]

class CircuitState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CIRCUIT_STATE_UNSPECIFIED: _ClassVar[CircuitState]
    CIRCUIT_STATE_CLOSED: _ClassVar[CircuitState]
    CIRCUIT_STATE_OPEN: _ClassVar[CircuitState]
    CIRCUIT_STATE_HALF_OPEN: _ClassVar[CircuitState]

class AlertState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ALERT_STATE_UNSPECIFIED: _ClassVar[AlertState]
    ALERT_STATE_FIRING: _ClassVar[AlertState]
    ALERT_STATE_RESOLVED: _ClassVar[AlertState]
OBSERVATION_PHASE_UNSPECIFIED: ObservationPhase
OBSERVATION_PHASE_STARTED: ObservationPhase
OBSERVATION_PHASE_FINISHED: ObservationPhase
CIRCUIT_STATE_UNSPECIFIED: CircuitState
CIRCUIT_STATE_CLOSED: CircuitState
CIRCUIT_STATE_OPEN: CircuitState
CIRCUIT_STATE_HALF_OPEN: CircuitState
ALERT_STATE_UNSPECIFIED: AlertState
ALERT_STATE_FIRING: AlertState
ALERT_STATE_RESOLVED: AlertState

class Observation(_message.Message):
    __slots__ = ("model", "provider", "phase", "outcome", "ttft_ms", "tpot_ms", "usage", "cost_usd", "timestamp_ms", "decision_id")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    TTFT_MS_FIELD_NUMBER: _ClassVar[int]
    TPOT_MS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    model: str
    provider: str
    phase: ObservationPhase
    outcome: _common_pb2.AttemptOutcome
    ttft_ms: float
    tpot_ms: float
    usage: _common_pb2.Usage
    cost_usd: float
    timestamp_ms: int
    decision_id: str
    def __init__(self, model: _Optional[str] = ..., provider: _Optional[str] = ..., phase: _Optional[_Union[ObservationPhase, str]] = ..., outcome: _Optional[_Union[_common_pb2.AttemptOutcome, str]] = ..., ttft_ms: _Optional[float] = ..., tpot_ms: _Optional[float] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ..., cost_usd: _Optional[float] = ..., timestamp_ms: _Optional[int] = ..., decision_id: _Optional[str] = ...) -> None: ...

class RequestSummary(_message.Message):
    __slots__ = ("decision_id", "route", "experiment", "variant", "model", "status", "ttft_ms", "duration_ms", "cost_usd", "tenant", "timestamp_ms", "decision", "final", "project", "user", "api_key_id", "prompt_sha256", "conversation_json", "text_retention_days")
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TTFT_MS_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    API_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_SHA256_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_JSON_FIELD_NUMBER: _ClassVar[int]
    TEXT_RETENTION_DAYS_FIELD_NUMBER: _ClassVar[int]
    decision_id: str
    route: str
    experiment: str
    variant: str
    model: str
    status: _common_pb2.FinishStatus
    ttft_ms: float
    duration_ms: float
    cost_usd: float
    tenant: str
    timestamp_ms: int
    decision: _router_pb2.Decision
    final: _router_pb2.Final
    project: str
    user: str
    api_key_id: str
    prompt_sha256: str
    conversation_json: str
    text_retention_days: int
    def __init__(self, decision_id: _Optional[str] = ..., route: _Optional[str] = ..., experiment: _Optional[str] = ..., variant: _Optional[str] = ..., model: _Optional[str] = ..., status: _Optional[_Union[_common_pb2.FinishStatus, str]] = ..., ttft_ms: _Optional[float] = ..., duration_ms: _Optional[float] = ..., cost_usd: _Optional[float] = ..., tenant: _Optional[str] = ..., timestamp_ms: _Optional[int] = ..., decision: _Optional[_Union[_router_pb2.Decision, _Mapping]] = ..., final: _Optional[_Union[_router_pb2.Final, _Mapping]] = ..., project: _Optional[str] = ..., user: _Optional[str] = ..., api_key_id: _Optional[str] = ..., prompt_sha256: _Optional[str] = ..., conversation_json: _Optional[str] = ..., text_retention_days: _Optional[int] = ...) -> None: ...

class ReportRequest(_message.Message):
    __slots__ = ("observations", "requests")
    OBSERVATIONS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    observations: _containers.RepeatedCompositeFieldContainer[Observation]
    requests: _containers.RepeatedCompositeFieldContainer[RequestSummary]
    def __init__(self, observations: _Optional[_Iterable[_Union[Observation, _Mapping]]] = ..., requests: _Optional[_Iterable[_Union[RequestSummary, _Mapping]]] = ...) -> None: ...

class ReportResponse(_message.Message):
    __slots__ = ("accepted",)
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    def __init__(self, accepted: _Optional[int] = ...) -> None: ...

class GetSnapshotRequest(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, models: _Optional[_Iterable[str]] = ...) -> None: ...

class GetSnapshotResponse(_message.Message):
    __slots__ = ("models", "window_seconds", "taken_at_ms", "policy_version", "ledger")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TAKEN_AT_MS_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    LEDGER_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelHealth]
    window_seconds: int
    taken_at_ms: int
    policy_version: int
    ledger: LedgerStatus
    def __init__(self, models: _Optional[_Iterable[_Union[ModelHealth, _Mapping]]] = ..., window_seconds: _Optional[int] = ..., taken_at_ms: _Optional[int] = ..., policy_version: _Optional[int] = ..., ledger: _Optional[_Union[LedgerStatus, _Mapping]] = ...) -> None: ...

class LedgerStatus(_message.Message):
    __slots__ = ("written", "buffered", "dropped", "healthy", "last_error")
    WRITTEN_FIELD_NUMBER: _ClassVar[int]
    BUFFERED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    written: int
    buffered: int
    dropped: int
    healthy: bool
    last_error: str
    def __init__(self, written: _Optional[int] = ..., buffered: _Optional[int] = ..., dropped: _Optional[int] = ..., healthy: _Optional[bool] = ..., last_error: _Optional[str] = ...) -> None: ...

class WatchSnapshotRequest(_message.Message):
    __slots__ = ("models", "interval_ms", "heartbeat_ms")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_MS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedScalarFieldContainer[str]
    interval_ms: int
    heartbeat_ms: int
    def __init__(self, models: _Optional[_Iterable[str]] = ..., interval_ms: _Optional[int] = ..., heartbeat_ms: _Optional[int] = ...) -> None: ...

class WatchSnapshotResponse(_message.Message):
    __slots__ = ("snapshot",)
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    snapshot: GetSnapshotResponse
    def __init__(self, snapshot: _Optional[_Union[GetSnapshotResponse, _Mapping]] = ...) -> None: ...

class ModelHealth(_message.Message):
    __slots__ = ("model", "samples", "ttft_p50_ms", "ttft_p90_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p99_ms", "error_rate", "in_flight", "requests_per_minute", "tokens_per_minute", "input_price_per_mtok", "output_price_per_mtok", "spend_per_minute_usd", "spend_total_usd", "last_observation_ms", "stale", "circuit_state", "circuit_open_until_ms", "admit_fraction", "consecutive_failures", "quality_signals")
    class QualitySignalsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: QualitySignals
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[QualitySignals, _Mapping]] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    TTFT_P50_MS_FIELD_NUMBER: _ClassVar[int]
    TTFT_P90_MS_FIELD_NUMBER: _ClassVar[int]
    TTFT_P99_MS_FIELD_NUMBER: _ClassVar[int]
    TPOT_P50_MS_FIELD_NUMBER: _ClassVar[int]
    TPOT_P99_MS_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    INPUT_PRICE_PER_MTOK_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_PRICE_PER_MTOK_FIELD_NUMBER: _ClassVar[int]
    SPEND_PER_MINUTE_USD_FIELD_NUMBER: _ClassVar[int]
    SPEND_TOTAL_USD_FIELD_NUMBER: _ClassVar[int]
    LAST_OBSERVATION_MS_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    CIRCUIT_STATE_FIELD_NUMBER: _ClassVar[int]
    CIRCUIT_OPEN_UNTIL_MS_FIELD_NUMBER: _ClassVar[int]
    ADMIT_FRACTION_FIELD_NUMBER: _ClassVar[int]
    CONSECUTIVE_FAILURES_FIELD_NUMBER: _ClassVar[int]
    QUALITY_SIGNALS_FIELD_NUMBER: _ClassVar[int]
    model: str
    samples: int
    ttft_p50_ms: float
    ttft_p90_ms: float
    ttft_p99_ms: float
    tpot_p50_ms: float
    tpot_p99_ms: float
    error_rate: float
    in_flight: int
    requests_per_minute: int
    tokens_per_minute: int
    input_price_per_mtok: float
    output_price_per_mtok: float
    spend_per_minute_usd: float
    spend_total_usd: float
    last_observation_ms: int
    stale: bool
    circuit_state: CircuitState
    circuit_open_until_ms: int
    admit_fraction: float
    consecutive_failures: int
    quality_signals: _containers.MessageMap[str, QualitySignals]
    def __init__(self, model: _Optional[str] = ..., samples: _Optional[int] = ..., ttft_p50_ms: _Optional[float] = ..., ttft_p90_ms: _Optional[float] = ..., ttft_p99_ms: _Optional[float] = ..., tpot_p50_ms: _Optional[float] = ..., tpot_p99_ms: _Optional[float] = ..., error_rate: _Optional[float] = ..., in_flight: _Optional[int] = ..., requests_per_minute: _Optional[int] = ..., tokens_per_minute: _Optional[int] = ..., input_price_per_mtok: _Optional[float] = ..., output_price_per_mtok: _Optional[float] = ..., spend_per_minute_usd: _Optional[float] = ..., spend_total_usd: _Optional[float] = ..., last_observation_ms: _Optional[int] = ..., stale: _Optional[bool] = ..., circuit_state: _Optional[_Union[CircuitState, str]] = ..., circuit_open_until_ms: _Optional[int] = ..., admit_fraction: _Optional[float] = ..., consecutive_failures: _Optional[int] = ..., quality_signals: _Optional[_Mapping[str, QualitySignals]] = ...) -> None: ...

class GetExperimentReportRequest(_message.Message):
    __slots__ = ("experiment",)
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    experiment: str
    def __init__(self, experiment: _Optional[str] = ...) -> None: ...

class GetExperimentReportResponse(_message.Message):
    __slots__ = ("variants", "window_seconds")
    VARIANTS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    variants: _containers.RepeatedCompositeFieldContainer[VariantStats]
    window_seconds: int
    def __init__(self, variants: _Optional[_Iterable[_Union[VariantStats, _Mapping]]] = ..., window_seconds: _Optional[int] = ...) -> None: ...

class VariantStats(_message.Message):
    __slots__ = ("experiment", "variant", "requests", "errors", "ttft_p50_ms", "ttft_p95_ms", "duration_p50_ms", "duration_p95_ms", "cost_usd", "models")
    class ModelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    TTFT_P50_MS_FIELD_NUMBER: _ClassVar[int]
    TTFT_P95_MS_FIELD_NUMBER: _ClassVar[int]
    DURATION_P50_MS_FIELD_NUMBER: _ClassVar[int]
    DURATION_P95_MS_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    experiment: str
    variant: str
    requests: int
    errors: int
    ttft_p50_ms: float
    ttft_p95_ms: float
    duration_p50_ms: float
    duration_p95_ms: float
    cost_usd: float
    models: _containers.ScalarMap[str, int]
    def __init__(self, experiment: _Optional[str] = ..., variant: _Optional[str] = ..., requests: _Optional[int] = ..., errors: _Optional[int] = ..., ttft_p50_ms: _Optional[float] = ..., ttft_p95_ms: _Optional[float] = ..., duration_p50_ms: _Optional[float] = ..., duration_p95_ms: _Optional[float] = ..., cost_usd: _Optional[float] = ..., models: _Optional[_Mapping[str, int]] = ...) -> None: ...

class RecordFeedbackRequest(_message.Message):
    __slots__ = ("feedback", "tenant")
    FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    feedback: _common_pb2.Feedback
    tenant: str
    def __init__(self, feedback: _Optional[_Union[_common_pb2.Feedback, _Mapping]] = ..., tenant: _Optional[str] = ...) -> None: ...

class RecordFeedbackResponse(_message.Message):
    __slots__ = ("receipt",)
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    receipt: _common_pb2.FeedbackReceipt
    def __init__(self, receipt: _Optional[_Union[_common_pb2.FeedbackReceipt, _Mapping]] = ...) -> None: ...

class QualitySignals(_message.Message):
    __slots__ = ("score_sum", "count")
    SCORE_SUM_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    score_sum: float
    count: int
    def __init__(self, score_sum: _Optional[float] = ..., count: _Optional[int] = ...) -> None: ...

class Alert(_message.Message):
    __slots__ = ("rule", "kind", "severity", "subject", "state", "value", "threshold", "started_at_ms", "resolved_at_ms", "summary", "fingerprint")
    RULE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    rule: str
    kind: str
    severity: str
    subject: str
    state: AlertState
    value: float
    threshold: float
    started_at_ms: int
    resolved_at_ms: int
    summary: str
    fingerprint: str
    def __init__(self, rule: _Optional[str] = ..., kind: _Optional[str] = ..., severity: _Optional[str] = ..., subject: _Optional[str] = ..., state: _Optional[_Union[AlertState, str]] = ..., value: _Optional[float] = ..., threshold: _Optional[float] = ..., started_at_ms: _Optional[int] = ..., resolved_at_ms: _Optional[int] = ..., summary: _Optional[str] = ..., fingerprint: _Optional[str] = ...) -> None: ...

class ListAlertsRequest(_message.Message):
    __slots__ = ("resolved_limit",)
    RESOLVED_LIMIT_FIELD_NUMBER: _ClassVar[int]
    resolved_limit: int
    def __init__(self, resolved_limit: _Optional[int] = ...) -> None: ...

class ListAlertsResponse(_message.Message):
    __slots__ = ("firing", "resolved")
    FIRING_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_FIELD_NUMBER: _ClassVar[int]
    firing: _containers.RepeatedCompositeFieldContainer[Alert]
    resolved: _containers.RepeatedCompositeFieldContainer[Alert]
    def __init__(self, firing: _Optional[_Iterable[_Union[Alert, _Mapping]]] = ..., resolved: _Optional[_Iterable[_Union[Alert, _Mapping]]] = ...) -> None: ...

class ListRecentRequestsRequest(_message.Message):
    __slots__ = ("limit", "decision_id")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    limit: int
    decision_id: str
    def __init__(self, limit: _Optional[int] = ..., decision_id: _Optional[str] = ...) -> None: ...

class ListRecentRequestsResponse(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[RequestSummary]
    def __init__(self, requests: _Optional[_Iterable[_Union[RequestSummary, _Mapping]]] = ...) -> None: ...

class GetLedgerReportRequest(_message.Message):
    __slots__ = ("since_ms",)
    SINCE_MS_FIELD_NUMBER: _ClassVar[int]
    since_ms: int
    def __init__(self, since_ms: _Optional[int] = ...) -> None: ...

class GetLedgerReportResponse(_message.Message):
    __slots__ = ("report_json",)
    REPORT_JSON_FIELD_NUMBER: _ClassVar[int]
    report_json: str
    def __init__(self, report_json: _Optional[str] = ...) -> None: ...
