"""The comparison report's statistics (tether.ml.comparison_stats), checked against numpy."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from tether.ml.comparison_stats import (
    ComparisonInputError,
    TrialResult,
    holm,
    improvement_matrix,
    rank_tiers,
    summarize,
)
from tether.ml.errors import MLError


def _trials(values: dict[str, list[float]]) -> list[TrialResult]:
    return [
        TrialResult(extractor=e, seed=s, value=v, error=None)
        for e, vs in values.items()
        for s, v in enumerate(vs)
    ]


def test_summary_numbers_match_numpy() -> None:
    vals = [0.91, 0.87, 0.95, 0.89]
    (s,) = summarize(trials=_trials({"i3d": vals}), metric="test.accuracy", mode="max").extractors
    assert s.n == 4
    assert s.finished == (0, 1, 2, 3)
    assert s.mean == pytest.approx(sum(vals) / 4)
    mean = sum(vals) / 4
    assert s.std == pytest.approx(math.sqrt(sum((v - mean) ** 2 for v in vals) / 3))
    assert s.median == pytest.approx((0.89 + 0.91) / 2)
    assert [p.value for p in s.points] == vals
    assert [p.seed for p in s.points] == [0, 1, 2, 3]
    assert s.warning is None


def test_bootstrap_ci_is_reproducible_and_contains_the_mean() -> None:
    trials = _trials({"i3d": [0.91, 0.87, 0.95, 0.89, 0.93]})
    a = summarize(trials=trials, metric="m", mode="max").extractors[0]
    b = summarize(trials=list(trials), metric="m", mode="max").extractors[0]
    assert (a.ci_low, a.ci_high) == (b.ci_low, b.ci_high)
    assert a.ci_low is not None and a.ci_high is not None
    assert a.ci_low < a.mean < a.ci_high
    assert a.ci_low >= 0.87 and a.ci_high <= 0.95  # a mean's interval stays inside the data


def test_constant_values_give_a_point_interval() -> None:
    s = summarize(trials=_trials({"x": [0.5, 0.5, 0.5]}), metric="m", mode="max").extractors[0]
    assert (s.ci_low, s.ci_high, s.std) == (0.5, 0.5, 0.0)


def test_failures_are_kept_with_their_error() -> None:
    trials = [
        TrialResult(extractor="magvit", seed=0, value=0.8, error=None),
        TrialResult(extractor="magvit", seed=1, value=None, error="CUDA out of memory"),
        TrialResult(extractor="magvit", seed=2, value=0.82, error=None),
        TrialResult(extractor="slowfast", seed=0, value=None, error="worker died"),
    ]
    magvit, slowfast = summarize(trials=trials, metric="m", mode="max").extractors
    assert magvit.n == 2 and magvit.finished == (0, 2)
    assert [(f.seed, f.error) for f in magvit.failed] == [(1, "CUDA out of memory")]
    assert magvit.mean == pytest.approx(0.81)
    assert slowfast.n == 0 and slowfast.mean is None and slowfast.median is None
    assert [(f.seed, f.error) for f in slowfast.failed] == [(0, "worker died")]
    ranking = rank_tiers(trials=trials, metric="m", mode="max")
    assert ranking.unranked == ("slowfast",)


def test_fewer_than_three_seeds_warns() -> None:
    two, one, three = summarize(
        trials=_trials({"a": [0.1, 0.2], "b": [0.3], "c": [0.1, 0.2, 0.3]}), metric="m", mode="max"
    ).extractors
    assert two.warning == "2 seeds: the spread is not known"
    assert one.warning == "1 seed: the spread is not known"
    assert three.warning is None
    assert two.std is not None and two.ci_low is not None
    assert one.std is None and one.ci_low is None and one.ci_high is None
    assert one.mean == 0.3


def test_separated_groups_get_distinct_tiers() -> None:
    trials = _trials(
        {
            "b": [0.80, 0.801, 0.799, 0.8005, 0.7995],
            "a": [0.90, 0.901, 0.899, 0.9005, 0.8995],
            "c": [0.70, 0.701, 0.699, 0.7005, 0.6995],
        }
    )
    r = rank_tiers(trials=trials, metric="acc", mode="max")
    assert r.order == ("a", "b", "c")
    assert [t.extractors for t in r.tiers] == [("a",), ("b",), ("c",)]
    assert all(t.tested for t in r.tiers)
    assert len(r.tests) == 3 and all(t.significant for t in r.tests)


def test_overlapping_noisy_groups_share_a_tier() -> None:
    trials = _trials({"a": [0.80, 0.90, 0.70, 0.85], "b": [0.82, 0.72, 0.88, 0.78]})
    r = rank_tiers(trials=trials, metric="acc", mode="max")
    assert [t.extractors for t in r.tiers] == [("a", "b")]
    assert r.tests[0].p_holm >= 0.05 and not r.tests[0].significant


def test_mode_min_reverses_the_order() -> None:
    trials = _trials(
        {"a": [0.90, 0.901, 0.899], "b": [0.80, 0.801, 0.799], "c": [0.70, 0.701, 0.699]}
    )
    r = rank_tiers(trials=trials, metric="loss", mode="min")
    assert r.order == ("c", "b", "a")
    assert [t.extractors for t in r.tiers] == [("c",), ("b",), ("a",)]


def test_single_seed_extractors_go_in_an_untested_last_tier() -> None:
    trials = _trials({"a": [0.9, 0.91, 0.89], "solo": [0.99], "b": [0.5, 0.51, 0.49]})
    r = rank_tiers(trials=trials, metric="acc", mode="max")
    assert r.tiers[-1].extractors == ("solo",) and not r.tiers[-1].tested
    assert all(t.tested for t in r.tiers[:-1])
    assert r.order[-1] == "solo"
    assert all("solo" not in (t.a, t.b) for t in r.tests)


def test_holm_against_a_hand_made_example() -> None:
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> kept at 0.06
    assert holm(p_values=[0.01, 0.04, 0.03, 0.005]) == pytest.approx((0.03, 0.06, 0.06, 0.02))
    assert holm(p_values=[0.5, 0.6]) == (1.0, 1.0)
    assert holm(p_values=[]) == ()


def test_improvement_matrix_is_one_minus_its_transpose() -> None:
    values = {"a": [0.9, 0.8, 0.85, 0.8], "b": [0.8, 0.7, 0.95], "c": [0.1, 0.2, 0.8]}
    for mode in ("max", "min"):
        m = improvement_matrix(trials=_trials(values), metric="acc", mode=mode)
        assert m.extractors == ("a", "b", "c")
        p = m.probability
        for i in range(3):
            assert p[i][i] is None
            for j in range(3):
                if i != j:
                    assert p[i][j] == pytest.approx(1.0 - p[j][i])
    # independently: share of (a, b) pairs where a is larger, ties half
    a, b = np.array(values["a"]), np.array(values["b"])
    expect = ((a[:, None] > b[None, :]).sum() + 0.5 * (a[:, None] == b[None, :]).sum()) / 12
    mx = improvement_matrix(trials=_trials(values), metric="acc", mode="max").probability
    assert mx[0][1] == pytest.approx(expect)
    mn = improvement_matrix(trials=_trials(values), metric="acc", mode="min").probability
    assert mn[0][1] == pytest.approx(1.0 - expect)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_values_are_refused_naming_the_trial(bad: float) -> None:
    trials = [
        TrialResult(extractor="i3d", seed=0, value=0.9, error=None),
        TrialResult(extractor="i3d", seed=7, value=bad, error=None),
    ]
    for fn in (summarize, rank_tiers, improvement_matrix):
        with pytest.raises(ComparisonInputError, match=r"'i3d' seed 7") as info:
            fn(trials=trials, metric="m", mode="max")
        assert isinstance(info.value, MLError) and info.value.hint


@pytest.mark.parametrize(
    ("trials", "mode", "match"),
    [
        ([TrialResult("a", 0, 0.1, None)], "best", "mode 'best'"),
        ([TrialResult("a", 0, 0.1, None), TrialResult("a", 0, 0.2, None)], "max", "twice"),
        ([TrialResult("a", 1, None, None)], "max", "neither"),
        ([TrialResult("a", 2, 0.3, "boom")], "max", "both"),
    ],
)
def test_bad_input_errors(trials: list[TrialResult], mode: str, match: str) -> None:
    with pytest.raises(ComparisonInputError, match=match):
        summarize(trials=trials, metric="m", mode=mode)  # type: ignore[arg-type]


def test_module_imports_without_torch_or_ray() -> None:
    code = (
        "import sys, tether.ml.comparison_stats; "
        "print(sorted(m for m in ('torch', 'ray', 'scipy') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
