"""Turns measured phases into per-round figures, medians and spreads, targets, a table and JSON."""

from __future__ import annotations

import operator
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TextIO

from routemesh.bench.stats import minus, per, ratio, spread
from routemesh.common.stats import percentile

# Processes whose CPU is the provider's, the load generator's or the compared proxy's, not routemesh's (nor are
# the floor's, named FLOOR_PREFIX + role).
_NOT_ROUTEMESH = {"sim", "bench-client", "compare"}
FLOOR_PREFIX = "floor-"
# The arms measured against "direct" (the provider itself): routemesh's router over gRPC ("through", the name
# the JSON has always used), routemesh's OpenAI-compatible gateway, a proxy of the user's (--compare-url), and the
# floor (--floor: routemesh's hops in bare Python gRPC, bench/floor.py).
SUBJECTS = ("through", "gateway", "compare", "floor")
ARM_TITLES = {"through": "routemesh gRPC", "gateway": "routemesh gateway", "compare": "compared proxy",
              "floor": "floor (the same hops in bare Python gRPC, no routemesh code)"}
SHORT_ADDED_P99_MS = 50.0
THROUGHPUT_STREAMS = 64


@dataclass(frozen=True)
class Target:
    """A goal from the issue, checked on a figure's value (the median of its per-round values)."""

    op: str  # "<=" or ">="
    limit: float
    unit: str

    def met(self, value: float | None) -> bool | None:
        if value is None:
            return None
        return (operator.le if self.op == "<=" else operator.ge)(value, self.limit)

    def text(self) -> str:
        limit = f"{self.limit:,.0f}" if self.limit >= 1000 else f"{self.limit:g}"
        return f"{'≤' if self.op == '<=' else '≥'} {limit}{(' ' + self.unit) if self.unit else ''}"


TARGETS = {
    # Issue 16: the default mesh keeps the classifier hop (2.5 ms); `--classifier local` is held to 2 ms.
    "added_ttft_p50_ms": Target("<=", 2.5, "ms"),
    "added_ttft_p99_ms": Target("<=", 5, "ms"),
    "added_gap_p50_ms": Target("<=", 0.2, "ms"),
    "added_gap_p99_ms": Target("<=", 1, "ms"),
    # Up to THROUGHPUT_STREAMS streams: at 256 the mesh, provider and client share the 2 cores (issue 16 retired it).
    "total_duration_ratio": Target("<=", 1.01, ""),
    "tokens_per_s": Target(">=", 20_000, "tok/s"),  # at THROUGHPUT_STREAMS streams only
    "short_requests_per_s": Target(">=", 400, "req/s"),
    "cpu_ms_per_request": Target("<=", 4, "ms"),
    "cpu_ms_per_token": Target("<=", 0.04, "ms"),  # over both hops, at THROUGHPUT_STREAMS streams only
    # The gateway arm against the gRPC arm of the same round: what the HTTP hop adds.
    "gateway_added_ttft_p50_ms": Target("<=", 1, "ms"),
    "gateway_added_cpu_ms_per_request": Target("<=", 1, "ms"),
    "decision_p99_us": Target("<=", 200, "µs"),
    "classifier_p99_us": Target("<=", 1000, "µs"),
    "key_check_p99_us": Target("<=", 50, "µs"),  # the router's API-key check, verdict cached
    "ledger_record_p99_us": Target("<=", 50, "µs"),  # the ledger's fields of a request summary, after the answer
}
LOCAL_CLASSIFIER_TTFT_P50 = Target("<=", 2, "ms")


def targets_for(classifier: str = "service") -> dict[str, Target]:
    """The targets of a run: `--classifier local` holds added TTFT p50 to 2 ms instead of 2.5."""
    return {**TARGETS, "added_ttft_p50_ms": LOCAL_CLASSIFIER_TTFT_P50} if classifier == "local" else dict(TARGETS)


def _target_at(targets: dict[str, Target], fid: str, concurrency: int) -> Target | None:
    """A figure's target at one concurrency: some apply at THROUGHPUT_STREAMS only, the ratio up to it."""
    if fid in ("tokens_per_s", "cpu_ms_per_token") and concurrency != THROUGHPUT_STREAMS:
        return None
    if fid == "total_duration_ratio" and concurrency > THROUGHPUT_STREAMS:
        return None
    return targets.get(fid)

# (figure id, label, modes it is reported for, "c1" for the lowest concurrency only or "each")
_LATENCY_FIGURES = [
    ("added_ttft_p50_ms", "added TTFT p50 ms", ("zero", "realistic"), "c1"),
    ("added_ttft_p99_ms", "added TTFT p99 ms", ("zero", "realistic"), "c1"),
    # With a zero-delay provider the whole answer arrives at once and is relayed as one chunk, so there is
    # no gap to compare: gaps are a realistic-mode figure (the per-phase gap summaries are in the JSON).
    ("added_gap_p50_ms", "added gap between chunks p50 ms", ("realistic",), "c1"),
    ("added_gap_p99_ms", "added gap between chunks p99 ms", ("realistic",), "c1"),
    ("tokens_per_chunk", "tokens per chunk, mean", ("zero", "realistic"), "each"),
    ("total_duration_ratio", "total duration p50 ratio", ("realistic",), "each"),
    ("ttft_ratio", "TTFT p50 ratio", ("realistic",), "each"),
    ("added_total_p99_ms", "added total duration p99 ms", ("zero",), "each"),
    ("requests_per_s", "requests/s", ("zero",), "each"),
    ("tokens_per_s", "relayed tokens/s", ("zero",), "each"),
    ("cpu_ms_per_request", "CPU ms per request", ("zero",), "each"),
    ("cpu_ms_per_token", "CPU ms per relayed token", ("zero", "realistic"), "each"),
]
# (name in run_micro's result, label): each is reported at p50 and p99.
_MICROS = [("decision", "decision"), ("classifier", "classifier"), ("key_check", "key check (cached)"),
           ("key_usage", "key usage counted (in memory)"), ("ledger_record", "ledger record (router)")]
MICRO_FIGURES = [f"{name}_{q}_us" for name, _ in _MICROS for q in ("p50", "p99")]
# One arm against another of the same round: (figure id, label, modes, "c1" or "each", the arm's metric).
_GATEWAY_FIGURES = [
    ("gateway_added_ttft_p50_ms", "gateway TTFT p50 over gRPC ms", ("zero", "realistic"), "c1", "ttft_p50_ms"),
    ("gateway_added_ttft_p99_ms", "gateway TTFT p99 over gRPC ms", ("zero", "realistic"), "c1", "ttft_p99_ms"),
    ("gateway_added_cpu_ms_per_request", "gateway CPU per request over gRPC ms", ("zero",), "each",
     "routemesh_cpu_ms_per_request"),
]
# What routemesh's own code costs: its gRPC arm against the floor's.
_FLOOR_FIGURES = [
    ("floor_added_ttft_p50_ms", "gRPC TTFT p50 over the floor ms", ("zero", "realistic"), "c1", "ttft_p50_ms"),
    ("floor_added_ttft_p99_ms", "gRPC TTFT p99 over the floor ms", ("zero", "realistic"), "c1", "ttft_p99_ms"),
    ("floor_added_cpu_ms_per_request", "gRPC CPU per request over the floor ms", ("zero",), "each",
     "routemesh_cpu_ms_per_request"),
    ("floor_added_cpu_ms_per_token", "gRPC CPU per relayed token over the floor ms", ("zero", "realistic"), "each",
     "routemesh_cpu_ms_per_token"),
]
# (base arm, compared arm, the table section's arm name, its figures)
_COMPARISONS = [("through", "gateway", "gateway-vs-grpc", _GATEWAY_FIGURES),
                ("floor", "through", "grpc-vs-floor", _FLOOR_FIGURES)]


def arm_metrics(phase: dict) -> dict[str, float | None]:
    """One arm's figures for one round."""
    cpu = phase["cpu_ms"]
    # What the arm under test spends: routemesh's processes, the compared proxy's (when its pid was given), or
    # the floor's.
    if phase["arm"] == "compare":
        routemesh_cpu = cpu.get("compare")
    elif phase["arm"] == "floor":
        routemesh_cpu = sum(ms for name, ms in cpu.items() if name.startswith(FLOOR_PREFIX))
    else:
        routemesh_cpu = sum(ms for name, ms in cpu.items()
                            if name not in _NOT_ROUTEMESH and not name.startswith(FLOOR_PREFIX))
    ok, tokens, wall = phase["ok"], phase["tokens"], phase["wall_s"]
    return {
        "ttft_p50_ms": percentile(sorted(phase["ttft_ms"]), 0.5) if phase["ttft_ms"] else None,
        "ttft_p99_ms": percentile(sorted(phase["ttft_ms"]), 0.99) if phase["ttft_ms"] else None,
        "total_p50_ms": percentile(sorted(phase["total_ms"]), 0.5) if phase["total_ms"] else None,
        "total_p99_ms": percentile(sorted(phase["total_ms"]), 0.99) if phase["total_ms"] else None,
        "gap_p50_ms": phase["gap_ms"]["p50"],
        "gap_p99_ms": phase["gap_ms"]["p99"],
        "tokens_per_chunk": per(tokens, phase["chunks"]),
        "requests_per_s": per(ok, wall),
        "tokens_per_s": per(tokens, wall),
        "routemesh_cpu_ms_per_request": per(routemesh_cpu, ok),
        "routemesh_cpu_ms_per_token": per(routemesh_cpu, tokens),
        "sim_cpu_ms_per_request": per(cpu.get("sim"), ok),
        "mesh_cpu_ms_per_request": per(None if routemesh_cpu is None else routemesh_cpu + cpu.get("sim", 0.0), ok),
        "mesh_cpu_ms_per_token": per(None if routemesh_cpu is None else routemesh_cpu + cpu.get("sim", 0.0), tokens),
        "sim_cpu_ms_per_token": per(cpu.get("sim"), tokens),
        "client_cpu_ms_per_request": per(cpu.get("bench-client"), ok),
        "failed": phase["failed"],
    }


def _figure_values(fid: str, direct: dict, through: dict) -> tuple[float | None, float | None, float | None]:
    """(direct, through, value) of one figure in one round; `value` is what the target is checked on."""
    pairs: dict[str, tuple[str, str, Callable]] = {
        "added_ttft_p50_ms": ("ttft_p50_ms", "ttft_p50_ms", minus),
        "added_ttft_p99_ms": ("ttft_p99_ms", "ttft_p99_ms", minus),
        "added_gap_p50_ms": ("gap_p50_ms", "gap_p50_ms", minus),
        "added_gap_p99_ms": ("gap_p99_ms", "gap_p99_ms", minus),
        "added_total_p99_ms": ("total_p99_ms", "total_p99_ms", minus),
        "total_duration_ratio": ("total_p50_ms", "total_p50_ms", ratio),
        "ttft_ratio": ("ttft_p50_ms", "ttft_p50_ms", ratio),
        "tokens_per_chunk": ("tokens_per_chunk", "tokens_per_chunk", lambda t, d: t),
        "requests_per_s": ("requests_per_s", "requests_per_s", lambda t, d: t),
        "tokens_per_s": ("tokens_per_s", "tokens_per_s", lambda t, d: t),
        # Direct: the sim's CPU serving the direct arm; through: every mesh process (sim included);
        # value: routemesh's own processes, what routemesh adds.
        "cpu_ms_per_request": ("sim_cpu_ms_per_request", "mesh_cpu_ms_per_request", None),
        "cpu_ms_per_token": ("sim_cpu_ms_per_token", "mesh_cpu_ms_per_token", None),
    }
    d_key, t_key, combine = pairs[fid]
    d, t = direct.get(d_key), through.get(t_key)
    if combine is None:
        own = "routemesh_cpu_ms_per_request" if fid == "cpu_ms_per_request" else "routemesh_cpu_ms_per_token"
        return d, t, through.get(own)
    return d, t, combine(t, d)


def _figure(key: str, label: str, fid: str, rounds: list[tuple[float | None, ...]], target: Target | None,
            **where: object) -> dict:
    values = spread([r[2] for r in rounds])
    return {
        "key": key, "id": fid, "label": label, **where,
        "direct": spread([r[0] for r in rounds]), "through": spread([r[1] for r in rounds]),
        "value": values["median"], "spread": [values["min"], values["max"]], "rounds": values["rounds"],
        "target": None if target is None else {"op": target.op, "limit": target.limit, "unit": target.unit},
        "pass": None if target is None else target.met(values["median"]),
    }


def _by_round(phases: Iterable[dict]) -> dict[tuple, dict[int, dict[str, dict]]]:
    """(tracing, mode, concurrency) -> round -> arm -> metrics."""
    grouped: dict[tuple, dict[int, dict[str, dict]]] = defaultdict(lambda: defaultdict(dict))
    for phase in phases:
        grouped[(phase["tracing"], phase["mode"], phase["concurrency"])][phase["round"]][phase["arm"]] = \
            arm_metrics(phase)
    return grouped


def figure_key(tracing: str, mode: str, concurrency: int | None, fid: str, arm: str = "through") -> str:
    """A figure's key in the JSON; the gRPC arm's keys have no arm part (as before other arms existed)."""
    via = "" if arm == "through" else f"via={arm}/"
    return f"tracing={tracing}/{mode}/" + via + (f"c={concurrency}/" if concurrency is not None else "") + fid


def mode_levels(concurrency: Sequence[int], sweep: Sequence[int], mode: str) -> list[int]:
    """The concurrencies a mode is measured at: zero mode adds `sweep`, the levels between the reported ones
    where the short-request figure (highest rate with added p99 ≤ 50 ms) is usually found."""
    return sorted(set(concurrency) | set(sweep)) if mode == "zero" else list(concurrency)


def _levels_of(which: str, low: int, levels: list[int]) -> list[int]:
    return [low] if which == "c1" else levels


def expected_figure_keys(modes: list[str], tracings: list[str], concurrency: list[int],
                         sweep: Sequence[int] = (), arms: Sequence[str] = ("through",)) -> list[str]:
    """Every figure key a complete run with these settings reports (the smoke test checks them)."""
    keys = [f"micro/{fid}" for fid in MICRO_FIGURES]
    low = min(concurrency)
    for tracing in tracings:
        for mode in modes:
            levels = mode_levels(concurrency, sweep, mode)
            for arm in arms:
                for fid, _, fig_modes, which in _LATENCY_FIGURES:
                    if mode in fig_modes:
                        keys += [figure_key(tracing, mode, c, fid, arm) for c in _levels_of(which, low, levels)]
                if mode == "zero":
                    keys.append(figure_key(tracing, mode, None, "short_requests_per_s", arm))
            for base, other, _, comparison in _COMPARISONS:
                if {base, other} <= set(arms):
                    for fid, _, fig_modes, which, _ in comparison:
                        if mode in fig_modes:
                            keys += [figure_key(tracing, mode, c, fid) for c in _levels_of(which, low, levels)]
    return keys


def build_figures(phases: list[dict], micro: dict, modes: list[str], tracings: list[str],
                  concurrency: list[int], sweep: Sequence[int] = (), classifier: str = "service") -> dict[str, dict]:
    grouped = _by_round(phases)
    arms = [arm for arm in SUBJECTS if any(p["arm"] == arm for p in phases)]
    targets = targets_for(classifier)
    figures: dict[str, dict] = {}
    low = min(concurrency)
    for tracing in tracings:
        for mode in modes:
            levels = mode_levels(concurrency, sweep, mode)
            for arm in arms:
                for fid, label, fig_modes, which in _LATENCY_FIGURES:
                    if mode not in fig_modes:
                        continue
                    for c in _levels_of(which, low, levels):
                        rounds = grouped.get((tracing, mode, c), {})
                        values = [_figure_values(fid, arms_of["direct"], arms_of[arm])
                                  for _, arms_of in sorted(rounds.items()) if {"direct", arm} <= set(arms_of)]
                        # Targets are routemesh's, on its default path; other arms are reported beside it.
                        target = _target_at(targets, fid, c) if arm == "through" else None
                        key = figure_key(tracing, mode, c, fid, arm)
                        figures[key] = _figure(key, f"{label} (c={c})", fid, values, target,
                                               tracing=tracing, mode=mode, concurrency=c, arm=arm)
                if mode == "zero":
                    key = figure_key(tracing, mode, None, "short_requests_per_s", arm)
                    figures[key] = _short_requests(key, grouped, tracing, levels, arm,
                                                   targets["short_requests_per_s"] if arm == "through" else None)
                    figures[key].update(tracing=tracing, mode=mode, concurrency=None, arm=arm)
            for base, other, section, comparison in _COMPARISONS:
                if not {base, other} <= set(arms):
                    continue
                for fid, label, fig_modes, which, metric in comparison:
                    if mode not in fig_modes:
                        continue
                    for c in _levels_of(which, low, levels):
                        rounds = grouped.get((tracing, mode, c), {})
                        # (base arm, compared arm, compared − base) per round
                        values = [(b, o, minus(o, b)) for _, arms_of in sorted(rounds.items())
                                  if {base, other} <= set(arms_of)
                                  for b, o in [(arms_of[base].get(metric), arms_of[other].get(metric))]]
                        key = figure_key(tracing, mode, c, fid)
                        figures[key] = _figure(key, f"{label} (c={c})", fid, values, targets.get(fid),
                                               tracing=tracing, mode=mode, concurrency=c, arm=section)
    for name, label in _MICROS:
        for q in ("p50", "p99"):
            fid = f"{name}_{q}_us"
            value = micro.get(name, {}).get(f"{q}_us")
            key = f"micro/{fid}"
            figures[key] = _figure(key, f"{label} {q} µs", fid, [(None, value, value)], targets.get(fid),
                                   tracing=None, mode="micro", concurrency=None, arm=None)
    return figures


def _short_requests(key: str, grouped: dict, tracing: str, concurrency: list[int], arm: str,
                    target: Target | None) -> dict:
    """Per round: the highest requests/s through `arm` at a concurrency whose added p99 stays ≤ 50 ms."""
    rounds: dict[int, list[tuple[float | None, float | None, float | None]]] = defaultdict(list)
    for c in concurrency:
        for round_no, arms in grouped.get((tracing, "zero", c), {}).items():
            if {"direct", arm} <= set(arms):
                direct, through = arms["direct"], arms[arm]
                added = minus(through["total_p99_ms"], direct["total_p99_ms"])
                within = added is not None and added <= SHORT_ADDED_P99_MS
                rounds[round_no].append((direct["requests_per_s"], through["requests_per_s"],
                                         through["requests_per_s"] if within else 0.0))
    values = [tuple(max((v for v in column if v is not None), default=None) for column in zip(*rows, strict=True))
              for _, rows in sorted(rounds.items())]
    label = f"short requests/s with added p99 ≤ {SHORT_ADDED_P99_MS:g} ms"
    return _figure(key, label, "short_requests_per_s", values, target)


# The services a sizing table covers, and the phases it reads: short requests (zero-delay provider) at this many
# streams, and paced tokens (realistic provider, one token per message) at THROUGHPUT_STREAMS.
SIZED_SERVICES = ("router", "classifier", "executor", "telemetry", "control", "gateway")
SIZING_REQUEST_STREAMS = 16


def sizing(phases: list[dict], tracing: str) -> dict[str, dict[str, float | None]]:
    """Per service, what one core of it serves: requests/s from its CPU per short request, and relayed tokens/s from
    its CPU per paced token; medians over rounds of the gateway arm (every service works in it), else the gRPC arm.
    An operator divides the expected load by these to plan replicas."""
    arm = "gateway" if any(p["arm"] == "gateway" for p in phases) else "through"

    def median_per(mode: str, concurrency: int, service: str, unit: str) -> float | None:
        values = [p["cpu_ms"].get(service, 0.0) / p[unit] for p in phases
                  if p["arm"] == arm and p["tracing"] == tracing and p["mode"] == mode
                  and p["concurrency"] == concurrency and p[unit]]
        return statistics.median(values) if values else None

    # Only the processes the run had: no gateway row in the gRPC arm, nor when the router serves HTTP itself.
    ran = {name for p in phases if p["arm"] == arm for name in p["cpu_ms"]}
    table: dict[str, dict[str, float | None]] = {}
    for service in SIZED_SERVICES:
        if service not in ran:
            continue
        per_request = median_per("zero", SIZING_REQUEST_STREAMS, service, "ok")
        per_token = median_per("realistic", THROUGHPUT_STREAMS, service, "tokens")
        table[service] = {
            "cpu_ms_per_request": per_request, "requests_per_s_per_core": per(1000.0, per_request),
            "cpu_ms_per_paced_token": per_token, "tokens_per_s_per_core": per(1000.0, per_token),
        }
    return table


def print_sizing(tables: dict[str, dict[str, dict[str, float | None]]], out: TextIO) -> None:
    for tracing, table in tables.items():
        if not any(v is not None for row in table.values() for v in row.values()):
            continue
        print(f"\nsizing, tracing {tracing}: what one core of each service serves (CPU per short request at "
              f"{SIZING_REQUEST_STREAMS} streams; per paced token at {THROUGHPUT_STREAMS} streams)", file=out)
        print(f"{'service':<12} {'CPU ms/request':>15} {'requests/s/core':>16} {'CPU ms/token':>13} "
              f"{'tokens/s/core':>14}", file=out)
        for service, row in table.items():
            print(f"{service:<12} {fmt_value(row['cpu_ms_per_request']):>15} "
                  f"{fmt_value(row['requests_per_s_per_core']):>16} {fmt_value(row['cpu_ms_per_paced_token']):>13} "
                  f"{fmt_value(row['tokens_per_s_per_core']):>14}", file=out)


def fmt_value(value: float | None) -> str:
    """A figure as the table and the README show it: thousands grouped, ratios near 1 to three decimals."""
    if value is None:
        return "—"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if 0.9 <= value < 1.1:  # ratios against the 1.01 target: 1.014 is not 1.01
        return f"{value:.3f}"
    if abs(value) >= 10:
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


_MODE_TITLES = {"zero": "zero-delay provider (our overhead)", "realistic": "realistic provider (TTFT 200 ms, 20 ms/token)"}


def print_table(figures: dict[str, dict], out: TextIO) -> None:
    """figure | direct | through the arm | added/ratio (median, min–max of rounds) | target | mark; a section per
    tracing setting, provider mode and arm."""
    sections: dict[tuple, list[dict]] = defaultdict(list)
    for fig in figures.values():
        sections[(fig["tracing"], fig["mode"], fig.get("arm", "through"))].append(fig)
    for (tracing, mode, arm), rows in sections.items():
        if mode == "micro":
            title, columns = "micro-benchmarks (in process)", ("", "value")
        elif arm == "gateway-vs-grpc":
            title, columns = f"tracing {tracing} · {_MODE_TITLES.get(mode, mode)} · gateway against gRPC", \
                ("gRPC", "gateway")
        elif arm == "grpc-vs-floor":
            title, columns = f"tracing {tracing} · {_MODE_TITLES.get(mode, mode)} · routemesh gRPC against the " \
                "floor", ("floor", "gRPC")
        else:
            title = f"tracing {tracing} · {_MODE_TITLES.get(mode, mode)} · {ARM_TITLES.get(arm, arm)}"
            columns = ("direct", "through")
        header = f"{'figure':<44} {columns[0]:>10} {columns[1]:>10} {'added/ratio [spread]':>28}  {'target':<14} "
        print(f"\n{title}", file=out)
        print(header, file=out)
        print("-" * len(header), file=out)
        for fig in rows:
            lo, hi = fig["spread"]
            span = f"[{fmt_value(lo)}–{fmt_value(hi)}]" if lo is not None and lo != hi else ""
            target = fig["target"]
            target_text = Target(**target).text() if target else ""
            mark = {True: "pass", False: "FAIL", None: "" if target is None else "n/a"}[fig["pass"]]
            print(f"{fig['label']:<44} {fmt_value(fig['direct']['median']):>10} {fmt_value(fig['through']['median']):>10} "
                  f"{fmt_value(fig['value']) + ' ' + span:>28}  {target_text:<14} {mark}", file=out)
    print("\nnotes: added = through − direct, per round; values are medians of round medians, [min–max] of "
          "rounds.\n  CPU: direct = the sim serving the direct arm; through = every mesh process with the sim; "
          "added = routemesh's own processes\n  (the compared proxy's own process, when --compare-pid is given).\n"
          "  requests/s and tokens/s: the added/ratio column is through the arm; the target applies to it.\n"
          "  gateway against gRPC: the gateway arm minus the gRPC arm of the same round.\n"
          "  floor: routemesh's hops and messages in bare Python gRPC (bench/floor.py), never traced; against the\n"
          "  floor: the gRPC arm minus the floor arm of the same round, what routemesh's own code costs.", file=out)
