"""The executor as the router calls it: one plan in, relayed deltas and one Finished out."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc
from grpc_status import _async as rpc_status_async
from opentelemetry import context as otel_context

from routemesh.common.channels import TracedChannel, open_channel, remaining_s
from routemesh.common.coalesce import batches
from routemesh.common.errors import PolicySkew, RelayedError, UpstreamUnavailable, error_info
from routemesh.common.outcomes import FinishStatus
from routemesh.common.policy_schema import Reliability
from routemesh.router.request import ChatInput, Decision, Delta, Finished
from routemesh.v1 import executor_pb2, executor_pb2_grpc

log = logging.getLogger(__name__)
# Executor calls per request when an executor dies before the first token.
EXECUTOR_TRIES = 3
# Waits for an executor to receive the plan's policy version: 10 ms doubling, about 1.3 s in all.
SKEW_RETRIES = 7
SKEW_FIRST_WAIT_S = 0.01


def execute_request(request: ChatInput, decision: Decision, reliability: Reliability) -> executor_pb2.ExecuteRequest:
    """The executor's request: the plan, its policy version, and the route's reliability settings."""
    plan = decision.plan
    execute = executor_pb2.ExecuteRequest(
        messages=request.messages, plan=plan.models, max_tokens=plan.max_tokens,
        decision_id=decision.decision_id, estimated_input_tokens=decision.classified.features.input_tokens,
        tools=request.tools, tool_choice=request.tool_choice, response_format=request.response_format,
        policy_version=decision.policy_version, policy_digest=decision.policy_digest,
        options=executor_pb2.ExecutionOptions(
            max_tries_per_model=reliability.max_tries_per_model, backoff_initial_ms=reliability.backoff_initial_ms,
            backoff_max_ms=reliability.backoff_max_ms, hedge_after_ms=reliability.hedge_after_ms,
            continue_on_truncation=reliability.continue_on_truncation),
    )
    if request.temperature is not None:
        execute.temperature = request.temperature
    return execute


def finished_of(result: executor_pb2.ExecutionResult) -> Finished:
    return Finished(status=result.status, model=result.model, provider=result.provider, cost_usd=result.cost_usd,
                    error=result.error, usage=result.usage, attempts=result.attempts)


def failed(error: str) -> Finished:
    return Finished(status=FinishStatus.FAILED, error=error)


class ExecutorClient:
    """Owns the channel to the executor replicas."""

    def __init__(self, address: str):
        self.address = address
        self._channel: TracedChannel | None = None
        self._stub: executor_pb2_grpc.ExecutorServiceStub | None = None

    def start(self) -> None:
        self._channel = open_channel(self.address)
        self._stub = executor_pb2_grpc.ExecutorServiceStub(self._channel)

    async def stop(self) -> None:
        if self._channel is not None:
            await self._channel.close()

    def open(self, execute: executor_pb2.ExecuteRequest) -> ExecutorStream:
        """Send the request now; read its answer from the returned stream."""
        assert self._stub is not None, "start() first"
        return ExecutorStream(self._stub, execute)


class ExecutorStream:
    """One request's executor call, and the calls that replace it when it fails before any token.

    An executor replica that goes away before the first token is replaced by another (the channel balances
    round-robin); one that does not hold the plan's policy version yet answers POLICY_SKEW and is asked again
    after a short wait, as the version reaches it within one push.
    """

    def __init__(self, stub: executor_pb2_grpc.ExecutorServiceStub, execute: executor_pb2.ExecuteRequest):
        self._stub = stub
        self._execute = execute
        # Calls that replace this one are children of the same span as this one.
        self._context = otel_context.get_current()
        self._call = stub.Execute(execute)
        self.relayed = 0

    async def events(self) -> AsyncIterator[Delta | Finished]:
        """Deltas (whatever arrived together as one), then exactly one Finished."""
        finished: Finished | None = None
        replicas = skews = 0
        while finished is None:
            call = self._call
            try:
                async for batch in batches(call.__aiter__()):
                    deltas = [r.delta for r in batch if r.HasField("delta")]
                    text = "".join(d.text for d in deltas)
                    tools = [t for d in deltas for t in d.tool_calls]
                    if text or tools:
                        self.relayed += len(text) + len(tools)
                        yield Delta(text, tools)
                    for response in batch:
                        if response.HasField("result"):
                            finished = finished_of(response.result)
                if finished is None:
                    finished = failed("executor stream ended without a result")
            except grpc.aio.AioRpcError as exc:
                if self.relayed:
                    finished = failed(f"executor stream failed after the first token: {exc.code().name}")
                    break
                status = await rpc_status_async.from_call(call)
                if status is not None:
                    info = error_info(list(status.details))
                    if info is None or info.reason != "POLICY_SKEW" or skews >= SKEW_RETRIES:
                        raise RelayedError(status) from None
                    await self._wait_for_version(skews)
                    skews += 1
                else:
                    replicas += 1
                    self._replica_failed(exc, replicas)
                token = otel_context.attach(self._context)
                try:
                    self._call = self._stub.Execute(self._execute)
                finally:
                    otel_context.detach(token)
            finally:
                if not call.done():
                    call.cancel()
        yield finished

    @staticmethod
    def _replica_failed(exc: grpc.aio.AioRpcError, replicas: int) -> None:
        """Another replica can serve the same plan when this one went away before any token; else raise."""
        if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN) or replicas >= EXECUTOR_TRIES:
            raise UpstreamUnavailable(f"executor unavailable: {exc.code().name}: {exc.details()}",
                                      reason="EXECUTOR_UNAVAILABLE") from None
        log.warning("executor failed before the first token (%s); trying another replica", exc.code().name)

    async def _wait_for_version(self, skews: int) -> None:
        wait = SKEW_FIRST_WAIT_S * 2 ** skews
        left = remaining_s()
        if left is not None and wait >= left:
            raise PolicySkew(f"the executor did not receive policy version {self._execute.policy_version} "
                             "before the deadline")
        log.info("executor lacks policy version %d; asking again in %.0f ms", self._execute.policy_version,
                 wait * 1000)
        await asyncio.sleep(wait)

