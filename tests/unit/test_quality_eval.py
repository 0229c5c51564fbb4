"""How routing is judged, on fixtures with known answers: curves, strong share at 95 %, APGR, baselines, plot."""

from __future__ import annotations

import itertools
import json
import re
import struct
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routemesh.quality import evaluate as ev
from routemesh.quality.outcomes import OutcomeTable, load_outcomes
from routemesh.quality.plot import DPI, PANEL_INCHES, PlotUnavailable, plot_curves

SHIPPED = Path(__file__).resolve().parents[2] / "services/routemesh/quality/data/outcomes_train.csv.gz"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# (weak, strong) correctness and how many prompts have it: n = 100, weak 0.55, strong 0.70.
BOTH_RIGHT, GAIN, LOSS, BOTH_WRONG = (1, 1), (0, 1), (1, 0), (0, 0)
MIX = {BOTH_RIGHT: 50, GAIN: 20, LOSS: 5, BOTH_WRONG: 25}


def make_table(pairs, prompts=None, sources=None) -> OutcomeTable:
    prompts = prompts or [f"prompt {i}" for i in range(len(pairs))]
    return OutcomeTable(prompts=tuple(prompts), sources=tuple(sources or [""] * len(pairs)),
                        models=("weak", "strong"),
                        outcomes={"weak": tuple(w for w, _ in pairs), "strong": tuple(s for _, s in pairs)})


def mixed_pairs() -> list[tuple[int, int]]:
    # Interleaved so that index order (the tie-break) carries no signal.
    pools = [[pair] * count for pair, count in MIX.items()]
    return [pair for group in itertools.zip_longest(*pools) for pair in group if pair]


def curve_of(pairs, scores) -> ev.CostQualityCurve:
    return ev.cost_quality_curve(scores, [w for w, _ in pairs], [s for _, s in pairs])


def test_an_oracle_reaches_95_percent_at_the_smallest_possible_share_and_its_analytic_apgr():
    pairs = mixed_pairs()
    n, weak, strong = len(pairs), 0.55, 0.70
    curve = curve_of(pairs, [1.0 if pair == GAIN else 0.0 for pair in pairs])
    # Each strong call gains at most one right answer, so no router reaches 0.95 * strong sooner.
    assert ev.strong_share_to_reach(curve, 0.95 * strong) == pytest.approx(0.95 * strong - weak)
    # Rises by 1/n per call over the GAIN prompts, then straight to strong through one tie group.
    peak_share = MIX[GAIN] / n
    peak = weak + peak_share
    area = peak_share * (weak + peak) / 2 + (1 - peak_share) * (peak + strong) / 2
    assert ev.apgr_area(curve) == pytest.approx((area - weak) / (strong - weak), rel=1e-12)
    assert ev.apgr_area(curve) > 1  # it beats the strong model: the LOSS prompts stay with the weak one
    # RouteLLM's 10-bin mean reads the same curve at 10 %, 20 %, ..., 100 %.
    at = [curve.accuracy_at(k / 10) for k in range(1, 11)]
    assert ev.apgr(curve) == pytest.approx((sum(at) / 10 - weak) / (strong - weak), rel=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=5), min_size=len(mixed_pairs()), max_size=len(mixed_pairs())))
def test_no_score_reaches_the_target_sooner_than_the_oracle(scores):
    pairs = mixed_pairs()
    share = ev.strong_share_to_reach(curve_of(pairs, [float(s) for s in scores]), 0.95 * 0.70)
    assert share >= 0.95 * 0.70 - 0.55 - 1e-12


def test_a_constant_score_is_exactly_the_random_line():
    pairs = mixed_pairs()
    curve = curve_of(pairs, [0.3] * len(pairs))
    assert curve.accuracies == pytest.approx([0.55 + 0.15 * k / 100 for k in range(101)], abs=1e-12)
    assert ev.apgr_area(curve) == pytest.approx(0.5, abs=1e-12)
    assert ev.apgr(curve) == pytest.approx(0.55, abs=1e-12)  # RouteLLM's bins: PGR 0.1, 0.2, ..., 1.0
    assert ev.strong_share_to_reach(curve, 0.95 * 0.70) == pytest.approx((0.95 * 0.70 - 0.55) / 0.15)


def test_ties_give_the_mean_curve_over_every_order_of_the_tied_prompts():
    pairs = [GAIN, LOSS, BOTH_RIGHT, GAIN, BOTH_WRONG, GAIN]
    scores = [2.0, 2.0, 2.0, 1.0, 0.5, 0.5]
    orders = list(itertools.permutations(range(len(pairs))))
    mean = [0.0] * (len(pairs) + 1)
    for order in orders:
        # A strict order that respects the scores: the permutation breaks the ties.
        ranked = sorted(range(len(pairs)), key=lambda i: (-scores[i], order.index(i)))
        distinct = [float(len(pairs) - ranked.index(i)) for i in range(len(pairs))]
        for k, accuracy in enumerate(curve_of(pairs, distinct).accuracies):
            mean[k] += accuracy / len(orders)
    assert curve_of(pairs, scores).accuracies == pytest.approx(mean, abs=1e-12)


def test_the_target_share_is_interpolated_between_the_curve_points_around_the_crossing():
    curve = curve_of([GAIN] * 4, [4.0, 3.0, 2.0, 1.0])
    assert curve.accuracies == (0.0, 0.25, 0.5, 0.75, 1.0)
    assert ev.strong_share_to_reach(curve, 0.95) == pytest.approx(0.95)
    assert ev.strong_share_to_reach(curve, 0.5) == pytest.approx(0.5)
    assert ev.strong_share_to_reach(curve, 0.0) == 0.0
    assert ev.strong_share_to_reach(curve, 1.01) is None
    assert curve.accuracy_at(0.6) == pytest.approx(0.6)


def planted_length_table(long_is_hard: bool) -> OutcomeTable:
    # Long prompts are the ones only the strong model answers (or, reversed, the short ones); the others
    # are all as long, so they tie as the oracle's do.
    pairs = mixed_pairs()
    hard = [pair == GAIN for pair in pairs]
    lengths = [200 + i if h == long_is_hard else 10 for i, h in enumerate(hard)]
    prompts = [f"{i:03d} " + "word " * (length // 5) for i, length in enumerate(lengths)]
    sources = ["gsm8k" if i % 4 == 0 else f"mmlu/subject_{i % 3}" for i in range(len(pairs))]
    return make_table(pairs, prompts, sources)


def oracle_scores(table: OutcomeTable) -> list[float]:
    return [float(w == 0 and s == 1) for w, s in zip(table.outcomes["weak"], table.outcomes["strong"], strict=True)]


def test_the_length_baselines_find_a_planted_length_signal_per_benchmark_and_overall():
    table = planted_length_table(long_is_hard=True)
    results = ev.evaluate({"oracle": oracle_scores(table)}, table, "weak", "strong")
    assert [r.benchmark for r in results] == ["gsm8k", "mmlu", ev.OVERALL]
    assert [r.n for r in results] == [25, 75, 100]
    for result in results:
        by_method = {m.method: m for m in result.methods}
        assert list(by_method) == [ev.RANDOM, ev.LENGTH_CHARS, ev.LENGTH_TOKENS, "oracle"]
        assert by_method[ev.RANDOM].apgr == pytest.approx(0.55)
        assert by_method[ev.RANDOM].apgr_area == pytest.approx(0.5)
        for name in (ev.LENGTH_CHARS, ev.LENGTH_TOKENS):
            assert by_method[name].apgr == pytest.approx(by_method["oracle"].apgr)
            assert by_method[name].strong_share_at_target == pytest.approx(by_method["oracle"].strong_share_at_target)
            assert by_method[name].strong_share_at_target < by_method[ev.RANDOM].strong_share_at_target
    assert results[-1].methods[1].strong_share_at_target == pytest.approx(0.95 * 0.70 - 0.55)


def test_a_reversed_length_signal_is_worse_than_random():
    overall = ev.evaluate({}, planted_length_table(long_is_hard=False), "weak", "strong")[-1]
    by_method = {m.method: m for m in overall.methods}
    assert by_method[ev.LENGTH_CHARS].apgr < 0.55
    assert by_method[ev.LENGTH_CHARS].apgr_area < 0.5
    assert by_method[ev.LENGTH_CHARS].strong_share_at_target > by_method[ev.RANDOM].strong_share_at_target


def test_baselines_can_be_left_out():
    table = planted_length_table(long_is_hard=False)
    overall = ev.evaluate({"oracle": oracle_scores(table)}, table, "weak", "strong", baselines=False)[-1]
    assert [m.method for m in overall.methods] == ["oracle"]
    assert overall.methods[0].strong_share_at_target == pytest.approx(0.95 * 0.70 - 0.55)


def test_the_table_and_json_carry_every_figure_and_the_definitions():
    results = ev.evaluate({}, planted_length_table(long_is_hard=True), "weak", "strong")
    text = ev.format_table(results)
    assert "strong share @95%" in text and "APGR" in text and "APGR area" in text
    assert re.search(r"^gsm8k +\| length_chars +\| +25 \|", text, re.MULTILINE)
    assert "accuracy by strong-call share:" in text
    assert ev.DEFINITIONS["apgr"] in text
    assert "accuracy by strong-call share" not in ev.format_table(results, curve_steps=0)
    data = json.loads(json.dumps(ev.to_json(results)))
    assert set(data["definitions"]) >= {"curve", "strong_share_at_target", "apgr", "apgr_area", "random"}
    overall = data["benchmarks"][-1]
    assert (overall["benchmark"], overall["n"], overall["weak_accuracy"], overall["strong_accuracy"]) == \
        (ev.OVERALL, 100, 0.55, 0.70)
    assert overall["target_accuracy"] == pytest.approx(0.665)
    random = overall["methods"][0]
    assert (random["apgr"], random["apgr_area"]) == pytest.approx((0.55, 0.5))
    assert len(random["curve"]["strong_share"]) == len(random["curve"]["accuracy"]) == 101


def test_a_strong_model_no_better_than_the_weak_one_leaves_apgr_undefined():
    pairs = [BOTH_RIGHT, LOSS, BOTH_WRONG, GAIN]
    result = ev.evaluate({}, make_table(pairs), "weak", "strong")[-1]
    assert result.weak_accuracy == result.strong_accuracy == 0.5
    assert all(m.apgr is None and m.apgr_area is None for m in result.methods)
    assert all(m.strong_share_at_target == 0.0 for m in result.methods)  # weak already has 95 % of strong
    assert "undefined" in result.note
    assert "undefined" in ev.format_table([result])
    assert ev.to_json([result])["benchmarks"][0]["methods"][0]["apgr"] is None
    assert ev.apgr(curve_of([BOTH_WRONG] * 3, [1.0, 2.0, 3.0])) is None
    assert ev.apgr_area(curve_of([BOTH_WRONG] * 3, [1.0, 2.0, 3.0])) is None


def test_no_prompts_give_a_result_that_says_so():
    empty = make_table([])
    results = ev.evaluate({"mine": []}, empty, "weak", "strong")
    assert [(r.benchmark, r.n, r.methods, r.note) for r in results] == [(ev.OVERALL, 0, (), "no prompts")]
    assert results[0].target_accuracy is None
    assert "no prompts" in ev.format_table(results)
    assert json.dumps(ev.to_json(results))
    with pytest.raises(ValueError, match="no prompts"):
        ev.cost_quality_curve([], [], [])


@pytest.mark.parametrize("call, message", [
    (lambda t: ev.evaluate({}, t, "weak", "gpt"), "no outcomes for model 'gpt'"),
    (lambda t: ev.evaluate({"mine": [1.0]}, t, "weak", "strong"), "1 scores for 4 prompts"),
    (lambda t: ev.evaluate({ev.RANDOM: [1.0] * 4}, t, "weak", "strong"), "name of a baseline"),
    (lambda t: ev.evaluate({}, t, "weak", "strong", target_fraction=1.5), "not in"),
    (lambda t: ev.evaluate({"mine": [float("nan")] * 4}, t, "weak", "strong"), "finite"),
    (lambda t: ev.cost_quality_curve([1.0], [2], [1]), "0 or 1"),
    (lambda t: ev.cost_quality_curve([1.0, 2.0], [1], [1, 0]), "2 scores but 1 weak"),
])
def test_bad_inputs_are_refused_with_a_clear_message(call, message):
    with pytest.raises(ValueError, match=message):
        call(make_table([GAIN, LOSS, BOTH_RIGHT, BOTH_WRONG]))


def test_the_plot_is_a_png_of_a_fixed_size(tmp_path):
    results = ev.evaluate({}, planted_length_table(long_is_hard=True), "weak", "strong")
    path = plot_curves(results, tmp_path / "curves.png")
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 20_000
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk comes first
    assert (width, height) == (round(PANEL_INCHES[0] * DPI * 3), round(PANEL_INCHES[1] * DPI))


def test_the_plot_refuses_results_without_prompts(tmp_path):
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_curves(ev.evaluate({}, make_table([]), "weak", "strong"), tmp_path / "x.png")


def test_without_matplotlib_the_plot_says_how_to_install_it(tmp_path, monkeypatch):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    results = ev.evaluate({}, planted_length_table(long_is_hard=True), "weak", "strong")
    with pytest.raises(PlotUnavailable, match=r"pip install -e '\.\[train\]'"):
        plot_curves(results, tmp_path / "curves.png")


def test_the_shipped_data_agrees_with_the_reference_figures_of_its_readme():
    # The README's figures cover all prompts of these sources, the file only 70 % of them: roughly.
    results = {r.benchmark: {m.method: m for m in r.methods}
               for r in ev.evaluate({}, load_outcomes(SHIPPED), "weak", "strong")}
    assert results["mmlu"][ev.LENGTH_CHARS].strong_share_at_target == pytest.approx(0.53, abs=0.04)
    assert results["gsm8k"][ev.LENGTH_CHARS].strong_share_at_target == pytest.approx(0.67, abs=0.04)
    assert results["mmlu"][ev.RANDOM].strong_share_at_target == pytest.approx(0.66, abs=0.04)
