"""The router's request pipeline without gRPC: stage order, one Decision built after admission, settling always."""

from __future__ import annotations

import pytest

from routemesh.common.errors import UpstreamUnavailable
from routemesh.common.outcomes import FinishStatus
from routemesh.common.policy import PolicyVersion
from routemesh.common.policy_watch import PolicyHolder
from routemesh.router.admission.budget import BudgetScope, InMemoryBudgetLedger
from routemesh.router.admission.guard import SpendGuard
from routemesh.router.admission.ratelimit import InMemoryRateLimiter
from routemesh.router.affinity import InMemoryAffinity
from routemesh.router.clients.classifier import LOCAL_SOURCE, FeatureSource
from routemesh.router.clients.executor import finished_of
from routemesh.router.decision.compiled import RoutingPolicy
from routemesh.router.decision.planner import DecisionState
from routemesh.router.pipeline import RequestPipeline
from routemesh.router.request import ChatInput, Decision, Delta, Finished
from routemesh.v1 import common_pb2, executor_pb2
from tests.unit.test_admission import POLICY_DOCUMENT

POLICY = POLICY_DOCUMENT
SCOPE = BudgetScope(budget="small", key="tenant=acme", period="month", limit_usd=0.05, soft_limit_fraction=0.8)


class PushedHealth:
    mode = "watch"

    def pushed(self):
        return {}, True

    def age_s(self):
        return 0.1


class ScriptedExecutor:
    """Answers every plan with two deltas and a result, or fails before the first token."""

    def __init__(self, fail: bool = False):
        self.fail = fail
        self.requests: list[executor_pb2.ExecuteRequest] = []

    def open(self, execute):
        self.requests.append(execute)
        return self

    async def events(self):
        if self.fail:
            raise UpstreamUnavailable("every candidate failed")
        yield Delta("Hello, ")
        yield Delta("world")
        yield finished_of(executor_pb2.ExecutionResult(
            status=FinishStatus.COMPLETE, model=self.requests[-1].plan[0], cost_usd=0.001,
            usage=common_pb2.Usage(input_tokens=10, output_tokens=2)))


class Reports:
    def __init__(self):
        self.items = []

    def report(self, item):
        self.items.append(item)


def _pipeline(executor, ledger=None, reporter=None) -> RequestPipeline:
    holder: PolicyHolder[RoutingPolicy] = PolicyHolder(compile=RoutingPolicy.compile)
    holder.current = RoutingPolicy.compile(PolicyVersion(POLICY, 7, "d7"))
    return RequestPipeline(holder, FeatureSource("local"), PushedHealth(), InMemoryAffinity(),
                           SpendGuard(ledger or InMemoryBudgetLedger(), InMemoryRateLimiter()), executor,
                           reporter, DecisionState(seed=1))


def _input(tenant: str = "acme") -> ChatInput:
    message = common_pb2.Message(role=common_pb2.ROLE_USER, content="What is the capital of France?")
    return ChatInput(messages=[message], metadata={"tenant": tenant} if tenant else {})


async def test_chat_yields_the_decision_made_after_admission_then_deltas_then_the_result():
    executor, reports = ScriptedExecutor(), Reports()
    pipeline = _pipeline(executor, reporter=reports)
    # No tenant, so no budget: after cheap's one request per minute, pricey serves.
    first = [e async for e in pipeline.chat(_input(tenant=""))]
    second = [e async for e in pipeline.chat(_input(tenant=""))]
    for events in (first, second):
        assert [type(e) for e in events] == [Decision, Delta, Delta, Finished]
    decision = second[0]
    assert decision.plan.models == ["pricey"], "admission took the rate-limited model out"
    assert "skipped cheap (rate limit" in decision.plan.reason
    assert list(executor.requests[-1].plan) == ["pricey"], "the executor got the admitted plan"
    assert (executor.requests[-1].policy_version, executor.requests[-1].policy_digest) == (7, "d7")
    assert decision.classified.source == LOCAL_SOURCE and decision.policy_version == 7
    assert [r.model for r in reports.items] == ["cheap", "pricey"]
    assert reports.items[-1].status == FinishStatus.COMPLETE and reports.items[-1].tenant == ""


async def test_explain_decides_without_admitting():
    pipeline = _pipeline(ScriptedExecutor())
    for _ in range(3):  # the one request per minute is never taken
        decision = await pipeline.explain(_input(tenant=""))
        assert decision.plan.models == ["cheap", "pricey"]


async def test_a_failed_execution_still_settles_the_reservation():
    ledger = InMemoryBudgetLedger()
    pipeline = _pipeline(ScriptedExecutor(fail=True), ledger)
    events = pipeline.chat(_input())
    assert type(await anext(events)) is Decision
    with pytest.raises(UpstreamUnavailable):
        await anext(events)
    status = (await ledger.status([SCOPE]))[SCOPE.account]
    assert status.reserved_usd == 0 and status.spent_usd == 0


async def test_a_finished_request_is_charged_its_actual_cost():
    ledger = InMemoryBudgetLedger()
    events = [e async for e in _pipeline(ScriptedExecutor(), ledger).chat(_input())]
    assert isinstance(events[-1], Finished)
    status = (await ledger.status([SCOPE]))[SCOPE.account]
    assert status.reserved_usd == 0 and status.spent_usd == pytest.approx(0.001)
