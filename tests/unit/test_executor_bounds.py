"""The executor's bounds: plan length and names, error size, and no execution state kept after a failed call."""

from __future__ import annotations

import gc
import time
import weakref
from collections.abc import AsyncIterator, Iterator

import pytest
import yaml

from routemesh.common.errors import MAX_FIELD_VIOLATIONS, InvalidRequest, RoutemeshError, UpstreamUnavailable
from routemesh.common.policy import PolicyVersion, canonical_json, digest, parse_policy
from routemesh.common.policy_watch import PolicyHolder
from routemesh.executor import engine as engine_module
from routemesh.executor.engine import (
    LISTED_IN_ERRORS,
    MAX_MODEL_NAME_LENGTH,
    MIN_PLAN_LIMIT,
    ExecutionEngine,
    ExecutionInput,
    check_plan,
    plan_limit,
)
from routemesh.executor import servicer as servicer_module
from routemesh.executor.http import HttpClient
from routemesh.executor.servicer import MAX_ERROR_MESSAGE, ExecutorServicer, detached
from routemesh.v1 import common_pb2, control_pb2, executor_pb2

# Nothing listens on port 1; plans of unknown names never get as far as a connection anyway.
UNREACHABLE_URL = "http://127.0.0.1:1/v1"
MAX_ERROR_BYTES = 4096


def policy_yaml(model_count: int) -> str:
    names = [f"m{i}" for i in range(model_count)]
    return yaml.safe_dump({
        "providers": {"p": {"base_url": UNREACHABLE_URL}},
        "models": {name: {"provider": "p", "upstream_model": name, "context_window": 8000,
                          "pricing": {"input_per_mtok": 1, "output_per_mtok": 1}} for name in names},
        "routes": {"auto": {"models": names}},
    })


def holder_with(model_count: int) -> PolicyHolder[PolicyVersion]:
    holder: PolicyHolder[PolicyVersion] = PolicyHolder()
    text = canonical_json(parse_policy(policy_yaml(model_count)))
    assert holder.apply(control_pb2.Policy(version=1, digest=digest(text), policy_json=text))
    return holder


def long_name(i: int) -> str:
    """A made-up model name as long as a policy allows."""
    return f"made-up-{i}-".ljust(MAX_MODEL_NAME_LENGTH, "x")


@pytest.fixture
async def engine() -> AsyncIterator[ExecutionEngine]:
    client = HttpClient()
    try:
        yield ExecutionEngine(holder_with(3), client, lambda record, finished, decision_id: None)
    finally:
        await client.aclose()


class FakeContext:
    def time_remaining(self) -> float | None:
        return 5.0


def execute_request(plan: list[str]) -> executor_pb2.ExecuteRequest:
    return executor_pb2.ExecuteRequest(
        messages=[common_pb2.Message(role=common_pb2.ROLE_USER, content="hello")], plan=plan, max_tokens=16)


async def run_servicer(engine: ExecutionEngine, request: executor_pb2.ExecuteRequest) -> RoutemeshError:
    """The domain error Execute ends with (it must end with one)."""
    with pytest.raises(RoutemeshError) as err:
        async for _ in ExecutorServicer(engine).Execute(request, FakeContext()):
            pass
    return err.value


def error_bytes(error: RoutemeshError) -> int:
    return error.to_status().ByteSize()


# ---- plan length and names ----------------------------------------------------------------------------


def test_the_limit_is_the_policys_model_count_but_never_under_the_floor():
    assert plan_limit(holder_with(3).current) == MIN_PLAN_LIMIT
    assert plan_limit(holder_with(MIN_PLAN_LIMIT + 8).current) == MIN_PLAN_LIMIT + 8


def test_every_valid_plan_of_a_big_policy_is_accepted():
    """A router's plan names each model of its version at most once, so the whole route is the longest."""
    policy = holder_with(MIN_PLAN_LIMIT + 8).current
    check_plan([f"m{i}" for i in range(MIN_PLAN_LIMIT + 8)], policy)
    check_plan([long_name(i) for i in range(MIN_PLAN_LIMIT)], policy)  # unknown names stay config errors


@pytest.mark.parametrize("length", [MIN_PLAN_LIMIT + 1, 100_000])
def test_a_longer_plan_is_invalid_naming_the_field(length):
    with pytest.raises(InvalidRequest) as err:
        check_plan([f"x{i}" for i in range(length)], holder_with(3).current)
    assert err.value.field_violations == [("plan", f"at most {MIN_PLAN_LIMIT} models")]
    assert f"names {length:,} models; at most {MIN_PLAN_LIMIT}" in err.value.message
    assert error_bytes(err.value) < 512


def test_names_too_long_for_any_policy_are_invalid_and_listed_up_to_the_bound():
    plan = ["m0", *("y" * (MAX_MODEL_NAME_LENGTH + 1) for _ in range(20))]
    with pytest.raises(InvalidRequest) as err:
        check_plan(plan, holder_with(3).current)
    fields = [f for f, _ in err.value.field_violations]
    assert fields == [f"plan[{i}]" for i in range(1, LISTED_IN_ERRORS + 1)]
    assert err.value.message.startswith("20 plan entries are too long") and "first 10 listed" in err.value.message
    assert error_bytes(err.value) < 2048


async def test_the_engine_refuses_a_long_plan_before_it_starts(engine):
    request = ExecutionInput(messages=[{"role": "user", "content": "hi"}], plan=["m0"] * 1000, max_tokens=8)
    with pytest.raises(InvalidRequest):
        async for _ in engine.execute(request, None):
            pass
    assert engine._breakers == {}  # nothing was launched


# ---- bounded errors -----------------------------------------------------------------------------------


async def test_a_full_plan_of_unknown_models_fails_with_a_bounded_error(engine):
    plan = [long_name(i) for i in range(MIN_PLAN_LIMIT)]
    error = await run_servicer(engine, execute_request(plan))
    assert isinstance(error, UpstreamUnavailable)
    assert error.message.startswith(f"all {MIN_PLAN_LIMIT} attempt(s) failed before the first token "
                                    f"(the first {LISTED_IN_ERRORS} listed): {plan[0]}: config_error")
    assert plan[LISTED_IN_ERRORS] not in error.message
    assert len(error.metadata) == LISTED_IN_ERRORS + 1
    assert error.metadata["attempts_unlisted"] == str(MIN_PLAN_LIMIT - LISTED_IN_ERRORS)
    assert error_bytes(error) < MAX_ERROR_BYTES


async def test_many_bad_messages_are_listed_up_to_the_bound(engine):
    request = executor_pb2.ExecuteRequest(messages=[common_pb2.Message(content="no role")] * 5000, plan=["m0"],
                                          max_tokens=16)
    error = await run_servicer(engine, request)
    assert isinstance(error, InvalidRequest)
    assert len(error.field_violations) == MAX_FIELD_VIOLATIONS + 1
    assert error.field_violations[-1] == ("", f"{5000 - MAX_FIELD_VIOLATIONS:,} more problem(s) not listed")
    assert "(5,000 message(s))" in error.message
    assert error_bytes(error) < MAX_ERROR_BYTES


def test_detached_cuts_a_long_message_and_drops_the_chain():
    try:
        try:
            raise ValueError("inner")
        except ValueError:
            raise InvalidRequest("x" * 100_000) from None
    except InvalidRequest as exc:
        error = detached(exc)
    assert error.__traceback__ is None and error.__context__ is None and error.__cause__ is None
    assert len(error.message) <= MAX_ERROR_MESSAGE and str(error) == error.message


# ---- nothing kept after a failed call -----------------------------------------------------------------


@pytest.fixture
def executions(monkeypatch) -> Iterator[list[weakref.ref]]:
    """Weak references to every _Execution started, with the collector off: only reference counts free them."""
    refs: list[weakref.ref] = []
    original = engine_module._Execution.__init__

    def tracked(self, *args, **kwargs):
        original(self, *args, **kwargs)
        refs.append(weakref.ref(self))

    monkeypatch.setattr(engine_module._Execution, "__init__", tracked)
    gc.disable()
    try:
        yield refs
    finally:
        gc.enable()


async def test_a_failed_execution_is_freed_by_reference_count_while_its_error_lives(engine, executions):
    """The error reaches the interceptor, which grpc keeps (RPCState.abort_exception) in a cycle: it must not
    hold the execution's frames, and through them the plan, the messages and every attempt record."""
    error = await run_servicer(engine, execute_request([long_name(i) for i in range(MIN_PLAN_LIMIT)]))
    assert isinstance(error, UpstreamUnavailable) and len(executions) == 1
    assert executions[0]() is None
    assert error.__context__ is None
    frames = []
    traceback = error.__traceback__
    while traceback is not None:
        frames.append(traceback.tb_frame)
        traceback = traceback.tb_next
    assert all(f.f_code.co_filename != engine_module.__file__ for f in frames)
    servicer_frames = [f for f in frames if f.f_code.co_filename == servicer_module.__file__]
    assert servicer_frames and all("request" not in f.f_locals for f in servicer_frames)


async def test_a_successful_plan_check_costs_no_time_worth_measuring(engine):
    plan = [f"m{i % 3}" for i in range(MIN_PLAN_LIMIT)]
    started = time.perf_counter()
    for _ in range(1000):
        engine.check_plan(plan)
    assert time.perf_counter() - started < 1.0
