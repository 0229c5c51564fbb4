"""The RouterService servicer: decide, admit (budgets, rate limits), execute, relay, settle, report."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

import grpc
from grpc_status import _async as rpc_status_async
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from routemesh.common import semconv
from routemesh.common.channels import aio_channel
from routemesh.common.coalesce import batches
from routemesh.common.errors import RelayedError, UpstreamUnavailable
from routemesh.common.reporter import TelemetryReporter
from routemesh.common.tracing import set_attributes, start_client_span
from routemesh.router.decide import Decided, Decider
from routemesh.v1 import common_pb2, executor_pb2, executor_pb2_grpc, router_pb2, router_pb2_grpc, telemetry_pb2

log = logging.getLogger(__name__)
# Executor calls per request when an executor dies before the first token.
EXECUTOR_TRIES = 3


class RouterServicer(router_pb2_grpc.RouterServiceServicer):
    """Thin over Decider (the decision) and the executor (the answer)."""

    def __init__(self, decider: Decider, executor_address: str, reporter: TelemetryReporter | None = None):
        self.decider = decider
        self.executor_address = executor_address
        self.reporter = reporter
        self._executor: executor_pb2_grpc.ExecutorServiceStub | None = None

    async def Explain(self, request: router_pb2.ExplainRequest,
                      context: grpc.aio.ServicerContext) -> router_pb2.ExplainResponse:
        decided = await self.decider.decide(request, context)
        return router_pb2.ExplainResponse(decision=decided.decision)

    async def Chat(self, request: router_pb2.ChatRequest,
                   context: grpc.aio.ServicerContext) -> AsyncIterator[router_pb2.ChatResponse]:
        started = time.monotonic()
        temperature = request.temperature if request.HasField("temperature") else None
        decided = await self.decider.decide(request, context, temperature)
        plan, decision = decided.plan, decided.decision
        spend = self.decider.spend
        admission = await spend.admit(decided.policy.policy, plan, decision.features.input_tokens, decided.metadata)
        if admission.dropped:
            # Rate limits removed models after planning: the decision shows what will really be tried.
            decision.model, decision.provider = plan.primary, decided.policy.policy.models[plan.primary].provider
            del decision.fallbacks[:]
            decision.fallbacks.extend(plan.fallbacks)
            decision.reason += "; skipped " + ", ".join(f"{m} ({why})" for m, why in admission.dropped.items())
        decision.degraded.extend(admission.unchecked)
        final: router_pb2.Final | None = None
        first_token_at = 0.0
        announce = router_pb2.ChatResponse(decision=decision)
        try:
            async for event in self._execute(request, decided, temperature, context, announce):
                if event is announce:
                    yield event
                    if decided.conversation and decided.plan.route and \
                            decided.policy.policy.routes[decided.plan.route].sticky:
                        await self.decider.affinity.set(decided.conversation, plan.primary)
                    continue
                if event.WhichOneof("event") == "final":
                    final = event.final
                elif not first_token_at:
                    first_token_at = time.monotonic()
                yield event
        finally:
            cost = final.cost_usd if final is not None else 0.0
            used = (final.usage.input_tokens + final.usage.output_tokens) if final is not None else 0
            await spend.settle(admission, cost, used)
            self._report(decided, final, started, first_token_at)

    async def _execute(self, request: router_pb2.ChatRequest, decided: Decided, temperature: float | None,
                       context: grpc.aio.ServicerContext,
                       announce: router_pb2.ChatResponse) -> AsyncIterator[router_pb2.ChatResponse]:
        """The executor's answer as caller events, after `announce` (the decision).

        The decision is yielded once the executor call exists, so the call's request goes out while the
        decision is being written to the caller (a write completes through grpc's poller thread: ~0.15 ms
        measured at one stream) instead of after it.
        """
        plan, decision = decided.plan, decided.decision
        if self._executor is None:
            self._executor = executor_pb2_grpc.ExecutorServiceStub(aio_channel(self.executor_address))
        execute = executor_pb2.ExecuteRequest(
            messages=request.messages, plan=plan.models, max_tokens=plan.max_tokens,
            decision_id=decision.decision_id, estimated_input_tokens=decision.features.input_tokens,
            tools=request.tools, tool_choice=request.tool_choice, response_format=request.response_format,
        )
        if temperature is not None:
            execute.temperature = temperature
        policy = decided.policy.policy
        reliability = policy.routes[plan.route or policy.defaults.route].reliability
        execute.options.CopyFrom(executor_pb2.ExecutionOptions(
            max_tries_per_model=reliability.max_tries_per_model, backoff_initial_ms=reliability.backoff_initial_ms,
            backoff_max_ms=reliability.backoff_max_ms, hedge_after_ms=reliability.hedge_after_ms,
            continue_on_truncation=reliability.continue_on_truncation))
        final: router_pb2.Final | None = None
        relayed = 0
        for executor_try in range(1, EXECUTOR_TRIES + 1):
            span, metadata = start_client_span("routemesh.v1.ExecutorService/Execute",
                                               **{semconv.DECISION_ID: decision.decision_id})
            remaining = context.time_remaining()
            call = self._executor.Execute(execute, metadata=metadata,
                                          timeout=None if remaining is None else max(0.001, remaining - 0.02))
            try:
                if executor_try == 1:
                    yield announce
                async for batch in batches(call.__aiter__()):
                    deltas = [r.delta for r in batch if r.HasField("delta")]
                    text = "".join(d.text for d in deltas)
                    tools = [t for d in deltas for t in d.tool_calls]
                    if text or tools:
                        relayed += len(text) + len(tools)
                        yield router_pb2.ChatResponse(delta=common_pb2.Delta(text=text, tool_calls=tools))
                    for response in batch:
                        if response.HasField("result"):
                            final = self._final(response.result, decision)
                break
            except grpc.aio.AioRpcError as exc:
                span.set_status(Status(StatusCode.ERROR, exc.code().name))
                if relayed:
                    final = self._failed(decision, f"executor stream failed after the first token: "
                                                   f"{exc.code().name}")
                    break
                status = await rpc_status_async.from_call(call)
                if status is not None:
                    raise RelayedError(status) from None
                # The executor itself went away before any token: nothing reached the caller, so another
                # replica (the channel balances round-robin) can serve the same plan.
                if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN) \
                        or executor_try == EXECUTOR_TRIES:
                    raise UpstreamUnavailable(f"executor unavailable: {exc.code().name}: {exc.details()}",
                                              reason="EXECUTOR_UNAVAILABLE") from None
                log.warning("executor failed before the first token (%s); trying another replica",
                            exc.code().name)
            finally:
                if not call.done():
                    call.cancel()
                span.end()
        if final is None:
            final = self._failed(decision, "executor stream ended without a result")
        self._record_final(final)
        yield router_pb2.ChatResponse(final=final)

    @staticmethod
    def _failed(decision: router_pb2.Decision, error: str) -> router_pb2.Final:
        return router_pb2.Final(status=common_pb2.FINISH_STATUS_FAILED, decision_id=decision.decision_id,
                                trace_id=decision.trace_id, error=error, experiment=decision.experiment,
                                variant=decision.variant)

    @staticmethod
    def _final(result: executor_pb2.ExecutionResult, decision: router_pb2.Decision) -> router_pb2.Final:
        return router_pb2.Final(
            status=result.status, usage=result.usage, cost_usd=result.cost_usd, model=result.model,
            provider=result.provider, attempts=result.attempts, decision_id=decision.decision_id,
            trace_id=decision.trace_id, error=result.error, experiment=decision.experiment, variant=decision.variant,
        )

    @staticmethod
    def _record_final(final: router_pb2.Final) -> None:
        span = trace.get_current_span()
        if not span.is_recording():
            return
        set_attributes(span, {
            semconv.FINISH_STATUS: common_pb2.FinishStatus.Name(final.status).removeprefix("FINISH_STATUS_").lower(),
            semconv.COST_USD: final.cost_usd, semconv.ATTEMPTS: len(final.attempts),
            semconv.GEN_AI_RESPONSE_MODEL: final.model,
            semconv.GEN_AI_USAGE_INPUT_TOKENS: final.usage.input_tokens,
            semconv.GEN_AI_USAGE_OUTPUT_TOKENS: final.usage.output_tokens,
            semconv.EXPERIMENT: final.experiment, semconv.VARIANT: final.variant,
        })

    def _report(self, decided: Decided, final: router_pb2.Final | None, started: float, first_at: float) -> None:
        if self.reporter is None:
            return
        now = time.monotonic()
        keys = decided.policy.policy.request_keys
        self.reporter.report(telemetry_pb2.RequestSummary(
            decision_id=decided.decision.decision_id, route=decided.plan.route,
            experiment=decided.plan.experiment, variant=decided.plan.variant,
            model=final.model if final is not None else "",
            status=final.status if final is not None else common_pb2.FINISH_STATUS_UNSPECIFIED,
            ttft_ms=(first_at - started) * 1000 if first_at else 0.0, duration_ms=(now - started) * 1000,
            cost_usd=final.cost_usd if final is not None else 0.0,
            tenant=decided.metadata.get(keys.tenant, ""), timestamp_ms=int(time.time() * 1000),
        ))
