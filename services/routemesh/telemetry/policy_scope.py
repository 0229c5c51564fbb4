"""A HealthStore that keeps observations only for models of the policy in force (and parks the rest briefly)."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Container, Sequence

from routemesh.common.policy import PolicyVersion
from routemesh.common.policy_schema import CircuitSettings
from routemesh.common.policy_watch import PolicyHolder
from routemesh.telemetry.experiments import RequestSummaryRecord, VariantStatsRecord
from routemesh.telemetry.store import HealthStore, ModelStats, ObservationRecord

log = logging.getLogger(__name__)

# Model names whose observations wait for a policy naming them; a name beyond these is dropped at once.
PARKED_MODELS = 64
# Observations parked per name; a rollout's first seconds of a new model fit (the executor reports in
# batches of 200), a flood of made-up names costs at most PARKED_MODELS x this many small records.
PARKED_PER_MODEL = 200
# How long a parked name waits: far longer than a policy takes to reach every service (a watch stream
# each), far shorter than the store's window, so what is replayed still counts.
PARK_S = 120.0
WARNING_INTERVAL_S = 10.0
# Characters of a dropped model name a warning quotes (names come from callers).
QUOTED_NAME_CHARS = 64


class _Parked:
    __slots__ = ("since", "observations")

    def __init__(self, since: float):
        self.since = since
        self.observations: deque[ObservationRecord] = deque(maxlen=PARKED_PER_MODEL)


class PolicyScopedStore:
    """Records observations of the models the held policy names; anything else never reaches the store.

    Why: every name a caller reports used to become a window, a Redis key set and an entry of every snapshot
    pushed to routers. Reports for 50,000 made-up models grew telemetry from 82 to 342 MB, kept a core busy
    and made each router's snapshot 14 MB. The router routes only to the policy's models, so health of any
    other name serves nobody.

    A rollout must not lose a new model's first reports: control pushes a version to executors and to
    telemetry over separate streams, so an executor may run a model that telemetry's policy does not name
    yet. Observations of an unknown name are therefore parked (bounded: PARKED_MODELS names, PARKED_PER_MODEL
    observations each) and recorded, with their own timestamps, as soon as a held policy names the model.
    A name no policy names within PARK_S is dropped; every drop is counted (`dropped`, and by reason in
    `dropped_by_reason`) and logged at most once per WARNING_INTERVAL_S, so a model that is really missing
    from the policy shows in the log instead of vanishing silently.
    """

    def __init__(self, inner: HealthStore, holder: PolicyHolder[PolicyVersion], *,
                 clock: Callable[[], float] = time.monotonic):
        self.inner = inner
        self.window_s = inner.window_s
        self.holder = holder
        self.dropped = 0
        self.dropped_by_reason: dict[str, int] = {"never named": 0, "too many names parked": 0,
                                                  "too many observations parked": 0}
        self._clock = clock
        self._parked: dict[str, _Parked] = {}  # oldest first
        self._released_for: PolicyVersion | None = None
        self._next_warning = 0.0
        self._unreported: dict[str, int] = {}
        self._example = ""

    def known(self) -> Container[str]:
        """The model names observations are recorded for now: the held policy's (none before one arrives)."""
        held = self.holder.current
        return held.policy.models if held is not None else ()

    @property
    def parked(self) -> int:
        """Observations waiting for a policy that names their model."""
        return sum(len(p.observations) for p in self._parked.values())

    async def record(self, observations: Sequence[ObservationRecord]) -> None:
        ready = await self._release()
        models = self.known()
        kept = [obs for obs in observations if obs.model in models]
        if len(kept) < len(observations):
            self._park([obs for obs in observations if obs.model not in models])
        if ready or kept:
            await self.inner.record(ready + kept)

    def _park(self, observations: Sequence[ObservationRecord]) -> None:
        now = self._clock()
        for obs in observations:
            parked = self._parked.get(obs.model)
            if parked is None:
                if len(self._parked) >= PARKED_MODELS:
                    self._drop("too many names parked", 1, obs.model)
                    continue
                parked = self._parked[obs.model] = _Parked(now)
            if len(parked.observations) == PARKED_PER_MODEL:
                self._drop("too many observations parked", 1, obs.model)  # the oldest goes
            parked.observations.append(obs)

    async def _release(self) -> list[ObservationRecord]:
        """Parked observations a newly held policy names (to record now); expired names are dropped."""
        held = self.holder.current
        ready: list[ObservationRecord] = []
        if held is not None and held is not self._released_for:
            self._released_for = held
            for name in [n for n in self._parked if n in held.policy.models]:
                ready.extend(self._parked.pop(name).observations)
        cutoff = self._clock() - PARK_S
        while self._parked:
            name, parked = next(iter(self._parked.items()))
            if parked.since > cutoff:
                break
            del self._parked[name]
            self._drop("never named", len(parked.observations), name)
        return ready

    def _drop(self, reason: str, count: int, model: str) -> None:
        self.dropped += count
        self.dropped_by_reason[reason] += count
        self._unreported[reason] = self._unreported.get(reason, 0) + count
        self._example = model
        now = self._clock()
        if now < self._next_warning:
            return
        self._next_warning = now + WARNING_INTERVAL_S
        held = self.holder.current
        example = self._example[:QUOTED_NAME_CHARS] + ("..." if len(self._example) > QUOTED_NAME_CHARS else "")
        log.warning("telemetry dropped observations of models policy version %s does not name: %s (e.g. %r); "
                    "%d dropped in total", held.version if held else "none",
                    ", ".join(f"{n} {why}" for why, n in self._unreported.items()), example, self.dropped)
        self._unreported.clear()

    async def record_requests(self, requests: Sequence[RequestSummaryRecord]) -> None:
        await self.inner.record_requests(requests)

    async def experiment_report(self, experiment: str | None, now_ms: int) -> list[VariantStatsRecord]:
        return await self.inner.experiment_report(experiment, now_ms)

    async def snapshot(self, models: Sequence[str], now_ms: int,
                       circuit: CircuitSettings | None = None) -> dict[str, ModelStats]:
        ready = await self._release()
        if ready:
            await self.inner.record(ready)
        return await self.inner.snapshot(models, now_ms, circuit)

    async def seen_models(self, now_ms: int) -> list[str]:
        return await self.inner.seen_models(now_ms)

    async def close(self) -> None:
        await self.inner.close()
