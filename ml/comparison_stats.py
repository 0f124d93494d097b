"""The statistics of a comparison report: per-extractor summaries, tiers, improvement matrix.

Input is one ``TrialResult`` per trial (extractor x seed): the trial's value of the ranking
metric, or the error it failed with. ``scipy.stats`` does all the arithmetic (``bootstrap``,
``ttest_ind``, ``mannwhitneyu``); what is ours is the rules around it:

- failures are kept, with their error, in the extractor's summary; they never count in n;
- sample std uses ddof=1 and the 95% confidence interval of the mean is a BCa bootstrap seeded
  with ``BOOTSTRAP_SEED`` (percentile when BCa is undefined), so the same inputs give the same
  report; both are None below 2 finished seeds, and fewer than ``MIN_SEEDS`` gives a warning;
- tiers: extractors with n >= 2 are ordered by mean (``mode`` "max": higher is better), every
  pair is compared with Welch's t-test, the p-values are Holm-corrected together (``holm``),
  and a new tier starts when the next extractor is significantly worse than the best of the
  current tier. Extractors with a single finished seed cannot be tested: they go in one last
  tier of their own, marked ``tested=False``; extractors with none are listed as ``unranked``;
- ``improvement_matrix``: P(A beats B) is the common-language effect size, Mann-Whitney
  U / (n_a n_b) over the seeds' values (ties count half).

NaN or infinite values are refused (``ComparisonInputError`` names the trial). Everything is
deterministic. scipy is imported on first use, so importing this module stays cheap.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .errors import MLError

Mode = Literal["max", "min"]
ALPHA = 0.05
MIN_SEEDS = 3  # fewer finished seeds than this and the summary warns that the spread is unknown
BOOTSTRAP_SEED = 0
BOOTSTRAP_RESAMPLES = 9999
CONFIDENCE = 0.95


class ComparisonInputError(MLError):
    """The trial results given to the comparison statistics are not usable."""


@dataclass(frozen=True)
class TrialResult:
    """One trial: its metric ``value`` when it finished, or the ``error`` it failed with."""

    extractor: str
    seed: int
    value: float | None
    error: str | None = None


@dataclass(frozen=True)
class SeedPoint:
    seed: int
    value: float


@dataclass(frozen=True)
class TrialFailure:
    seed: int
    error: str


@dataclass(frozen=True)
class ExtractorSummary:
    """One extractor over its seeds; the statistics are None when too few seeds finished."""

    extractor: str
    n: int
    finished: tuple[int, ...]
    failed: tuple[TrialFailure, ...]
    points: tuple[SeedPoint, ...]
    mean: float | None
    std: float | None
    median: float | None
    ci_low: float | None
    ci_high: float | None
    warning: str | None


@dataclass(frozen=True)
class ComparisonSummary:
    metric: str
    mode: Mode
    extractors: tuple[ExtractorSummary, ...]


@dataclass(frozen=True)
class PairTest:
    """Welch's t-test of ``a`` against ``b``; ``p_holm`` is Holm-adjusted over all pairs."""

    a: str
    b: str
    p: float
    p_holm: float
    significant: bool


@dataclass(frozen=True)
class Tier:
    """Extractors the seeds cannot tell apart, best first; ``tested=False``: single seeds."""

    rank: int
    extractors: tuple[str, ...]
    tested: bool


@dataclass(frozen=True)
class Ranking:
    metric: str
    mode: Mode
    alpha: float
    order: tuple[str, ...]
    tiers: tuple[Tier, ...]
    tests: tuple[PairTest, ...]
    unranked: tuple[str, ...]


@dataclass(frozen=True)
class ImprovementMatrix:
    """``probability[i][j]``: P(``extractors[i]`` beats ``extractors[j]``); None on the
    diagonal and where either has no finished seed."""

    metric: str
    mode: Mode
    extractors: tuple[str, ...]
    probability: tuple[tuple[float | None, ...], ...]


def _grouped(
    trials: Sequence[TrialResult], mode: str
) -> dict[str, tuple[list[SeedPoint], list[TrialFailure]]]:
    """Checked trials by extractor, in order of first appearance."""
    if mode not in ("max", "min"):
        raise ComparisonInputError(
            f"mode {mode!r} is not 'max' or 'min'", hint='set mode = "max" or mode = "min"'
        )
    groups: dict[str, tuple[list[SeedPoint], list[TrialFailure]]] = {}
    seen: set[tuple[str, int]] = set()
    for t in trials:
        name = f"trial {t.extractor!r} seed {t.seed}"
        if (t.extractor, t.seed) in seen:
            raise ComparisonInputError(
                f"{name} is given twice", hint="give one result per extractor and seed"
            )
        seen.add((t.extractor, t.seed))
        points, failures = groups.setdefault(t.extractor, ([], []))
        if t.error is not None:
            if t.value is not None:
                raise ComparisonInputError(
                    f"{name} has both a value and an error",
                    hint="a failed trial has no value; a finished one has no error",
                )
            failures.append(TrialFailure(seed=t.seed, error=t.error))
        elif t.value is None:
            raise ComparisonInputError(
                f"{name} has neither a value nor an error",
                hint="record the trial's error when it has no metric value",
            )
        elif not math.isfinite(float(t.value)):
            raise ComparisonInputError(
                f"{name} has a non-finite value ({t.value})",
                hint="record a trial that diverged as failed, with its error",
            )
        else:
            points.append(SeedPoint(seed=t.seed, value=float(t.value)))
    return groups


def _warning(n: int) -> str | None:
    if n >= MIN_SEEDS:
        return None
    if n == 0:
        return "0 seeds: no result"
    return f"{n} seed{'s' if n > 1 else ''}: the spread is not known"


def _bootstrap_ci(values: np.ndarray) -> tuple[float, float]:
    from scipy import stats

    if np.ptp(values) == 0:  # every resample has the same mean
        return float(values[0]), float(values[0])
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ci = stats.bootstrap(
                (values,),
                np.mean,
                n_resamples=BOOTSTRAP_RESAMPLES,
                confidence_level=CONFIDENCE,
                method=method,
                rng=np.random.default_rng(BOOTSTRAP_SEED),
            ).confidence_interval
        if math.isfinite(ci.low) and math.isfinite(ci.high):
            break
    return float(ci.low), float(ci.high)


def summarize(*, trials: Sequence[TrialResult], metric: str, mode: Mode) -> ComparisonSummary:
    """Per-extractor summary of the trials, extractors in order of first appearance."""
    out = []
    for extractor, (points, failures) in _grouped(trials, mode).items():
        values = np.array([p.value for p in points], dtype=float)
        n = len(values)
        ci = _bootstrap_ci(values) if n >= 2 else (None, None)
        out.append(
            ExtractorSummary(
                extractor=extractor,
                n=n,
                finished=tuple(p.seed for p in points),
                failed=tuple(failures),
                points=tuple(points),
                mean=float(np.mean(values)) if n else None,
                std=float(np.std(values, ddof=1)) if n >= 2 else None,
                median=float(np.median(values)) if n else None,
                ci_low=ci[0],
                ci_high=ci[1],
                warning=_warning(n),
            )
        )
    return ComparisonSummary(metric=metric, mode=mode, extractors=tuple(out))


def holm(*, p_values: Sequence[float]) -> tuple[float, ...]:
    """Holm's step-down adjusted p-values, in the order given: the k-th smallest of m is
    multiplied by (m - k + 1), kept non-decreasing in that order, and capped at 1."""
    m = len(p_values)
    adjusted = [1.0] * m
    running = 0.0
    for k, i in enumerate(sorted(range(m), key=lambda j: (p_values[j], j))):
        running = max(running, min(1.0, (m - k) * p_values[i]))
        adjusted[i] = running
    return tuple(adjusted)


def _welch_p(a: np.ndarray, b: np.ndarray) -> float:
    from scipy import stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    return p if math.isfinite(p) else 1.0  # both constant and equal: nothing tells them apart


def rank_tiers(
    *, trials: Sequence[TrialResult], metric: str, mode: Mode, alpha: float = ALPHA
) -> Ranking:
    """Extractors ordered by mean (best first) and grouped into tiers; see the module doc."""
    groups = _grouped(trials, mode)
    values = {e: np.array([p.value for p in pts], dtype=float) for e, (pts, _) in groups.items()}
    sign = -1.0 if mode == "max" else 1.0

    def by_mean(names: list[str]) -> list[str]:
        return sorted(names, key=lambda e: (sign * float(np.mean(values[e])), e))

    tested = by_mean([e for e, v in values.items() if len(v) >= 2])
    single = by_mean([e for e, v in values.items() if len(v) == 1])
    pairs = [(a, b) for i, a in enumerate(tested) for b in tested[i + 1 :]]
    raw = [_welch_p(values[a], values[b]) for a, b in pairs]
    adjusted = holm(p_values=raw)
    tests = tuple(
        PairTest(a=a, b=b, p=p, p_holm=q, significant=q < alpha)
        for (a, b), p, q in zip(pairs, raw, adjusted, strict=True)
    )
    significant = {(t.a, t.b): t.significant for t in tests}
    groups_out: list[list[str]] = []
    for e in tested:
        if groups_out and not significant[(groups_out[-1][0], e)]:
            groups_out[-1].append(e)
        else:
            groups_out.append([e])
    tiers = [Tier(rank=i + 1, extractors=tuple(g), tested=True) for i, g in enumerate(groups_out)]
    if single:
        tiers.append(Tier(rank=len(tiers) + 1, extractors=tuple(single), tested=False))
    return Ranking(
        metric=metric,
        mode=mode,
        alpha=alpha,
        order=tuple(tested + single),
        tiers=tuple(tiers),
        tests=tests,
        unranked=tuple(e for e, v in values.items() if len(v) == 0),
    )


def improvement_matrix(
    *, trials: Sequence[TrialResult], metric: str, mode: Mode
) -> ImprovementMatrix:
    """P(A beats B) for every pair of extractors, in order of first appearance."""
    from scipy import stats

    groups = _grouped(trials, mode)
    names = tuple(groups)
    values = {e: np.array([p.value for p in pts], dtype=float) for e, (pts, _) in groups.items()}
    rows = []
    for a in names:
        row: list[float | None] = []
        for b in names:
            if a == b or not len(values[a]) or not len(values[b]):
                row.append(None)
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                u = float(stats.mannwhitneyu(values[a], values[b]).statistic)
            share = u / (len(values[a]) * len(values[b]))  # share of pairs where a is larger
            row.append(share if mode == "max" else 1.0 - share)
        rows.append(tuple(row))
    return ImprovementMatrix(metric=metric, mode=mode, extractors=names, probability=tuple(rows))
