"""The circuit breaker state machine: replayed from history, fed live, and both always agree."""

from __future__ import annotations

import timeit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routemesh.common.circuit import (
    CircuitMachine,
    CircuitView,
    LocalCircuitBreaker,
    circuit_from_history,
    counts_as_failure,
)
from routemesh.common.outcomes import CircuitState
from routemesh.common.policy_schema import CircuitSettings
from routemesh.v1 import common_pb2

# Small numbers so histories stay readable: trips on 3 in a row, or >= 50% of >= 6 results in 10 s.
S = CircuitSettings(consecutive_failures=3, failure_rate=0.5, min_samples=6, window_s=10, open_s=5,
                    max_open_s=20, half_open_probes=2, probe_fraction=0.1, ramp_s=10)
OK, F = True, False
CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN


def at(*events: tuple[float, bool]) -> list[tuple[int, bool]]:
    """History from (seconds, success) pairs."""
    return [(int(t * 1000), ok) for t, ok in events]


def spaced(start: float, *results: bool, step: float = 1.0) -> list[tuple[float, bool]]:
    return [(start + i * step, ok) for i, ok in enumerate(results)]


def view(state: CircuitState, open_until_s: float = 0, admit: float = 1.0, failures: int = 0) -> CircuitView:
    return CircuitView(state, int(open_until_s * 1000), admit, failures)


def assert_view(actual: CircuitView, expected: CircuitView) -> None:
    assert (actual.state, actual.open_until_ms, actual.consecutive_failures) == (
        expected.state, expected.open_until_ms, expected.consecutive_failures)
    assert actual.admit_fraction == pytest.approx(expected.admit_fraction)


TRIP_AT_3 = spaced(1, OK, F, F, F)  # opens at 4 s, until 9 s

CASES = {
    "no history is closed": ([], 0, view(CLOSED)),
    "trips on consecutive failures": (TRIP_AT_3, 5, view(OPEN, 9, 0.0, 3)),
    "two in a row do not trip": (spaced(1, F, F, OK, F, F), 6, view(CLOSED, failures=2)),
    "trips on the rate once min_samples is reached": (spaced(1, OK, F, OK, F, OK, F), 6.5, view(OPEN, 11.0, 0.0, 1)),
    "the rate waits for min_samples": (spaced(1, F, OK, F, OK, F), 6, view(CLOSED, failures=1)),
    "failures older than window_s leave the rate": (spaced(0, F, OK, F, OK, F) + [(20, OK), (21, F)], 22,
                                                    view(CLOSED, failures=1)),
    "open ends in half-open with probe traffic": (TRIP_AT_3, 9, view(HALF_OPEN, admit=0.1, failures=3)),
    "stragglers while open change nothing": (TRIP_AT_3 + spaced(5, OK, OK, OK), 8.5, view(OPEN, 9, 0.0)),
    "straggling failures do not extend it": (TRIP_AT_3 + spaced(5, F, F, F), 8.5, view(OPEN, 9, 0.0, 6)),
    "probes in a row close it, ramping from probe_fraction": (TRIP_AT_3 + spaced(9, OK, OK), 10, view(CLOSED, 0, 0.1)),
    "halfway through the ramp": (TRIP_AT_3 + spaced(9, OK, OK), 15, view(CLOSED, 0, 0.55)),
    "the ramp ends at 1": (TRIP_AT_3 + spaced(9, OK, OK), 21, view(CLOSED)),
    "one probe is not enough": (TRIP_AT_3 + spaced(9, OK), 10, view(HALF_OPEN, admit=0.1)),
    "a failed probe re-opens for twice as long": (TRIP_AT_3 + spaced(9, OK, F), 11, view(OPEN, 20, 0.0, 1)),
    "re-opening doubles again, then caps at max_open_s": (
        TRIP_AT_3 + [(9, F), (19, F), (39, F), (59, F)], 60, view(OPEN, 79, 0.0, 7)),
    "a close resets the doubling": (
        TRIP_AT_3 + [(9, F), (19, OK), (20, OK)] + spaced(31, F, F, F), 34, view(OPEN, 38, 0.0, 3)),
    "after a close, the failures that opened it no longer count": (
        spaced(1, OK, F, OK, F, OK, F) + spaced(11, OK, OK, F), 14, view(CLOSED, 0, 0.28, 1)),
}


@pytest.mark.parametrize(("history", "now_s", "expected"), CASES.values(), ids=CASES.keys())
def test_state_machine(history, now_s, expected):
    history = at(*history)
    assert_view(circuit_from_history(history, S, int(now_s * 1000)), expected)
    breaker = LocalCircuitBreaker(S)
    for ts, ok in history:
        breaker.record(ok, ts)
    assert breaker.view(int(now_s * 1000)) == circuit_from_history(history, S, int(now_s * 1000)), (
        "fed one result at a time, it must agree")


OUTCOMES = {
    common_pb2.ATTEMPT_OUTCOME_SUCCESS: False,
    common_pb2.ATTEMPT_OUTCOME_RATE_LIMITED: True,
    common_pb2.ATTEMPT_OUTCOME_UPSTREAM_ERROR: True,
    common_pb2.ATTEMPT_OUTCOME_CONNECT_ERROR: True,
    common_pb2.ATTEMPT_OUTCOME_TIMEOUT: True,
    common_pb2.ATTEMPT_OUTCOME_TRUNCATED: True,
    common_pb2.ATTEMPT_OUTCOME_CANCELLED: None,
    common_pb2.ATTEMPT_OUTCOME_CONFIG_ERROR: None,
    common_pb2.ATTEMPT_OUTCOME_HEDGE_LOST: None,
    common_pb2.ATTEMPT_OUTCOME_CIRCUIT_OPEN: None,
    common_pb2.ATTEMPT_OUTCOME_RETRY_BUDGET_EXHAUSTED: None,
    common_pb2.ATTEMPT_OUTCOME_UNSPECIFIED: None,
}


def test_every_outcome_is_classified():
    assert set(OUTCOMES) == set(common_pb2.AttemptOutcome.values())
    assert {outcome: counts_as_failure(outcome) for outcome in OUTCOMES} == OUTCOMES
    assert counts_as_failure(99) is None, "an outcome from a newer executor is ignored"


def outcome_history(*outcomes: int) -> list[tuple[int, bool]]:
    """History the way telemetry builds it: ignored outcomes dropped."""
    return [(1000 * i, not failed) for i, o in enumerate(outcomes, 1) if (failed := counts_as_failure(o)) is not None]


def test_429s_trip_it_and_cancellations_do_not_break_a_streak():
    limited, cancelled = common_pb2.ATTEMPT_OUTCOME_RATE_LIMITED, common_pb2.ATTEMPT_OUTCOME_CANCELLED
    hedge_lost, success = common_pb2.ATTEMPT_OUTCOME_HEDGE_LOST, common_pb2.ATTEMPT_OUTCOME_SUCCESS
    assert circuit_from_history(outcome_history(limited, limited, limited), S, 3000).state == OPEN
    streak = outcome_history(limited, cancelled, limited, hedge_lost, limited)
    assert circuit_from_history(streak, S, 5000).state == OPEN
    broken = outcome_history(limited, limited, success, limited)
    assert circuit_from_history(broken, S, 4000) == view(CLOSED, failures=1)


def test_local_breaker_allows_by_state_and_draw():
    breaker = LocalCircuitBreaker(S)
    assert breaker.allow(0, 0.999)
    for ts in (1000, 1001, 1002):
        breaker.record(False, ts)
    assert not breaker.allow(1003, 0.0), "open admits nothing"
    assert not breaker.allow(6001, 0.5) and breaker.allow(6002, 0.05), "half-open admits probe_fraction"
    breaker.record(True, 6002)
    breaker.record(True, 6003)
    assert breaker.view(6003).state == CLOSED
    assert not breaker.allow(11_003, 0.6) and breaker.allow(11_003, 0.5), "ramping: 0.55 of traffic"
    assert breaker.allow(16_003, 0.999)


def test_local_breaker_keeps_time_order_when_the_clock_steps_back():
    breaker = LocalCircuitBreaker(S)
    breaker.record(False, 10_000)
    breaker.record(False, 9_000)
    breaker.record(False, 9_500)
    assert breaker.view(10_000) == view(OPEN, 15, 0.0, 3), "the breaker opened at the latest time seen"


def test_a_long_lived_breaker_keeps_a_bounded_window():
    breaker = LocalCircuitBreaker(S)
    for i in range(20_000):
        breaker.record(i % 3 != 0, i * 10)
    machine = breaker._machine
    assert len(machine._recent) < 2_000 and len(machine._failures) < 1_000
    assert breaker.view(200_000).state == CLOSED


settings_strategy = st.builds(
    CircuitSettings,
    consecutive_failures=st.integers(1, 6), failure_rate=st.sampled_from([0.1, 0.3, 0.5, 0.8, 1.0]),
    min_samples=st.integers(1, 10), window_s=st.sampled_from([0.5, 2, 10]), open_s=st.sampled_from([0.5, 1, 5]),
    max_open_s=st.sampled_from([0.5, 3, 20]), half_open_probes=st.integers(1, 4),
    probe_fraction=st.sampled_from([0.05, 0.1, 1.0]), ramp_s=st.sampled_from([0, 1, 10]),
)
histories = st.lists(st.tuples(st.integers(0, 1500), st.booleans()), max_size=120).map(
    lambda steps: [(sum(gap for gap, _ in steps[:i + 1]), ok) for i, (_, ok) in enumerate(steps)])


def reference(history: list[tuple[int, bool]], s: CircuitSettings, now_ms: int) -> CircuitView:
    """The state machine as plainly as it can be written, to check the fast one against."""
    state, streak, probes, open_until, open_for, closed_at = CLOSED, 0, 0, 0, 0, None
    window: list[tuple[int, bool]] = []
    for ts, ok in history:
        streak = 0 if ok else streak + 1
        if state == CLOSED:
            window.append((ts, ok))
            recent = [ok for t, ok in window if t > ts - s.window_s * 1000]
            rate_trips = len(recent) >= s.min_samples and recent.count(False) / len(recent) >= s.failure_rate
            if not ok and (streak >= s.consecutive_failures or rate_trips):
                state, open_for, window = OPEN, int(min(s.open_s, s.max_open_s) * 1000), []
                open_until = ts + open_for
            continue
        if state == OPEN and ts < open_until:
            continue
        if state == OPEN:
            state, probes = HALF_OPEN, 0
        if not ok:
            state, open_for = OPEN, min(open_for * 2, int(s.max_open_s * 1000))
            open_until = ts + open_for
        elif (probes := probes + 1) >= s.half_open_probes:
            state, closed_at = CLOSED, ts
    if state == OPEN and now_ms < open_until:
        return CircuitView(OPEN, open_until, 0.0, streak)
    if state != CLOSED:
        return CircuitView(HALF_OPEN, 0, s.probe_fraction, streak)
    ramp_ms = s.ramp_s * 1000
    if closed_at is None or ramp_ms == 0 or now_ms - closed_at >= ramp_ms:
        return CircuitView(CLOSED, 0, 1.0, streak)
    return CircuitView(CLOSED, 0, s.probe_fraction + (1 - s.probe_fraction) * max(0, now_ms - closed_at) / ramp_ms,
                       streak)


@settings(max_examples=300, deadline=None)
@given(history=histories, s=settings_strategy, later=st.integers(0, 30_000), cuts=st.lists(st.integers(0, 120)))
def test_replay_feed_and_reference_agree_and_stay_in_bounds(history, s, later, cuts):
    now_ms = (history[-1][0] if history else 0) + later
    replayed = circuit_from_history(history, s, now_ms)
    assert 0.0 <= replayed.admit_fraction <= 1.0
    if replayed.state == OPEN:
        assert replayed.admit_fraction == 0.0 and replayed.open_until_ms > now_ms
    else:
        assert replayed.admit_fraction > 0.0 and replayed.open_until_ms == 0
    assert_view(replayed, reference(history, s, now_ms))
    machine = CircuitMachine(s)
    bounds = sorted({0, len(history), *(c for c in cuts if c < len(history))})
    for start, end in zip(bounds, bounds[1:], strict=False):
        machine.feed(history[start:end])
    assert machine.view(now_ms) == replayed, "fed in chunks, the machine must agree with the replay"


def test_replaying_500_results_is_cheap():
    mixed = [(i * 10, i % 10 not in (1, 4, 7)) for i in range(500)]  # 30% failures, never tripping
    failing = [(i * 10, False) for i in range(500)]
    for history in (mixed, failing):
        best = min(timeit.repeat(lambda h=history: circuit_from_history(h, S, 5_000), number=20, repeat=5)) / 20
        assert best < 0.002, f"{best * 1e6:.0f} us for 500 results (target: ~100 us)"
