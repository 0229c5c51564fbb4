"""Runs a plan: candidates in order (with retries, hedging and breakers) until one commits, then streams it."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from routemesh.common.circuit import LocalCircuitBreaker, counts_as_failure
from routemesh.common.errors import DeadlineExceeded, InvalidRequest, UpstreamUnavailable
from routemesh.common.outcomes import AttemptOutcome, FinishStatus
from routemesh.common.policy import PolicyVersion
from routemesh.common.policy_schema import CircuitSettings
from routemesh.common.policy_watch import PolicyHolder
from routemesh.executor.attempt import CUT_SHORT, AttemptEvent, AttemptRecord, AttemptRunner, ToolPiece
from routemesh.executor.http import HttpClient
from routemesh.executor.policy_versions import PolicyVersions, cost_in, resolve
from routemesh.executor.retry import RetryBudget, backoff_s

__all__ = ["AttemptRecord", "ExecutionEngine", "ExecutionInput", "ExecutionOutcome", "ExecutionSettings",
           "ToolPiece", "check_plan", "plan_limit"]

# Failures worth trying the same model again for (when no other candidate is left).
RETRYABLE = frozenset({AttemptOutcome.RATE_LIMITED, AttemptOutcome.UPSTREAM_ERROR, AttemptOutcome.CONNECT_ERROR,
                       AttemptOutcome.TIMEOUT})
# ...unless the provider said why, and trying again cannot help.
NOT_RETRYABLE_REASONS = {"context_length", "auth", "content_policy", "not_found"}
# How a request ends when its committed attempt failed (any other failure: FAILED).
STATUS_OF_FAILURE = {AttemptOutcome.TRUNCATED: FinishStatus.TRUNCATED_UPSTREAM,
                     AttemptOutcome.TIMEOUT: FinishStatus.TRUNCATED_UPSTREAM,
                     AttemptOutcome.CANCELLED: FinishStatus.CANCELLED}
# Statuses that need no error text; any other says why the answer fell short (a content filter's too).
ANSWERED = frozenset({FinishStatus.COMPLETE, FinishStatus.LENGTH, FinishStatus.CONTINUED, FinishStatus.TOOL_CALLS})
CONTINUE_PROMPT = "Continue your previous answer exactly where it stopped. Do not repeat anything."
# A router's plan names each model at most once, all from the plan's policy version (router/decision/planner.py
# finish(): the route's ordered pool, then its fallbacks not already in it), so a valid plan is never longer than
# that version's model count. Plans up to this many are taken whatever the policy (a caller without a version,
# a test naming an unknown model: each such name becomes a config_error attempt, as it always did).
MIN_PLAN_LIMIT = 32
# Policy model names match policy_schema._NAME (at most 128 characters): a longer one can name no model.
MAX_MODEL_NAME_LENGTH = 128
# Attempts (or field problems) an error lists by name; the rest are counted. Error text goes into a gRPC
# trailer, a span status and the router's logs, so it must not grow with what a caller sent. (Each attempt's
# own error text is bounded already: a model name of at most 128 characters, a provider's message of 200.)
LISTED_IN_ERRORS = 10


@dataclass
class ExecutionOutcome:
    """The summary of an execution; the last item an execution yields."""

    status: FinishStatus
    model: str = ""
    provider: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    usage_estimated: bool = False
    cost_usd: float = 0.0
    attempts: list[AttemptRecord] = field(default_factory=list)
    error: str = ""
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0


@dataclass(frozen=True)
class ExecutionSettings:
    """The route's reliability settings (ExecutionOptions)."""

    max_tries_per_model: int = 2
    backoff_initial_ms: int = 100
    backoff_max_ms: int = 2000
    hedge_after_ms: int = 0
    continue_on_truncation: bool = False


@dataclass(frozen=True)
class ExecutionInput:
    """A chat and its plan, as the router sends it; policy version 0 means "the current policy"."""

    messages: list[dict]
    plan: list[str]
    max_tokens: int
    temperature: float | None = None
    decision_id: str = ""
    estimated_input_tokens: int = 0
    settings: ExecutionSettings = ExecutionSettings()
    tools: list[dict] | None = None
    tool_choice: str = ""
    response_format: str = ""
    policy_version: int = 0
    policy_digest: str = ""


Observer = Callable[[AttemptRecord, bool, str], None]  # (record, finished, decision_id)
AttemptsDone = Callable[[Sequence[AttemptRecord]], None]  # an execution's attempts, all final


def plan_limit(policy: PolicyVersion) -> int:
    """The most models a plan made with `policy` may name: its model count, and never under MIN_PLAN_LIMIT."""
    return max(MIN_PLAN_LIMIT, len(policy.policy.models))


def check_plan(plan: Sequence[str], policy: PolicyVersion) -> None:
    """Raise InvalidRequest for a plan longer than any of `policy`'s could be, or naming impossible models.

    Checked before anything is copied or resolved: an execution's work (and every error it builds) grows with
    the plan, and a plan of 100,000 names once cost 85 MB and a 17 MB error trailer.
    """
    limit = plan_limit(policy)
    if len(plan) > limit:
        raise InvalidRequest(
            f"the plan names {len(plan):,} models; at most {limit} (policy version {policy.version} has "
            f"{len(policy.policy.models)})",
            field_violations=[("plan", f"at most {limit} models")])
    too_long = [i for i, name in enumerate(plan) if len(name) > MAX_MODEL_NAME_LENGTH]
    if too_long:
        violations = [(f"plan[{i}]", f"model names are at most {MAX_MODEL_NAME_LENGTH} characters")
                      for i in too_long[:LISTED_IN_ERRORS]]
        raise InvalidRequest(f"{len(too_long)} plan entries are too long to name a model"
                             + listed_note(len(too_long)), field_violations=violations)


def listed_note(count: int) -> str:
    """What an error adds when it lists only the first LISTED_IN_ERRORS of `count` items."""
    return f" (the first {LISTED_IN_ERRORS} listed)" if count > LISTED_IN_ERRORS else ""


class ExecutionEngine:
    """Runs plans against the executor's own copy of the policy version each was made with (never trusts URLs
    from callers); an execution looks its version up once, so a rollout in mid-answer changes nothing in it."""

    def __init__(self, holder: PolicyHolder[PolicyVersion], client: HttpClient, observe: Observer,
                 environ: Mapping[str, str] | None = None, rng: random.Random | None = None,
                 attempts_done: AttemptsDone | None = None):
        self.holder = holder
        # Called with each execution's attempts when it ends (the metrics; None: nothing to call).
        self.attempts_done = attempts_done
        self.versions = PolicyVersions(holder)
        self.client = client
        self.environ = os.environ if environ is None else environ
        self.rng = rng or random.Random()
        self._observe = observe
        self._breakers: dict[str, LocalCircuitBreaker] = {}
        self._budgets: dict[str, RetryBudget] = {}
        self._failed_since: dict[str, int] = {}  # model -> start time (ms) of its latest failed attempt

    # ---- per-model state -------------------------------------------------------------------------------

    def _circuit_settings(self) -> CircuitSettings:
        current = self.holder.current
        return current.policy.health.circuit if current else CircuitSettings()

    def breaker(self, model: str) -> LocalCircuitBreaker:
        breaker = self._breakers.get(model)
        if breaker is None:
            breaker = self._breakers[model] = LocalCircuitBreaker(self._circuit_settings())
        return breaker

    def budget(self, model: str) -> RetryBudget:
        return self._budgets.setdefault(model, RetryBudget())

    def observe(self, record: AttemptRecord, finished: bool, decision_id: str) -> None:
        # The breaker judges outcomes as telemetry's does; cancellations and the like say nothing.
        failed = counts_as_failure(record.outcome) if finished else None
        if failed is not None:
            now_ms = int(time.time() * 1000)
            started_ms = now_ms - int(record.duration_ms)
            failed_since = self._failed_since.get(record.model, 0)
            if failed:
                self._failed_since[record.model] = max(failed_since, started_ms)
                self.breaker(record.model).record(False, now_ms)
            elif started_ms >= failed_since:
                # A success that started before the latest failure says nothing about the provider now.
                self.breaker(record.model).record(True, now_ms)
        self._observe(record, finished, decision_id)

    # ---- execution -------------------------------------------------------------------------------------

    def check_plan(self, plan: Sequence[str], version: int = 0, digest: str = "") -> PolicyVersion:
        """The plan's policy version, after refusing a plan no router could have made from it (see check_plan)."""
        policy = self.versions.for_plan(version, digest)
        check_plan(plan, policy)
        return policy

    async def execute(self, request: ExecutionInput,
                      deadline: float | None) -> AsyncIterator[str | ToolPiece | ExecutionOutcome]:
        """Yield text and tool-call pieces, then one ExecutionOutcome; raise UpstreamUnavailable if nothing commits."""
        async for batch in self.execute_batches(request, deadline):
            for item in batch:
                yield item

    async def execute_batches(self, request: ExecutionInput,
                              deadline: float | None) -> AsyncIterator[list[str | ToolPiece | ExecutionOutcome]]:
        """execute() in batches: every piece that arrived while the caller was busy comes as one list."""
        policy = self.check_plan(request.plan, request.policy_version, request.policy_digest)
        if not request.plan:
            raise InvalidRequest("plan must name at least one model", field_violations=[("plan", "empty")])
        run = _Execution(self, request, policy, deadline)
        try:
            async for batch in run.stream():
                yield batch
        finally:
            await run.stop()


class _Execution:
    """The state of one Execute call: candidates left, runners in flight, attempts made."""

    def __init__(self, engine: ExecutionEngine, request: ExecutionInput, policy: PolicyVersion,
                 deadline: float | None):
        self.engine = engine
        self.request = request
        self.policy = policy  # the plan's version: every resolution, price and context window comes from it
        self.settings = request.settings
        self.deadline = deadline
        self.queue: asyncio.Queue[AttemptEvent] = asyncio.Queue()
        self.pending = deque(request.plan)
        self.running: list[AttemptRunner] = []
        self.abandoned: list[AttemptRunner] = []  # cancelled losers, awaited in stop()
        self.attempts: list[AttemptRecord] = []
        self.tries: dict[str, int] = {}
        self.last_failed: AttemptRecord | None = None

    def _remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def _launch(self, name: str, messages: list[dict], *, hedge: bool = False) -> AttemptRunner | None:
        """Start one attempt of `name`, or record why it was skipped and return None."""
        engine = self.engine
        target, record = resolve(self.policy, name, engine.environ)
        record.try_number = self.tries[name] = self.tries.get(name, 0) + 1
        record.hedge = hedge
        self.attempts.append(record)
        if target is None:
            return None
        now_ms = int(time.time() * 1000)
        if not engine.breaker(name).allow(now_ms, engine.rng.random()):
            record.outcome, record.error = AttemptOutcome.CIRCUIT_OPEN, "circuit breaker open in this executor"
            return None
        engine.budget(name).on_request()
        runner = AttemptRunner(
            client=engine.client, target=target, record=record, messages=messages,
            max_tokens=self.request.max_tokens, temperature=self.request.temperature, deadline=self.deadline,
            queue=self.queue, index=len(self.attempts) - 1, decision_id=self.request.decision_id,
            estimated_input_tokens=self.request.estimated_input_tokens, cost=self._cost, observe=engine.observe,
            tools=self.request.tools, tool_choice=self.request.tool_choice,
            response_format=self.request.response_format,
        )
        runner.start()
        self.running.append(runner)
        return runner

    def _prefer_longer_context(self) -> None:
        """After a provider said the prompt is too long, try models with a larger context window first."""
        failed = self.last_failed
        if failed is None or failed.reason != "context_length" or not self.pending:
            return
        models = self.policy.policy.models
        limit = models[failed.model].context_window if failed.model in models else 0
        bigger = [m for m in self.pending if m in models and models[m].context_window > limit]
        self.pending = deque(bigger + [m for m in self.pending if m not in bigger])

    def _cost(self, model: str, input_tokens: int, output_tokens: int) -> float:
        return cost_in(self.policy, model, input_tokens, output_tokens)

    async def _next(self, messages: list[dict]) -> AttemptRunner | None:
        """The next candidate, or a paced retry of the last one when no other is left."""
        self._prefer_longer_context()
        while self.pending:
            runner = self._launch(self.pending.popleft(), messages)
            if runner is not None:
                return runner
        failed = self.last_failed
        if failed is None or failed.outcome not in RETRYABLE or failed.reason in NOT_RETRYABLE_REASONS:
            return None
        name = failed.model
        if self.tries.get(name, 0) >= self.settings.max_tries_per_model:
            return None
        if not self.engine.budget(name).try_spend():
            skipped = AttemptRecord(model=name, provider=failed.provider,
                                    outcome=AttemptOutcome.RETRY_BUDGET_EXHAUSTED,
                                    error="retry budget of this model is spent", try_number=self.tries[name] + 1)
            self.attempts.append(skipped)
            return None
        wait = backoff_s(self.tries[name] + 1, self.settings.backoff_initial_ms, self.settings.backoff_max_ms,
                         self.engine.rng, failed.retry_after_s)
        remaining = self._remaining()
        if remaining is not None and wait >= remaining:
            return None
        await asyncio.sleep(wait)
        self.last_failed = None
        return self._launch(name, messages)

    async def _commit(self, messages: list[dict]) -> AttemptEvent:
        """Run candidates until one sends a token (returned); hedge when configured; raise when none does."""
        hedge_s = self.settings.hedge_after_ms / 1000
        hedged = False
        while True:
            if not self.running:
                if await self._next(messages) is None:
                    raise self._unavailable()
                hedged = False
            timeout = self._remaining()
            if hedge_s and not hedged and self.pending and len(self.running) == 1:
                timeout = hedge_s if timeout is None else min(timeout, hedge_s)
            try:
                async with asyncio.timeout(timeout):  # no task per wait, unlike wait_for
                    event = await self.queue.get()
            except TimeoutError:
                remaining = self._remaining()
                if hedge_s and not hedged and self.pending and (remaining is None or remaining > 0):
                    hedged = True
                    while self.pending and self._launch(self.pending.popleft(), messages, hedge=True) is None:
                        pass
                    continue
                raise self._unavailable("the caller's deadline passed before any candidate sent a token") from None
            runner = event.runner
            if runner not in self.running:
                continue  # a straggler from a runner already given up
            if not event.done:
                for other in self.running:
                    if other is not runner:
                        other.cancel(AttemptOutcome.HEDGE_LOST, f"{runner.target.model} sent its first token first")
                        self.abandoned.append(other)
                self.running = [runner]
                return event
            self.running.remove(runner)
            if runner.record.outcome == AttemptOutcome.SUCCESS:
                return event  # an empty answer: nothing to stream, but it is the answer
            self.last_failed = runner.record

    async def stream(self) -> AsyncIterator[list[str | ToolPiece | ExecutionOutcome]]:
        messages = self.request.messages
        first = await self._commit(messages)
        winner = first.runner
        if not first.done:
            async for pieces in self._follow(winner, [first.piece]):
                yield pieces
        record = winner.record
        continued: AttemptRecord | None = None
        # Continuation is for prose only: a cut tool call cannot be resumed by another model.
        if record.outcome in CUT_SHORT and self.settings.continue_on_truncation and winner.chunks \
                and not winner.tool_pieces:
            partial = "".join(winner.text)
            follow_up = [*messages, {"role": "assistant", "content": partial}, {"role": "user", "content": CONTINUE_PROMPT}]
            self.last_failed = None
            try:
                event = await self._commit(follow_up)
            except (UpstreamUnavailable, DeadlineExceeded):
                event = None
            if event is not None:
                continued = event.runner.record
                if not event.done:
                    async for pieces in self._follow(event.runner, [event.piece]):
                        yield pieces
        yield [self._outcome(record, continued)]

    async def _follow(self, winner: AttemptRunner, batch: list[str | ToolPiece]) -> AsyncIterator[list[str | ToolPiece]]:
        """The winner's pieces, drained from the queue: one list per wake-up (coalescing at the source)."""
        queue = self.queue
        while True:
            done = False
            while not queue.empty():
                event = queue.get_nowait()
                if event.runner is not winner:
                    continue  # a loser's straggler
                if event.done:
                    done = True
                    break
                batch.append(event.piece)
            if batch:
                yield batch
                batch = []
            if done:
                self.running.remove(winner)
                return
            event = await queue.get()
            if event.runner is winner:
                if event.done:
                    self.running.remove(winner)
                    return
                batch.append(event.piece)

    def _unavailable(self, why: str = "") -> UpstreamUnavailable | DeadlineExceeded:
        remaining = self._remaining()
        error = DeadlineExceeded if remaining is not None and remaining <= 0.05 else UpstreamUnavailable
        listed = self.attempts[:LISTED_IN_ERRORS]
        summary = "; ".join(
            f"{a.model}: {a.outcome_label}" + (f" {a.http_status}" if a.http_status else "")
            + (f" ({a.error})" if a.error else "") for a in listed)
        unlisted = len(self.attempts) - len(listed)
        metadata = {f"attempt.{i + 1}": f"{a.model}:{a.outcome_label}" for i, a in enumerate(listed)}
        if unlisted:
            metadata["attempts_unlisted"] = str(unlisted)
        return error(
            (why + ": " if why else "") + f"all {len(self.attempts)} attempt(s) failed before the first token"
            + listed_note(len(self.attempts)) + f": {summary}",
            metadata=metadata,
        )

    def _outcome(self, record: AttemptRecord, continued: AttemptRecord | None) -> ExecutionOutcome:
        serving = record
        if record.outcome == AttemptOutcome.SUCCESS:
            status = record.finish
        elif continued is not None and continued.outcome == AttemptOutcome.SUCCESS:
            status, serving = FinishStatus.CONTINUED, continued
        else:
            status = STATUS_OF_FAILURE.get(record.outcome, FinishStatus.FAILED)
        parts = [record] + ([continued] if continued is not None else [])
        return ExecutionOutcome(
            status=status, model=serving.model, provider=serving.provider,
            input_tokens=sum(p.input_tokens for p in parts), output_tokens=sum(p.output_tokens for p in parts),
            usage_estimated=any(p.usage_estimated for p in parts),
            cached_input_tokens=sum(p.cached_input_tokens for p in parts),
            reasoning_tokens=sum(p.reasoning_tokens for p in parts),
            cost_usd=round(sum(a.cost_usd for a in self.attempts), 10), attempts=self.attempts,
            error="" if status in ANSWERED else (record.error or status.label),
        )

    async def stop(self) -> None:
        """Cancel whatever still runs (the caller went away, or a loser) and let each record itself."""
        for runner in self.running:
            runner.cancel(AttemptOutcome.CANCELLED, "caller cancelled")
        for runner in [*self.running, *self.abandoned]:
            await runner.wait()
        self.running.clear()
        self.abandoned.clear()
        if self.engine.attempts_done is not None:
            self.engine.attempts_done(self.attempts)
