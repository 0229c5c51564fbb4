from routemesh.v1 import common_pb2 as _common_pb2
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
OBSERVATION_PHASE_UNSPECIFIED: ObservationPhase
OBSERVATION_PHASE_STARTED: ObservationPhase
OBSERVATION_PHASE_FINISHED: ObservationPhase

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

class ReportRequest(_message.Message):
    __slots__ = ("observations",)
    OBSERVATIONS_FIELD_NUMBER: _ClassVar[int]
    observations: _containers.RepeatedCompositeFieldContainer[Observation]
    def __init__(self, observations: _Optional[_Iterable[_Union[Observation, _Mapping]]] = ...) -> None: ...

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
    __slots__ = ("models", "window_seconds", "taken_at_ms", "policy_version")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TAKEN_AT_MS_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelHealth]
    window_seconds: int
    taken_at_ms: int
    policy_version: int
    def __init__(self, models: _Optional[_Iterable[_Union[ModelHealth, _Mapping]]] = ..., window_seconds: _Optional[int] = ..., taken_at_ms: _Optional[int] = ..., policy_version: _Optional[int] = ...) -> None: ...

class ModelHealth(_message.Message):
    __slots__ = ("model", "samples", "ttft_p50_ms", "ttft_p90_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p99_ms", "error_rate", "in_flight", "requests_per_minute", "tokens_per_minute", "input_price_per_mtok", "output_price_per_mtok", "spend_per_minute_usd", "spend_total_usd")
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
    def __init__(self, model: _Optional[str] = ..., samples: _Optional[int] = ..., ttft_p50_ms: _Optional[float] = ..., ttft_p90_ms: _Optional[float] = ..., ttft_p99_ms: _Optional[float] = ..., tpot_p50_ms: _Optional[float] = ..., tpot_p99_ms: _Optional[float] = ..., error_rate: _Optional[float] = ..., in_flight: _Optional[int] = ..., requests_per_minute: _Optional[int] = ..., tokens_per_minute: _Optional[int] = ..., input_price_per_mtok: _Optional[float] = ..., output_price_per_mtok: _Optional[float] = ..., spend_per_minute_usd: _Optional[float] = ..., spend_total_usd: _Optional[float] = ...) -> None: ...
