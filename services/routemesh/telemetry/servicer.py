"""TelemetryService over gRPC: observations and request summaries in, health and experiment reports out."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence

import grpc

from routemesh.common.errors import InvalidRequest, LedgerNotConfigured, RoutemeshError
from routemesh.common.outcomes import AttemptOutcome, FinishStatus, ObservationPhase
from routemesh.common.policy_schema import CircuitSettings, Pricing
from routemesh.common.policy_watch import PolicyHolder
from routemesh.telemetry.alerts import AlertEngine
from routemesh.telemetry.ledger.feedback import FeedbackBook, task_name
from routemesh.telemetry.ledger.report import ledger_report_json
from routemesh.telemetry.quality_signals import InMemoryQualitySignals, QualitySignalStore
from routemesh.telemetry.ledger.rows import row_from_summary, texts_from_summaries
from routemesh.telemetry.ledger.writer import LedgerWriter
from routemesh.telemetry.experiments import RequestSummaryRecord, VariantStatsRecord
from routemesh.telemetry.policy_scope import PolicyScopedStore
from routemesh.telemetry.store import (
    DEFAULT_CIRCUIT,
    HealthStore,
    ModelStats,
    ObservationRecord,
    StoreUnavailable,
)
from routemesh.v1 import telemetry_pb2, telemetry_pb2_grpc

log = logging.getLogger(__name__)

# Executors and routers report in batches of 200 (common.reporter), but flush their whole queue, up to its
# capacity of 10,000, in one call when they stop: a smaller bound would refuse that last report.
MAX_OBSERVATIONS_PER_REPORT = 10_000
MAX_REQUESTS_PER_REPORT = 10_000
# Field problems an error lists (the rest are counted): a trailer must not grow with what a caller sent.
LISTED_VIOLATIONS = 10
# Models a snapshot request may name beyond the policy's own (a caller asking for the policy's models, plus
# a few it is curious about); more would make every answer as large as the caller liked.
MAX_REQUESTED_MODELS = 256
# Models outside the policy that a snapshot of "every model" lists: ones removed from the policy lately,
# whose traffic drains. Observations of other names are not recorded (policy_scope), but a store shared
# with a replica of an older build may hold any number of them.
MAX_OFF_POLICY_MODELS = 32
MAX_MODEL_NAME_LENGTH = 256
MAX_NAME_LENGTH = MAX_MODEL_NAME_LENGTH
# WatchSnapshot: while reports arrive, a router's health is at most one interval (plus the store's 0.2 s cache)
# old; with none since the last push, the next comes after a heartbeat (what changes with time alone, a
# breaker going half-open or samples leaving the window, and other replicas' reports, are that late at most).
DEFAULT_WATCH_INTERVAL_MS = 250
DEFAULT_WATCH_HEARTBEAT_MS = 2_000
MIN_WATCH_INTERVAL_MS = 50
MAX_WATCH_INTERVAL_MS = 60_000
# ListRecentRequests: summaries kept in memory, and how many an empty limit returns.
MAX_RECENT_REQUESTS = 500
DEFAULT_RECENT_REQUESTS = 50
DEFAULT_RESOLVED_ALERTS = 50


class TelemetryStoreUnavailable(RoutemeshError):
    """The store behind telemetry cannot be read, so there is no report to give."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "TELEMETRY_STORE_UNAVAILABLE"


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def record_from_proto(obs: telemetry_pb2.Observation, now_ms: int) -> ObservationRecord:
    """The store's record of an observation; a missing or future timestamp becomes now (clock skew)."""
    timestamp = obs.timestamp_ms if 0 < obs.timestamp_ms <= now_ms else now_ms
    # UNSPECIFIED (and any phase a newer executor sends) counts as finished, as the proto says.
    started = obs.phase == ObservationPhase.STARTED
    return ObservationRecord(
        model=obs.model,
        provider=obs.provider,
        phase=ObservationPhase.STARTED if started else ObservationPhase.FINISHED,
        outcome=AttemptOutcome.from_proto(obs.outcome),
        ttft_ms=obs.ttft_ms,
        tpot_ms=obs.tpot_ms,
        input_tokens=obs.usage.input_tokens,
        output_tokens=obs.usage.output_tokens,
        cost_usd=obs.cost_usd,
        timestamp_ms=timestamp,
        decision_id=obs.decision_id,
    )


def summary_from_proto(summary: telemetry_pb2.RequestSummary, now_ms: int) -> RequestSummaryRecord:
    """The store's record of a request summary; a missing or future timestamp becomes now (clock skew)."""
    timestamp = summary.timestamp_ms if 0 < summary.timestamp_ms <= now_ms else now_ms
    return RequestSummaryRecord(
        experiment=summary.experiment,
        variant=summary.variant,
        timestamp_ms=timestamp,
        decision_id=summary.decision_id,
        route=summary.route,
        model=summary.model,
        status=FinishStatus.from_proto(summary.status),
        ttft_ms=summary.ttft_ms,
        duration_ms=summary.duration_ms,
        cost_usd=summary.cost_usd,
        tenant=summary.tenant,
    )


def summary_violations(summaries: Sequence[telemetry_pb2.RequestSummary]) -> list[tuple[str, str]]:
    """(field path, problem) for every request summary the store could not use."""
    violations: list[tuple[str, str]] = []
    for i, summary in enumerate(summaries):
        where = f"requests[{i}]"
        for name in ("experiment", "variant", "model", "route", "tenant", "decision_id", "project", "user",
                     "api_key_id", "prompt_sha256"):
            if len(getattr(summary, name)) > MAX_NAME_LENGTH:
                violations.append((f"{where}.{name}", f"must be at most {MAX_NAME_LENGTH} characters"))
        if summary.experiment and not summary.variant:
            violations.append((f"{where}.variant", "must name the variant of the experiment"))
        for name in ("ttft_ms", "duration_ms", "cost_usd"):
            value = getattr(summary, name)
            if not math.isfinite(value) or value < 0:
                violations.append((f"{where}.{name}", "must be a finite number, 0 or more"))
    return violations


def observation_violations(observations: Sequence[telemetry_pb2.Observation]) -> list[tuple[str, str]]:
    """(field path, problem) for every observation the store could not use."""
    violations: list[tuple[str, str]] = []
    for i, obs in enumerate(observations):
        where = f"observations[{i}]"
        if not obs.model:
            violations.append((f"{where}.model", "must name the model the attempt used"))
        elif len(obs.model) > MAX_MODEL_NAME_LENGTH:
            violations.append((f"{where}.model", f"must be at most {MAX_MODEL_NAME_LENGTH} characters"))
        for name in ("ttft_ms", "tpot_ms", "cost_usd"):
            value = getattr(obs, name)
            if not math.isfinite(value) or value < 0:
                violations.append((f"{where}.{name}", "must be a finite number, 0 or more"))
        if obs.usage.input_tokens < 0 or obs.usage.output_tokens < 0:
            violations.append((f"{where}.usage", "token counts must not be negative"))
    return violations


def invalid(message: str, violations: list[tuple[str, str]]) -> InvalidRequest:
    """InvalidRequest listing at most LISTED_VIOLATIONS of `violations`, and saying how many there were."""
    if len(violations) > LISTED_VIOLATIONS:
        message += f" (the first {LISTED_VIOLATIONS} listed)"
    return InvalidRequest(message, field_violations=violations[:LISTED_VIOLATIONS])


def _check_model_names(models: Sequence[str], policy_model_count: int) -> None:
    limit = MAX_REQUESTED_MODELS + policy_model_count
    if len(models) > limit:
        raise InvalidRequest(f"{len(models):,} models asked for; at most {limit}",
                             field_violations=[("models", f"at most {limit} names; none asks for every model")])
    empty = [(f"models[{i}]", "must not be empty") for i, name in enumerate(models) if not name]
    if empty:
        raise invalid(f"{len(empty)} model name(s) empty", empty)


def circuit_history_shortfalls(settings: CircuitSettings, window_s: int) -> list[str]:
    """Why the store's sample window cannot replay the breaker faithfully; empty when it can."""
    problems = []
    if settings.window_s > window_s:
        problems.append(f"health.circuit.window_s ({settings.window_s:g} s) is longer than the telemetry window "
                        f"({window_s} s): the failure rate covers {window_s} s only")
    if settings.max_open_s > window_s:
        problems.append(f"health.circuit.max_open_s ({settings.max_open_s:g} s) is longer than the telemetry "
                        f"window ({window_s} s): a breaker open that long forgets why and closes")
    return problems


# Statuses that are a quality signal of 0 for the serving model's task (a failure is health, not quality).
AUTOMATIC_ZERO_STATUSES = frozenset({FinishStatus.TRUNCATED_UPSTREAM, FinishStatus.CONTENT_FILTER})


def health_to_proto(stats: ModelStats, pricing: Pricing | None) -> telemetry_pb2.ModelHealth:
    """ModelHealth from store stats; prices are 0 for a model the policy does not define."""
    circuit = stats.circuit
    return telemetry_pb2.ModelHealth(
        model=stats.model,
        samples=stats.samples,
        ttft_p50_ms=stats.ttft_p50_ms,
        ttft_p90_ms=stats.ttft_p90_ms,
        ttft_p99_ms=stats.ttft_p99_ms,
        tpot_p50_ms=stats.tpot_p50_ms,
        tpot_p99_ms=stats.tpot_p99_ms,
        error_rate=stats.error_rate,
        in_flight=stats.in_flight,
        requests_per_minute=stats.requests_per_minute,
        tokens_per_minute=stats.tokens_per_minute,
        input_price_per_mtok=pricing.input_per_mtok if pricing else 0.0,
        output_price_per_mtok=pricing.output_per_mtok if pricing else 0.0,
        spend_per_minute_usd=stats.spend_per_minute_usd,
        spend_total_usd=stats.spend_total_usd,
        last_observation_ms=stats.last_observation_ms,
        stale=stats.stale,
        circuit_state=circuit.state,
        circuit_open_until_ms=circuit.open_until_ms,
        admit_fraction=circuit.admit_fraction,
        consecutive_failures=circuit.consecutive_failures,
    )


def variant_to_proto(row: VariantStatsRecord) -> telemetry_pb2.VariantStats:
    return telemetry_pb2.VariantStats(
        experiment=row.experiment,
        variant=row.variant,
        requests=row.requests,
        errors=row.errors,
        ttft_p50_ms=row.ttft_p50_ms,
        ttft_p95_ms=row.ttft_p95_ms,
        duration_p50_ms=row.duration_p50_ms,
        duration_p95_ms=row.duration_p95_ms,
        cost_usd=row.cost_usd,
        models=row.models,
    )


class TelemetryServicer(telemetry_pb2_grpc.TelemetryServiceServicer):
    """Records what executors and routers report; answers with live health and experiment reports."""

    def __init__(self, store: HealthStore, holder: PolicyHolder, clock_ms: Callable[[], int] = wall_clock_ms,
                 ledger: LedgerWriter | None = None, signals: QualitySignalStore | None = None):
        # Each request summary also becomes a ledger row, buffered and written off this call (None: no ledger).
        self.ledger = ledger
        # Feedback and automatic quality signals per (model, task), pushed to routers in the snapshot.
        self.signals = signals or InMemoryQualitySignals()
        self.feedback = FeedbackBook(ledger, self._signal)
        # Observations reach the store only for models of the held policy (see PolicyScopedStore).
        self.store = store if isinstance(store, PolicyScopedStore) else PolicyScopedStore(store, holder)
        self.holder = holder
        self.clock_ms = clock_ms
        self._checked_circuit: CircuitSettings | None = None
        # The newest request summaries, for ListRecentRequests (the console's recent decisions).
        self.recent: deque[telemetry_pb2.RequestSummary] = deque(maxlen=MAX_RECENT_REQUESTS)
        # The policy's alert rules, evaluated off the request path (None: no alerting in this replica).
        self.alerts: AlertEngine | None = None
        # Set when the server drains: watch streams end, so a stop does not wait out its grace period on them.
        self._stopping = asyncio.Event()
        # Bumped by every report and feedback: a watch pushes again soon after one, else only on its heartbeat.
        self._changes = 0
        self._changed = asyncio.Event()

    def stop(self) -> None:
        """End every WatchSnapshot stream now (for shutdown: routers reconnect to another replica)."""
        self._stopping.set()
        self._changed.set()

    def _note_change(self) -> None:
        """Wake the watches waiting for a change (each waits on the event current when it started)."""
        self._changes += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def Report(
        self, request: telemetry_pb2.ReportRequest, context: grpc.aio.ServicerContext
    ) -> telemetry_pb2.ReportResponse:
        observations, summaries = request.observations, request.requests
        too_many = [(name, f"{len(items)} is too many; at most {limit}")
                    for name, items, limit in (("observations", observations, MAX_OBSERVATIONS_PER_REPORT),
                                               ("requests", summaries, MAX_REQUESTS_PER_REPORT))
                    if len(items) > limit]
        if too_many:
            raise InvalidRequest("a report carries too many items; nothing recorded",
                                 field_violations=too_many)
        violations = observation_violations(observations) + summary_violations(summaries)
        if violations:
            raise invalid(f"{len(violations)} invalid field(s); nothing recorded", violations)
        now_ms = self.clock_ms()
        if observations:
            await self.store.record([record_from_proto(obs, now_ms) for obs in observations])
        if summaries:
            self.recent.extend(summaries)
            if self.alerts is not None:
                self.alerts.observe_requests(summaries)
            await self.store.record_requests([summary_from_proto(summary, now_ms) for summary in summaries])
            if self.ledger is not None:
                self.ledger.add([row_from_summary(summary) for summary in summaries if summary.decision_id],
                                texts_from_summaries(summaries, now_ms))
            for summary in summaries:
                # An answer cut short or filtered is a bad answer for its task, whoever asks.
                if summary.model and summary.status in AUTOMATIC_ZERO_STATUSES:
                    await self._signal(summary.model, task_name(summary.decision.features.task_type), 0.0)
        if observations or summaries:
            self._note_change()
        return telemetry_pb2.ReportResponse(accepted=len(observations) + len(summaries))

    async def _signal(self, model: str, task: str, score: float) -> None:
        """One quality signal, for a model of the policy in force (others are not routed to)."""
        held = self.holder.current
        if held is None or model not in held.policy.models:
            return
        try:
            await self.signals.add(model, task, score)
        except Exception as exc:  # noqa: BLE001 - a lost signal is a smaller correction, never a failed call
            log.warning("quality signal for %s/%s not recorded: %s", model, task, exc)

    async def RecordFeedback(
        self, request: telemetry_pb2.RecordFeedbackRequest, context: grpc.aio.ServicerContext
    ) -> telemetry_pb2.RecordFeedbackResponse:
        receipt = await self.feedback.record(request.feedback, request.tenant)
        self._note_change()
        return telemetry_pb2.RecordFeedbackResponse(receipt=receipt)

    async def ListRecentRequests(
        self, request: telemetry_pb2.ListRecentRequestsRequest, context: grpc.aio.ServicerContext
    ) -> telemetry_pb2.ListRecentRequestsResponse:
        if not 0 <= request.limit <= MAX_RECENT_REQUESTS:
            raise InvalidRequest("limit out of range", field_violations=[
                ("limit", f"must be 0 to {MAX_RECENT_REQUESTS} (0 means {DEFAULT_RECENT_REQUESTS})")])
        limit = request.limit or DEFAULT_RECENT_REQUESTS
        reply = telemetry_pb2.ListRecentRequestsResponse()
        for summary in reversed(self.recent):
            if request.decision_id and summary.decision_id != request.decision_id:
                continue
            kept = reply.requests.add()
            kept.CopyFrom(summary)
            kept.ClearField("conversation_json")  # the text stays in the ledger, where the route opted in
            if len(reply.requests) >= limit:
                break
        return reply

    async def ListAlerts(
        self, request: telemetry_pb2.ListAlertsRequest, context: grpc.aio.ServicerContext
    ) -> telemetry_pb2.ListAlertsResponse:
        if self.alerts is None:
            return telemetry_pb2.ListAlertsResponse()
        return self.alerts.list(request.resolved_limit or DEFAULT_RESOLVED_ALERTS)

    async def GetLedgerReport(
        self, request: telemetry_pb2.GetLedgerReportRequest, context: grpc.aio.ServicerContext
    ) -> telemetry_pb2.GetLedgerReportResponse:
        if self.ledger is None:
            raise LedgerNotConfigured("this telemetry replica keeps no ledger (start it with --ledger-url)")
        since_ms = request.since_ms or self.clock_ms() - 24 * 3600 * 1000
        return telemetry_pb2.GetLedgerReportResponse(
            report_json=await ledger_report_json(self.ledger, self.holder, since_ms))

    async def GetSnapshot(
        self, request: telemetry_pb2.GetSnapshotRequest, context: grpc.aio.ServicerContext
    ) -> telemetry_pb2.GetSnapshotResponse:
        _check_model_names(request.models, self._policy_model_count())
        return await self._snapshot(request.models)

    async def WatchSnapshot(
        self, request: telemetry_pb2.WatchSnapshotRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[telemetry_pb2.WatchSnapshotResponse]:
        _check_model_names(request.models, self._policy_model_count())
        interval_ms = request.interval_ms or DEFAULT_WATCH_INTERVAL_MS
        if not MIN_WATCH_INTERVAL_MS <= interval_ms <= MAX_WATCH_INTERVAL_MS:
            raise InvalidRequest("watch interval out of range", field_violations=[(
                "interval_ms", f"must be {MIN_WATCH_INTERVAL_MS} to {MAX_WATCH_INTERVAL_MS} (got {interval_ms}); "
                               f"0 means {DEFAULT_WATCH_INTERVAL_MS}")])
        heartbeat_ms = request.heartbeat_ms or max(DEFAULT_WATCH_HEARTBEAT_MS, interval_ms)
        if not interval_ms <= heartbeat_ms <= MAX_WATCH_INTERVAL_MS:
            raise InvalidRequest("watch heartbeat out of range", field_violations=[(
                "heartbeat_ms", f"must be interval_ms ({interval_ms}) to {MAX_WATCH_INTERVAL_MS} (got {heartbeat_ms}); "
                                f"0 means {DEFAULT_WATCH_HEARTBEAT_MS}")])
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            seen, pushed_at = self._changes, loop.time()
            # Watchers share the store's snapshot cache, so many routers cost about as much as one.
            yield telemetry_pb2.WatchSnapshotResponse(snapshot=await self._snapshot(request.models))
            await self._until_next_push(seen, pushed_at + interval_ms / 1000, pushed_at + heartbeat_ms / 1000)

    async def _until_next_push(self, seen: int, earliest: float, heartbeat_at: float) -> None:
        """Wait until `earliest` (at most one push per interval), then until a change since `seen` or the heartbeat;
        sooner when the server stops. Idle, a watch wakes once a heartbeat."""
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            now = loop.time()
            if now >= heartbeat_at or (now >= earliest and self._changes != seen):
                return
            wake_at = earliest if self._changes != seen else heartbeat_at
            try:
                await asyncio.wait_for(self._changed.wait(), wake_at - now)
            except TimeoutError:
                pass

    def _policy_model_count(self) -> int:
        held = self.holder.current
        return len(held.policy.models) if held else 0

    async def _snapshot(self, models: Sequence[str]) -> telemetry_pb2.GetSnapshotResponse:
        now_ms = self.clock_ms()
        held = self.holder.current
        policy_models = held.policy.models if held else {}
        if not models:
            seen = await self.store.seen_models(now_ms)
            off_policy = [name for name in seen if name not in policy_models][:MAX_OFF_POLICY_MODELS]
            models = sorted({*policy_models, *off_policy})
        names = list(models)
        circuit = held.policy.health.circuit if held else DEFAULT_CIRCUIT
        self._check_history(circuit)
        stats = await self.store.snapshot(names, now_ms, circuit)
        signals = await self.signals.signals([n for n in dict.fromkeys(names) if n in policy_models])
        entries = []
        for name in dict.fromkeys(names):
            model = policy_models.get(name)
            entry = health_to_proto(stats.get(name) or ModelStats(model=name), model.pricing if model else None)
            for task, (total, count) in signals.get(name, {}).items():
                entry.quality_signals[task].CopyFrom(telemetry_pb2.QualitySignals(score_sum=total, count=count))
            entries.append(entry)
        ledger = self.ledger.stats if self.ledger is not None else None
        return telemetry_pb2.GetSnapshotResponse(
            models=entries,
            window_seconds=self.store.window_s,
            taken_at_ms=now_ms,
            policy_version=held.version if held else 0,
            ledger=telemetry_pb2.LedgerStatus(written=ledger.written, buffered=ledger.buffered,
                                              dropped=ledger.dropped, healthy=ledger.healthy,
                                              last_error=ledger.last_error) if ledger is not None else None,
        )

    def _check_history(self, circuit: CircuitSettings) -> None:
        """Warn once per circuit settings when the store keeps too little history to replay the breaker."""
        if circuit is self._checked_circuit:
            return
        self._checked_circuit = circuit
        for problem in circuit_history_shortfalls(circuit, self.store.window_s):
            log.warning("%s (raise --window-s)", problem)

    async def GetExperimentReport(
        self, request: telemetry_pb2.GetExperimentReportRequest, context: grpc.aio.ServicerContext
    ) -> telemetry_pb2.GetExperimentReportResponse:
        if len(request.experiment) > MAX_NAME_LENGTH:
            too_long = ("experiment", f"must be at most {MAX_NAME_LENGTH} characters")
            raise InvalidRequest("experiment name too long", field_violations=[too_long])
        try:
            rows = await self.store.experiment_report(request.experiment or None, self.clock_ms())
        except StoreUnavailable as exc:
            raise TelemetryStoreUnavailable(f"telemetry cannot read its store: {exc}") from exc
        return telemetry_pb2.GetExperimentReportResponse(
            variants=[variant_to_proto(row) for row in rows],
            window_seconds=self.store.window_s,
        )
