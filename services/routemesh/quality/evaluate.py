"""How routing is judged: cost–quality curves, strong-call share at a quality target, APGR, and baselines."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from routemesh.classifier.tokens import estimate_text_tokens
from routemesh.quality.outcomes import OutcomeTable

TARGET_FRACTION = 0.95
OVERALL = "overall"
RANDOM, LENGTH_CHARS, LENGTH_TOKENS = "random", "length_chars", "length_tokens"
# Steps of the curve shown in the text table and in the JSON (every point is in CostQualityCurve).
CURVE_STEPS = 10
# RouteLLM (Ong et al., ICLR 2025, eq. 8) averages PGR over 10 evenly spaced strong-call shares.
APGR_BINS = 10
JSON_CURVE_STEPS = 100
# Tie groups add fractions of a prompt; a rounding error must not move the first point that reaches a target.
_COUNT_TOLERANCE = 1e-9

DEFINITIONS = {
    "curve": "route the k highest-scored prompts to the strong model, k = 0..n; prompts with equal scores "
             "share the calls of their group evenly (the expected accuracy over orders of the group), so a "
             "constant score is exactly the random line",
    "strong_share_at_target": "the smallest strong-call share at which the curve reaches the target fraction "
                              "of the strong model's accuracy, interpolated linearly between the two curve "
                              "points around the crossing (routing the next prompt with that probability)",
    "apgr": "as RouteLLM computes it (eq. 8): the mean of PGR(share) = (acc(share) - weak acc) / "
            "(strong acc - weak acc) at the 10 strong-call shares 10 %, 20 %, ..., 100 %; random routing "
            "scores 0.55; undefined when strong acc <= weak acc",
    "apgr_area": "the exact integral of PGR over share in [0, 1] (RouteLLM eq. 7): the trapezoid area under "
                 "the whole curve (all n+1 points); random routing scores 0.5",
    "random": "the expected curve of random routing: linear from weak to strong accuracy, exact (not sampled)",
    "length_chars": "score = prompt length in characters (longer goes to the strong model first)",
    "length_tokens": "score = estimated cl100k_base tokens of the prompt (the classifier's token estimate)",
}


@dataclass(frozen=True)
class CostQualityCurve:
    """Accuracy after routing the k highest-scored of n prompts to the strong model, for k = 0..n."""

    accuracies: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.accuracies) - 1

    @property
    def shares(self) -> tuple[float, ...]:
        return tuple(k / self.n for k in range(self.n + 1))

    def accuracy_at(self, share: float) -> float:
        """Accuracy at a strong-call share in [0, 1], linear between curve points."""
        position = min(max(share, 0.0), 1.0) * self.n
        k = min(int(position), self.n - 1)
        low, high = self.accuracies[k], self.accuracies[k + 1]
        return low + (high - low) * (position - k)


@dataclass(frozen=True)
class MethodResult:
    """How one routing score did on one set of prompts."""

    method: str
    curve: CostQualityCurve
    # Smallest strong-call share reaching the target accuracy (DEFINITIONS["strong_share_at_target"]).
    strong_share_at_target: float
    # None when the strong model is no better than the weak one: there is no gap to recover.
    apgr: float | None
    apgr_area: float | None


@dataclass(frozen=True)
class BenchmarkResult:
    """Every method's result on the prompts of one benchmark (or all of them, as OVERALL)."""

    benchmark: str
    n: int
    # None when there are no prompts.
    weak_accuracy: float | None
    strong_accuracy: float | None
    target_fraction: float
    methods: tuple[MethodResult, ...]
    # Why some figures are missing ("" when none is).
    note: str = ""

    @property
    def target_accuracy(self) -> float | None:
        return None if self.strong_accuracy is None else self.target_fraction * self.strong_accuracy


def cost_quality_curve(scores: Sequence[float], weak_correct: Sequence[int],
                       strong_correct: Sequence[int]) -> CostQualityCurve:
    """The curve of routing by `scores` (higher = strong model first); each score set must be non-empty."""
    n = len(scores)
    if n == 0:
        raise ValueError("no prompts: a cost-quality curve needs at least one")
    if len(weak_correct) != n or len(strong_correct) != n:
        raise ValueError(f"{n} scores but {len(weak_correct)} weak and {len(strong_correct)} strong outcomes")
    if any(not math.isfinite(s) for s in scores):
        raise ValueError("scores must be finite numbers (found NaN or infinity)")
    if any(v not in (0, 1) for v in itertools.chain(weak_correct, strong_correct)):
        raise ValueError("outcomes must be 0 or 1")
    order = sorted(range(n), key=lambda i: (-scores[i], i))
    correct = float(sum(weak_correct))
    counts = [correct]
    for _, group in itertools.groupby(order, key=lambda i: scores[i]):
        members = list(group)
        gain = sum(strong_correct[i] - weak_correct[i] for i in members)
        counts.extend(correct + gain * m / len(members) for m in range(1, len(members) + 1))
        correct += gain
    return CostQualityCurve(tuple(c / n for c in counts))


def strong_share_to_reach(curve: CostQualityCurve, accuracy: float) -> float | None:
    """The smallest strong-call share whose accuracy is at least `accuracy` (None when never reached)."""
    n, counts, wanted = curve.n, [a * curve.n for a in curve.accuracies], accuracy * curve.n
    for k, count in enumerate(counts):
        if count >= wanted - _COUNT_TOLERANCE:
            if k == 0:
                return 0.0
            step = (wanted - counts[k - 1]) / (count - counts[k - 1])
            return (k - 1 + min(max(step, 0.0), 1.0)) / n
    return None


def apgr(curve: CostQualityCurve, bins: int = APGR_BINS) -> float | None:
    """Average performance gap recovered at `bins` evenly spaced shares (DEFINITIONS["apgr"]); None without a gap."""
    weak, strong = curve.accuracies[0], curve.accuracies[-1]
    if strong <= weak:
        return None
    return math.fsum(curve.accuracy_at(k / bins) - weak for k in range(1, bins + 1)) / bins / (strong - weak)


def apgr_area(curve: CostQualityCurve) -> float | None:
    """Average performance gap recovered over the whole curve (DEFINITIONS["apgr_area"]); None without a gap."""
    weak, strong = curve.accuracies[0], curve.accuracies[-1]
    if strong <= weak:
        return None
    area = (math.fsum(curve.accuracies) - (weak + strong) / 2) / curve.n
    return (area - weak) / (strong - weak)


def baseline_scores(table: OutcomeTable) -> dict[str, list[float]]:
    """Scores of the baselines: random (a constant: every prompt ties) and prompt length two ways."""
    return {
        RANDOM: [0.0] * len(table),
        LENGTH_CHARS: [float(len(p)) for p in table.prompts],
        LENGTH_TOKENS: [float(estimate_text_tokens(p)) for p in table.prompts],
    }


def _judge(name: str, rows: Sequence[int], scores: Sequence[float], weak: Sequence[int],
           strong: Sequence[int], target_fraction: float) -> MethodResult:
    curve = cost_quality_curve([scores[i] for i in rows], [weak[i] for i in rows], [strong[i] for i in rows])
    share = strong_share_to_reach(curve, target_fraction * curve.accuracies[-1])
    assert share is not None, "the last point, all strong, reaches any fraction <= 1 of the strong accuracy"
    return MethodResult(method=name, curve=curve, strong_share_at_target=share, apgr=apgr(curve),
                        apgr_area=apgr_area(curve))


def _benchmark_result(benchmark: str, rows: Sequence[int], scores_by_method: Mapping[str, Sequence[float]],
                      weak: Sequence[int], strong: Sequence[int], target_fraction: float) -> BenchmarkResult:
    if not rows:
        return BenchmarkResult(benchmark, 0, None, None, target_fraction, (), note="no prompts")
    methods = tuple(_judge(name, rows, scores, weak, strong, target_fraction)
                    for name, scores in scores_by_method.items())
    weak_accuracy, strong_accuracy = sum(weak[i] for i in rows) / len(rows), sum(strong[i] for i in rows) / len(rows)
    note = "" if strong_accuracy > weak_accuracy else \
        "strong accuracy <= weak accuracy: no gap to recover, PGR and APGR undefined"
    return BenchmarkResult(benchmark, len(rows), weak_accuracy, strong_accuracy, target_fraction, methods, note)


def evaluate(scores_by_method: Mapping[str, Sequence[float]], table: OutcomeTable, weak: str, strong: str, *,
             target_fraction: float = TARGET_FRACTION, baselines: bool = True) -> list[BenchmarkResult]:
    """Judge each method's per-prompt scores (one per row of `table`; higher = strong model first).

    One result per benchmark (source prefix, sorted) and OVERALL last. With `baselines`, random and
    prompt length are judged first in the same run, on the same rows.
    """
    for model in (weak, strong):
        if model not in table.outcomes:
            raise ValueError(f"no outcomes for model {model!r} (the table has: {', '.join(table.models)})")
    if not 0.0 < target_fraction <= 1.0:
        raise ValueError(f"target fraction {target_fraction} is not in (0, 1]")
    methods: dict[str, Sequence[float]] = dict(baseline_scores(table)) if baselines else {}
    for name, scores in scores_by_method.items():
        if name in methods:
            raise ValueError(f"method {name!r} has the name of a baseline")
        if len(scores) != len(table):
            raise ValueError(f"method {name!r}: {len(scores)} scores for {len(table)} prompts")
        methods[name] = scores
    rows_by_benchmark: dict[str, list[int]] = {}
    for i in range(len(table)):
        rows_by_benchmark.setdefault(table.benchmark(i), []).append(i)
    groups = [*sorted(rows_by_benchmark.items()), (OVERALL, list(range(len(table))))]
    return [_benchmark_result(name, rows, methods, table.outcomes[weak], table.outcomes[strong], target_fraction)
            for name, rows in groups]


def _number(value: float | None, percent: bool = False) -> str:
    if value is None:
        return "undefined"
    return f"{value:.1%}" if percent else f"{value:.3f}"


def _grid(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(line[c]) for line in [header, *rows]) for c in range(len(header))]
    render = [" | ".join(cell.ljust(widths[c]) if c < 2 else cell.rjust(widths[c]) for c, cell in enumerate(line))
              for line in [header, *rows]]
    return [render[0], "-+-".join("-" * w for w in widths), *render[1:]]


def format_table(results: Sequence[BenchmarkResult], curve_steps: int = CURVE_STEPS) -> str:
    """The results as text: a summary per benchmark × method, the curves at `curve_steps` steps (0: none)."""
    fraction = results[0].target_fraction if results else TARGET_FRACTION
    header = ["benchmark", "method", "n", "weak acc", "strong acc", f"strong share @{fraction:.0%}", "APGR",
              "APGR area"]
    rows = []
    for result in results:
        if not result.methods:
            rows.append([result.benchmark, "-", str(result.n), _number(result.weak_accuracy),
                         _number(result.strong_accuracy), "-", "-", "-"])
        for method in result.methods:
            rows.append([result.benchmark, method.method, str(result.n), _number(result.weak_accuracy),
                         _number(result.strong_accuracy), _number(method.strong_share_at_target, True),
                         _number(method.apgr), _number(method.apgr_area)])
    lines = _grid(header, rows)
    if curve_steps:
        shares = [k / curve_steps for k in range(curve_steps + 1)]
        curve_rows = [[r.benchmark, m.method, *(f"{m.curve.accuracy_at(s):.3f}" for s in shares)]
                      for r in results for m in r.methods]
        lines += ["", "accuracy by strong-call share:", *_grid(["benchmark", "method", *(f"{s:.0%}" for s in shares)],
                                                               curve_rows)]
    notes = [f"{r.benchmark}: {r.note}" for r in results if r.note]
    lines += ["", *notes, *(f"{key}: {text}" for key, text in DEFINITIONS.items() if key in _terms_used(results))]
    return "\n".join(lines)


def _terms_used(results: Sequence[BenchmarkResult]) -> set[str]:
    return {"curve", "strong_share_at_target", "apgr", "apgr_area"} | {m.method for r in results for m in r.methods}


def to_json(results: Sequence[BenchmarkResult], curve_steps: int = JSON_CURVE_STEPS) -> dict:
    """The results as a JSON-ready dict; each curve sampled at `curve_steps` + 1 evenly spaced shares."""
    shares = [k / curve_steps for k in range(curve_steps + 1)]

    def method_json(method: MethodResult) -> dict:
        return {"method": method.method, "strong_share_at_target": method.strong_share_at_target,
                "apgr": method.apgr, "apgr_area": method.apgr_area, "curve": {"strong_share": shares,
                                               "accuracy": [method.curve.accuracy_at(s) for s in shares]}}

    return {
        "definitions": {key: text for key, text in DEFINITIONS.items() if key in _terms_used(results)},
        "benchmarks": [{"benchmark": r.benchmark, "n": r.n, "weak_accuracy": r.weak_accuracy,
                        "strong_accuracy": r.strong_accuracy, "target_fraction": r.target_fraction,
                        "target_accuracy": r.target_accuracy, "note": r.note,
                        "methods": [method_json(m) for m in r.methods]} for r in results],
    }
