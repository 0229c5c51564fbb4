"""Circuit breaker per model deployment: a state machine replayed from attempt results, never stored."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice
from operator import itemgetter

from routemesh.common.outcomes import AttemptOutcome, CircuitState
from routemesh.common.policy_schema import CircuitSettings

# Plain ints: the fold compares states once per result, on every telemetry snapshot.
_CLOSED, _OPEN, _HALF_OPEN = int(CircuitState.CLOSED), int(CircuitState.OPEN), int(CircuitState.HALF_OPEN)
_timestamp = itemgetter(0)

# True: a success; False: a failure (a 429 says the deployment cannot take more, so it counts);
# outcomes missing here say nothing about the deployment's health and are ignored.
_SUCCEEDED: dict[int, bool] = {
    AttemptOutcome.SUCCESS: True,
    AttemptOutcome.RATE_LIMITED: False,
    AttemptOutcome.UPSTREAM_ERROR: False,
    AttemptOutcome.CONNECT_ERROR: False,
    AttemptOutcome.TIMEOUT: False,
    AttemptOutcome.TRUNCATED: False,
}


def counts_as_failure(outcome: int) -> bool | None:
    """True for a failure, False for a success, None for outcomes the breaker ignores."""
    succeeded = _SUCCEEDED.get(outcome)
    return None if succeeded is None else not succeeded


@dataclass(frozen=True, slots=True)
class CircuitView:
    """The breaker as of one moment; admit_fraction is the share of traffic the deployment should get."""

    state: CircuitState
    open_until_ms: int
    admit_fraction: float
    consecutive_failures: int


CLOSED_VIEW = CircuitView(CircuitState.CLOSED, 0, 1.0, 0)


class CircuitMachine:
    """The breaker's state after a run of results; feed() folds more in, view() projects it onto a time.

    CLOSED opens on a failure that ends `consecutive_failures` in a row, or that brings the failure rate
    of the last `window_s` to `failure_rate` with at least `min_samples` results. OPEN lasts `open_s`,
    doubled on each re-open without a close in between (at most `max_open_s`); results stamped before it
    ends are stragglers and ignored. Then HALF_OPEN: a failed probe re-opens, `half_open_probes`
    successes in a row close it and traffic ramps from `probe_fraction` to all over `ramp_s`. Only
    results since the last close feed the rate window, so the failures that opened the breaker cannot
    trip it again the moment it closes.
    """

    __slots__ = ("_settings", "_window_ms", "_open_ms", "_max_open_ms", "_ramp_ms", "state", "open_until_ms",
                 "open_for_ms", "probes", "closed_at_ms", "streak", "_recent", "_recent_lo", "_failures",
                 "_failures_lo")

    def __init__(self, settings: CircuitSettings):
        self._settings = settings
        self._window_ms = int(settings.window_s * 1000)
        self._open_ms = int(min(settings.open_s, settings.max_open_s) * 1000)
        self._max_open_ms = int(settings.max_open_s * 1000)
        self._ramp_ms = int(settings.ramp_s * 1000)
        self.state = _CLOSED
        self.open_until_ms = 0
        self.open_for_ms = 0
        self.probes = 0
        self.closed_at_ms: int | None = None
        self.streak = 0
        # Timestamps of the closed-state results (all, and failures alone); those before *_lo have left the
        # window. Sorted lists with an offset let bisect do the window arithmetic in C.
        self._recent: list[int] = []
        self._recent_lo = 0
        self._failures: list[int] = []
        self._failures_lo = 0

    def feed(self, outcomes: Sequence[tuple[int, bool]]) -> None:
        """Fold (timestamp_ms, success) results, oldest first, into the state."""
        self._fold(outcomes, keep_window=True)

    def _fold(self, outcomes: Sequence[tuple[int, bool]], *, keep_window: bool) -> None:
        # This runs over ~500 results on every telemetry snapshot, so a closed-state success costs next to
        # nothing: the window is counted in `outcomes` itself, and only when a failure asks for the rate.
        s = self._settings
        threshold, min_samples, rate = s.consecutive_failures, s.min_samples, s.failure_rate
        probes_needed, window_ms, max_open_ms = s.half_open_probes, self._window_ms, self._max_open_ms
        closed, opened, half_open = _CLOSED, _OPEN, _HALF_OPEN
        state, open_until, open_for = self.state, self.open_until_ms, self.open_for_ms
        probes, closed_at, streak = self.probes, self.closed_at_ms, self.streak
        recent, lo, failures, flo = self._recent, self._recent_lo, self._failures, self._failures_lo
        # Where in `outcomes` the current closed period starts, and the oldest of its results in the window.
        segment = first = 0
        for j, (ts, ok) in enumerate(outcomes):
            if state == closed:
                if ok:
                    streak = 0
                    continue
                streak += 1
                failures.append(ts)
                if streak < threshold:
                    cutoff = ts - window_ms
                    if first < segment:
                        first = segment
                    while outcomes[first][0] <= cutoff:
                        first += 1
                    count = j + 1 - first
                    if first == segment and recent:
                        lo = bisect_right(recent, cutoff, lo)
                        count += len(recent) - lo
                    # Failures not yet expired bound the rate from above: most of the time that settles it.
                    if count < min_samples or (len(failures) - flo) / count < rate:
                        continue
                    flo = bisect_right(failures, cutoff, flo)
                    if (len(failures) - flo) / count < rate:
                        continue
                state, open_for, open_until = opened, self._open_ms, ts + self._open_ms
                recent.clear()
                failures.clear()
                lo = flo = 0
                continue
            if ok:
                streak = 0
            else:
                streak += 1
            if state == opened:
                if ts < open_until:
                    continue  # a straggler started before the breaker opened: says nothing about recovery
                state, probes = half_open, 0
            if not ok:
                state, open_for = opened, min(open_for * 2, max_open_ms)
                open_until = ts + open_for
                continue
            probes += 1
            if probes >= probes_needed:
                state, closed_at, segment = closed, ts, j + 1
        if keep_window and state == closed and outcomes:
            recent.extend(map(_timestamp, islice(outcomes, segment, None)))
            # Keeps a long-lived breaker's window bounded even when only successes arrive.
            cutoff = outcomes[-1][0] - window_ms
            lo, flo = bisect_right(recent, cutoff, lo), bisect_right(failures, cutoff, flo)
            if lo > 64 and 2 * lo > len(recent):
                del recent[:lo]
                lo = 0
            if flo > 64 and 2 * flo > len(failures):
                del failures[:flo]
                flo = 0
        self.state, self.open_until_ms, self.open_for_ms = state, open_until, open_for
        self.probes, self.closed_at_ms, self.streak = probes, closed_at, streak
        self._recent_lo, self._failures_lo = lo, flo

    def view(self, now_ms: int) -> CircuitView:
        """The breaker at now_ms: an open period that has run out is half-open; a recent close ramps."""
        probe_fraction = self._settings.probe_fraction
        if self.state == _OPEN and now_ms < self.open_until_ms:
            return CircuitView(CircuitState.OPEN, self.open_until_ms, 0.0, self.streak)
        if self.state != _CLOSED:
            return CircuitView(CircuitState.HALF_OPEN, 0, probe_fraction, self.streak)
        closed_at = self.closed_at_ms
        if closed_at is None or self._ramp_ms <= 0 or now_ms - closed_at >= self._ramp_ms:
            return CircuitView(CircuitState.CLOSED, 0, 1.0, self.streak) if self.streak else CLOSED_VIEW
        elapsed = max(0, now_ms - closed_at)
        admit = probe_fraction + (1.0 - probe_fraction) * elapsed / self._ramp_ms
        return CircuitView(CircuitState.CLOSED, 0, admit, self.streak)


def circuit_from_history(outcomes: Sequence[tuple[int, bool]], settings: CircuitSettings,
                         now_ms: int) -> CircuitView:
    """The breaker at now_ms replayed from (timestamp_ms, success) results in time order.

    Every reader of the same history gets the same answer, which is how telemetry replicas agree.
    """
    machine = CircuitMachine(settings)
    machine._fold(outcomes, keep_window=False)  # the machine is thrown away: no window to keep
    return machine.view(now_ms)


class LocalCircuitBreaker:
    """One process's breaker for one deployment, fed as results arrive (the executor's reflex)."""

    def __init__(self, settings: CircuitSettings):
        self.settings = settings
        self._machine = CircuitMachine(settings)
        self._last_ms = 0

    def record(self, success: bool, now_ms: int) -> None:
        # The fold wants time order; a clock stepping back must not reorder results.
        self._last_ms = max(self._last_ms, now_ms)
        self._machine.feed(((self._last_ms, success),))

    def view(self, now_ms: int) -> CircuitView:
        return self._machine.view(now_ms)

    def allow(self, now_ms: int, draw: float) -> bool:
        """Whether one attempt may go out; draw is uniform in [0, 1) and picks the admitted share."""
        view = self._machine.view(now_ms)
        return view.state != CircuitState.OPEN and draw < view.admit_fraction
