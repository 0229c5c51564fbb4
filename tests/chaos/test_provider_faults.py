"""Provider faults against a real mesh: failover before the first token, honest truncation after it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
import pytest

from routemesh.client import RouterClient, RoutemeshError
from routemesh.mesh import Mesh, MeshLayout
from routemesh.v1 import common_pb2, router_pb2
from tests.chaos.conftest import FAST_TIMEOUTS, FaultProxy, SimAdmin, base_policy

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

A = common_pb2  # outcome and status constants
FIRST_TOKEN_MS = FAST_TIMEOUTS["first_token_s"] * 1000
BETWEEN_TOKENS_MS = FAST_TIMEOUTS["between_tokens_s"] * 1000
PROMPT = "What are your opening hours on Sunday?"
# The sim's injected mid-stream faults strike after this many content tokens (routemesh.sim.state).
TOKENS_BEFORE_FAULT = 3


def chaos_policy(proxy_url: str) -> dict:
    doc = base_policy()
    doc["providers"]["sim"]["timeouts"] = dict(FAST_TIMEOUTS)
    # The same sim behind the fault proxy: network faults that no HTTP server can fake by itself.
    doc["providers"]["proxied"] = {"api": "openai", "base_url": proxy_url, "timeouts": dict(FAST_TIMEOUTS)}
    doc["models"]["proxied-fast"] = {**doc["models"]["fast-cheap"], "provider": "proxied",
                                     "description": "sim-fast through the fault proxy"}
    once = {"max_tries_per_model": 1}
    doc["routes"]["chaos"] = {"strategy": "ordered", "models": ["fast-cheap"], "fallbacks": ["balanced"],
                              "reliability": once}
    doc["routes"]["chaos-proxied"] = {"strategy": "ordered", "models": ["proxied-fast"], "fallbacks": ["balanced"],
                                      "reliability": once}
    return doc


@pytest.fixture(scope="module")
def layout() -> MeshLayout:
    return MeshLayout.free()


@pytest.fixture(scope="module")
def proxy(layout) -> Iterator[FaultProxy]:
    with FaultProxy(layout.host, layout.ports["sim"]) as p:
        yield p


@pytest.fixture(scope="module")
def faults_mesh(mesh_factory, layout, proxy) -> Mesh:
    return mesh_factory("provider-faults", chaos_policy(proxy.url(path="/v1")), layout=layout)


@pytest.fixture
def sim(faults_mesh, proxy) -> Iterator[SimAdmin]:
    admin = SimAdmin(faults_mesh.layout.sim_url)
    admin.reset()
    yield admin
    proxy.passthrough()
    admin.reset()


@pytest.fixture
def client(faults_mesh) -> Iterator[RouterClient]:
    with RouterClient(faults_mesh.layout.address("router"), timeout=30) as c:
        yield c


@dataclass
class Timed:
    """One chat's events with the monotonic time each arrived, from the moment it was sent."""

    started: float
    events: list[tuple[float, router_pb2.ChatResponse]]

    def of(self, kind: str) -> list[tuple[float, router_pb2.ChatResponse]]:
        return [(t, e) for t, e in self.events if e.WhichOneof("event") == kind]

    @property
    def final(self) -> router_pb2.Final:
        finals = self.of("final")
        assert len(finals) == 1 and self.events[-1][1] is finals[0][1], "the stream must end with one final"
        return finals[0][1].final

    @property
    def text(self) -> str:
        return "".join(e.delta.text for _, e in self.of("delta"))

    def ms(self, at: float) -> float:
        return (at - self.started) * 1000

    @property
    def first_delta_ms(self) -> float:
        return self.ms(self.of("delta")[0][0])

    @property
    def last_delta_to_final_ms(self) -> float:
        return (self.of("final")[0][0] - self.of("delta")[-1][0]) * 1000


def timed_chat(client: RouterClient, model: str, prompt: str = PROMPT) -> Timed:
    started = time.monotonic()
    events = [(time.monotonic(), event) for event in client.chat(prompt, model=model)]
    return Timed(started, events)


def outcomes(final: router_pb2.Final) -> list[tuple[str, int]]:
    return [(a.model, a.outcome) for a in final.attempts]


def test_baseline_without_faults(sim, client, proxy):
    for route, model in (("chaos", "fast-cheap"), ("chaos-proxied", "proxied-fast")):
        final = timed_chat(client, route).final
        assert final.status == A.FINISH_STATUS_COMPLETE and final.model == model
        assert outcomes(final) == [(model, A.ATTEMPT_OUTCOME_SUCCESS)]
    proxy.delay(20)  # a slower network is not a fault: no failover
    final = timed_chat(client, "chaos-proxied").final
    assert outcomes(final) == [("proxied-fast", A.ATTEMPT_OUTCOME_SUCCESS)]


@dataclass(frozen=True)
class Fault:
    name: str
    inject: Callable[[SimAdmin, FaultProxy], None]
    route: str
    outcome: int
    http_status: int | None  # None: not checked
    timeout: bool = False  # the primary is abandoned at first_token_s


PRE_TOKEN_FAULTS = [
    # Retry-After 30 s: failing over must not wait for it.
    Fault("429 with Retry-After", lambda s, p: s.patch("sim-fast", fault="429", retry_after_s=30), "chaos",
          A.ATTEMPT_OUTCOME_RATE_LIMITED, 429),
    Fault("500", lambda s, p: s.patch("sim-fast", fault="500"), "chaos", A.ATTEMPT_OUTCOME_UPSTREAM_ERROR, 500),
    Fault("503", lambda s, p: s.patch("sim-fast", fault="503"), "chaos", A.ATTEMPT_OUTCOME_UPSTREAM_ERROR, 503),
    Fault("connection refused", lambda s, p: p.refuse(), "chaos-proxied", A.ATTEMPT_OUTCOME_CONNECT_ERROR, 0),
    Fault("reset before headers", lambda s, p: p.reset_after(0), "chaos-proxied",
          A.ATTEMPT_OUTCOME_UPSTREAM_ERROR, 0),
    Fault("hang before headers", lambda s, p: s.patch("sim-fast", fault="hang"), "chaos",
          A.ATTEMPT_OUTCOME_TIMEOUT, 0, timeout=True),
    Fault("blackholed connection", lambda s, p: p.blackhole(), "chaos-proxied", A.ATTEMPT_OUTCOME_TIMEOUT, 0,
          timeout=True),
    # 20x a 2 s TTFT at the sim's time scale of 0.05: 2 s, past first_token_s; headers come at once.
    Fault("slow first token", lambda s, p: s.patch("sim-fast", fault="slow-first-token", ttft_ms=2000), "chaos",
          A.ATTEMPT_OUTCOME_TIMEOUT, None, timeout=True),
]


@pytest.mark.parametrize("fault", PRE_TOKEN_FAULTS, ids=[f.name for f in PRE_TOKEN_FAULTS])
def test_fault_before_first_token_fails_over_transparently(sim, proxy, client, figures, fault):
    fault.inject(sim, proxy)
    chat = timed_chat(client, fault.route)
    final = chat.final
    primary = "proxied-fast" if fault.route == "chaos-proxied" else "fast-cheap"
    assert final.status == A.FINISH_STATUS_COMPLETE, final
    assert final.model == "balanced"
    assert outcomes(final) == [(primary, fault.outcome), ("balanced", A.ATTEMPT_OUTCOME_SUCCESS)], final.attempts
    if fault.http_status is not None:
        assert final.attempts[0].http_status == fault.http_status
    assert final.attempts[0].error
    assert chat.text and not final.usage.estimated
    abandoned_ms = final.attempts[0].duration_ms
    if fault.timeout:
        # Abandoned at first_token_s: not before, and not noticeably later.
        assert FIRST_TOKEN_MS - 50 <= abandoned_ms <= FIRST_TOKEN_MS + 200, abandoned_ms
        assert chat.first_delta_ms <= FIRST_TOKEN_MS + 500
    else:
        assert abandoned_ms < 500 and chat.first_delta_ms < 1000, (abandoned_ms, chat.first_delta_ms)
    figures.record(f"failover after {fault.name}: primary abandoned after", abandoned_ms)
    figures.record(f"failover after {fault.name}: first token at", chat.first_delta_ms)


def test_every_candidate_failing_is_unavailable_not_a_hang(sim, client):
    sim.patch("sim-fast", fault="503")
    sim.patch("sim-balanced", fault="500")
    started = time.monotonic()
    with pytest.raises(RoutemeshError) as err:
        timed_chat(client, "chaos")
    assert err.value.code == grpc.StatusCode.UNAVAILABLE and err.value.reason == "ALL_CANDIDATES_FAILED"
    assert err.value.metadata == {"attempt.1": "fast-cheap:upstream_error", "attempt.2": "balanced:upstream_error"}
    assert time.monotonic() - started < 2


def assert_truncated(chat: Timed, model: str, outcome: int) -> router_pb2.Final:
    final = chat.final
    assert final.status == A.FINISH_STATUS_TRUNCATED_UPSTREAM, final
    # Once a token went out the answer is never replaced by another model's, nor dressed up as complete.
    assert outcomes(final) == [(model, outcome)], final.attempts
    assert final.model == model and chat.text
    assert final.usage.input_tokens > 0 and final.usage.output_tokens > 0
    assert final.cost_usd > 0
    return final


MID_STREAM_FAULTS = [("cut", A.ATTEMPT_OUTCOME_TRUNCATED), ("malformed", A.ATTEMPT_OUTCOME_TRUNCATED)]


@pytest.mark.parametrize(("fault", "outcome"), MID_STREAM_FAULTS, ids=[f for f, _ in MID_STREAM_FAULTS])
def test_fault_after_first_token_is_truncated_upstream(sim, client, fault, outcome):
    sim.patch("sim-fast", fault=fault)
    final = assert_truncated(timed_chat(client, "chaos"), "fast-cheap", outcome)
    # No usage chunk came: one token per streamed chunk, flagged as an estimate.
    assert final.usage.output_tokens == TOKENS_BEFORE_FAULT and final.usage.estimated


def test_stall_mid_stream_ends_within_between_tokens_timeout(sim, client, figures):
    sim.patch("sim-fast", fault="stall")  # 30 s of silence after three tokens
    chat = timed_chat(client, "chaos")
    final = assert_truncated(chat, "fast-cheap", A.ATTEMPT_OUTCOME_TIMEOUT)
    assert final.usage.output_tokens == TOKENS_BEFORE_FAULT and final.usage.estimated
    gap = chat.last_delta_to_final_ms
    figures.record("stall: final after the last token", gap, note=f"between_tokens_s {BETWEEN_TOKENS_MS:.0f} ms")
    assert BETWEEN_TOKENS_MS - 100 <= gap <= BETWEEN_TOKENS_MS + 200, gap


def test_connection_reset_mid_stream_is_truncated_upstream(sim, proxy, client):
    # Headers and the role chunk take about 400 bytes, each content chunk about 150 more.
    proxy.reset_after(1000)
    final = assert_truncated(timed_chat(client, "chaos-proxied"), "proxied-fast", A.ATTEMPT_OUTCOME_TRUNCATED)
    assert final.usage.estimated


def test_missing_done_after_a_normal_finish_is_complete(sim, client, figures):
    sim.patch("sim-fast", fault="no-done")
    chat = timed_chat(client, "chaos")
    final = chat.final
    assert final.status == A.FINISH_STATUS_COMPLETE
    assert outcomes(final) == [("fast-cheap", A.ATTEMPT_OUTCOME_SUCCESS)]
    assert not final.usage.estimated and final.usage.output_tokens > 0
    total = chat.ms(chat.of("final")[0][0])
    figures.record("missing [DONE]: whole answer in", total)
    # The finish reason and the end of the body suffice: no waiting for a timeout.
    assert total < BETWEEN_TOKENS_MS
