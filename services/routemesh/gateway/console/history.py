"""The console's short memory: per-model figures every few seconds for ten minutes, kept while someone looks.

Samples are taken only when a console asks for the overview (the mesh stays quiet when nobody looks), at most
one per `every_s` however many consoles are open, so a reload still shows the last minutes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

# The per-model figures kept, as the model table names them.
FIGURES = ("requests_per_minute", "ttft_p50_ms", "ttft_p90_ms", "error_rate", "spend_per_minute_usd", "in_flight")


class SnapshotHistory:
    """A ring of (time, per-model figures); `every_s` apart at least, `span_s` long."""

    def __init__(self, every_s: float = 2.0, span_s: float = 600.0):
        self.every_ms = int(every_s * 1000)
        self._samples: deque[tuple[int, dict[str, tuple[float, ...]]]] = deque(maxlen=max(1, int(span_s / every_s)))

    def __len__(self) -> int:
        return len(self._samples)

    def due(self, now_ms: int) -> bool:
        """Whether a new sample is wanted now (a tenth early, so a poll every `every_s` always lands one)."""
        return not self._samples or now_ms - self._samples[-1][0] >= self.every_ms * 0.9

    def add(self, at_ms: int, rows: Iterable[dict[str, Any]]) -> bool:
        """Keep the figures of `rows` (model_rows) taken at `at_ms` if a sample is due; whether it was kept."""
        if not self.due(at_ms):
            return False
        self._samples.append((at_ms, {r["model"]: tuple(float(r[f]) for f in FIGURES) for r in rows}))
        return True

    def series(self) -> dict[str, Any]:
        """{"t": [ms...], "models": {model: {figure: [value or None...]}}}: one value per sample, None where the
        model was not in that sample."""
        times = [at for at, _ in self._samples]
        names = sorted({name for _, models in self._samples for name in models})
        models: dict[str, dict[str, list[float | None]]] = {n: {f: [] for f in FIGURES} for n in names}
        for _, sample in self._samples:
            for name in names:
                values = sample.get(name)
                for i, figure in enumerate(FIGURES):
                    models[name][figure].append(values[i] if values is not None else None)
        return {"t": times, "every_ms": self.every_ms, "models": models}
