"""The online correction's arithmetic: a Beta posterior around the static or predicted quality."""

from __future__ import annotations

import random
import statistics

import pytest

from routemesh.common.policy_schema import Learning
from routemesh.router.decision.planner import learned_quality


def test_no_signals_leave_the_prior_and_signals_pull_it_by_their_weight() -> None:
    learning = Learning(prior_weight=20)
    assert learned_quality(0.9, None, learning) == 0.9
    assert learned_quality(0.9, (0.0, 0), learning) == 0.9
    assert learned_quality(0.9, (0.0, 3), learning) == pytest.approx(18 / 23)
    assert learned_quality(0.5, (20.0, 20), learning) == pytest.approx(0.75)  # as many signals as the prior
    assert learned_quality(0.2, (1000.0, 1000), learning) == pytest.approx(1004 / 1020)
    # A lighter prior moves faster.
    assert learned_quality(0.9, (0.0, 3), Learning(prior_weight=2)) == pytest.approx(1.8 / 5)


def test_thompson_samples_centre_on_the_posterior_mean() -> None:
    rng = random.Random(7)
    learning = Learning(prior_weight=20)
    samples = [learned_quality(0.9, (0.0, 3), learning, rng) for _ in range(4000)]
    assert statistics.fmean(samples) == pytest.approx(18 / 23, abs=0.01)
    assert 0.0 < min(samples) < max(samples) < 1.0
    # With no signals, a sample comes from the prior alone.
    assert statistics.fmean(learned_quality(0.8, None, learning, rng) for _ in range(4000)) == pytest.approx(
        0.8, abs=0.01)


def test_exploration_is_bounded() -> None:
    with pytest.raises(ValueError):
        Learning(exploration=0.6)
    with pytest.raises(ValueError):
        Learning(prior_weight=0)
