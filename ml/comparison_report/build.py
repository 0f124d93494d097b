"""The content of a comparison, computed once from the trial records: who ran, what finished,
the statistics of ``tether.ml.comparison_stats`` (every number of the report comes from it),
and the machine-readable ``comparison.json`` dict. The renderings (``render``) and the plots
(``plots``) read this and compute nothing of their own.

Rules: only finished trials count; a finished trial without a finite value of the ranking
metric counts as failed for it (with that said as its error); failed trials keep their error
and last lines; pending and running trials are counted, never ranked. Extractors are listed in
ranking order (best first), then those with no finished seed, by name; seeds in order within
each, so the same records in any order give the same report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict

from .. import comparison_stats as cs
from .records import TrialRecord

Epoch = Literal["best", "last", "trial"] | None  # "trial": a user's trial function decides
SCHEMA_VERSION = 1

EPOCH_TEXT = {
    "best": "test metrics of the best epoch by val loss",
    "last": "test metrics of the last epoch",
    "trial": "metrics as each trial function returned them",
    None: "the epoch whose weights were tested is not recorded",
}

# The other metrics shown per extractor (means over its finished seeds), in this order;
# any other metric the trials have follows, by name.
OTHER_METRICS: tuple[tuple[str, str], ...] = (
    ("test.accuracy", "accuracy"),
    ("test.f1", "F1 (macro)"),
    ("test.precision", "precision (macro)"),
    ("test.recall", "recall (macro)"),
    ("test.early_decision_rate", "early-decision rate"),
    ("test.mean_decision_frame", "mean decision frame"),
    ("test.compute_saved_pct", "compute saved (%)"),
    ("test.latency_ms", "latency (ms/clip)"),
    ("test.mse", "MSE"),
    ("test.mae", "MAE"),
    ("parameters", "parameters"),
    ("train_seconds", "train time (s)"),
    ("gpu_hours", "GPU-hours"),
    ("best_epoch", "best epoch"),
    ("epochs", "epochs"),
)
LATENCY_METRIC = "test.latency_ms"
NO_TRIAL_ENDED = "no trial ended yet"


class Provenance(BaseModel):
    """Where a comparison comes from; None is unknown (printed as "unknown", never guessed)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    run: str | None = None
    spec: str | None = None
    branch: str | None = None
    commit: str | None = None
    dirty: bool | None = None


@dataclass(frozen=True)
class ExtractorView:
    """One extractor: its seeds by status and the statistics of the ranking metric."""

    name: str
    summary: cs.ExtractorSummary | None  # None: no trial of it ended yet
    tier: cs.Tier | None
    trials: tuple[TrialRecord, ...]
    pending: tuple[int, ...]
    running: tuple[int, ...]
    others: dict[str, cs.ExtractorSummary]  # metric -> its summary over the finished seeds


@dataclass(frozen=True)
class ComparisonData:
    metric: str
    mode: cs.Mode
    epoch: Epoch
    provenance: Provenance
    expected: int
    records: tuple[TrialRecord, ...]  # in report order
    extractors: tuple[ExtractorView, ...]  # in report order
    ranking: cs.Ranking
    matrix: cs.ImprovementMatrix
    missing_metric: tuple[str, ...]  # finished trials with no finite value of the metric
    other_metrics: tuple[tuple[str, str], ...]  # (metric, label) present in some trial

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.records)

    @property
    def finished(self) -> int:
        return self.count("finished") - len(self.missing_metric)

    @property
    def failed(self) -> tuple[TrialRecord, ...]:
        return tuple(r for r in self.records if r.status == "failed")

    @property
    def waiting(self) -> int:
        """Pending or running, including the expected trials with no record yet."""
        recorded = self.count("pending") + self.count("running")
        return recorded + max(0, self.expected - len(self.records))

    def best(self) -> ExtractorView | None:
        return next((e for e in self.extractors if e.tier is not None), None)


def _result(rec: TrialRecord, metric: str) -> cs.TrialResult:
    if rec.status == "failed":
        return cs.TrialResult(rec.extractor, rec.seed, None, rec.error or "failed (no error kept)")
    value = rec.value(metric)
    if value is None:
        return cs.TrialResult(
            rec.extractor, rec.seed, None, f"finished without a finite value of {metric}"
        )
    return cs.TrialResult(rec.extractor, rec.seed, value)


def build(
    *,
    records: Sequence[TrialRecord],
    metric: str,
    mode: cs.Mode,
    epoch: Epoch,
    provenance: Provenance,
    expected_trials: int | None = None,
) -> ComparisonData:
    ended = [r for r in records if r.status in ("finished", "failed")]
    first = cs.rank_tiers(trials=[_result(r, metric) for r in ended], metric=metric, mode=mode)
    unranked = sorted(set(first.unranked))
    waiting_only = sorted({r.extractor for r in records} - set(first.order) - set(unranked))
    order = [*first.order, *unranked, *waiting_only]
    position = {name: i for i, name in enumerate(order)}
    ordered = tuple(sorted(records, key=lambda r: (position[r.extractor], r.seed, r.trial)))
    results = [_result(r, metric) for r in ordered if r.status in ("finished", "failed")]
    summary = cs.summarize(trials=results, metric=metric, mode=mode)
    ranking = cs.rank_tiers(trials=results, metric=metric, mode=mode)
    matrix = cs.improvement_matrix(trials=results, metric=metric, mode=mode)
    by_name = {s.extractor: s for s in summary.extractors}
    tier_of = {e: t for t in ranking.tiers for e in t.extractors}
    finished = [r for r in ordered if r.status == "finished"]
    known = {m for m, _ in OTHER_METRICS}
    extra = sorted({m for r in finished for m in r.metrics if m not in known and m != metric})
    present = [
        (m, label)
        for m, label in (*OTHER_METRICS, *((m, m) for m in extra))
        if any(r.value(m) is not None for r in finished)
    ]
    others = {
        m: {
            s.extractor: s
            for s in cs.summarize(
                trials=[
                    cs.TrialResult(r.extractor, r.seed, r.value(m))
                    for r in finished
                    if r.value(m) is not None
                ],
                metric=m,
                mode="max",
            ).extractors
        }
        for m, _ in present
    }
    views = tuple(
        ExtractorView(
            name=name,
            summary=by_name.get(name),
            tier=tier_of.get(name),
            trials=tuple(r for r in ordered if r.extractor == name),
            pending=tuple(r.seed for r in ordered if r.extractor == name and r.status == "pending"),
            running=tuple(r.seed for r in ordered if r.extractor == name and r.status == "running"),
            others={m: per[name] for m, per in others.items() if name in per},
        )
        for name in order
    )
    missing = tuple(r.trial for r in ordered if r.status == "finished" and r.value(metric) is None)
    return ComparisonData(
        metric=metric,
        mode=mode,
        epoch=epoch,
        provenance=provenance,
        expected=len(records) if expected_trials is None else expected_trials,
        records=ordered,
        extractors=views,
        ranking=ranking,
        matrix=matrix,
        missing_metric=missing,
        other_metrics=tuple(present),
    )


# --------------------------------------------------------------------------- comparison.json


def _summary_dict(s: cs.ExtractorSummary | None) -> dict:
    if s is None:
        return {"n": 0, "mean": None, "std": None, "median": None, "ci_low": None,
                "ci_high": None, "warning": NO_TRIAL_ENDED, "points": []}  # fmt: skip
    return {
        "n": s.n,
        "mean": s.mean,
        "std": s.std,
        "median": s.median,
        "ci_low": s.ci_low,
        "ci_high": s.ci_high,
        "warning": s.warning,
        "points": [{"seed": p.seed, "value": p.value} for p in s.points],
    }


def to_json(
    data: ComparisonData, *, summary_line: str, plots: dict[str, str | None], notes: list[str]
) -> dict:
    """The machine-readable comparison: settings, provenance, counts, per-extractor summary,
    ranking and tests, improvement matrix, and every trial record (failures included)."""
    r = data.ranking
    return {
        "schema_version": SCHEMA_VERSION,
        "settings": {
            "metric": data.metric,
            "mode": data.mode,
            "epoch": data.epoch,
            "epoch_text": EPOCH_TEXT[data.epoch],
            "alpha": r.alpha,
            "confidence": cs.CONFIDENCE,
            "bootstrap_resamples": cs.BOOTSTRAP_RESAMPLES,
            "bootstrap_seed": cs.BOOTSTRAP_SEED,
            "min_seeds": cs.MIN_SEEDS,
        },
        "provenance": data.provenance.model_dump(mode="json"),
        "summary_line": summary_line,
        "counts": {
            "expected": data.expected,
            "recorded": len(data.records),
            "finished": data.finished,
            "failed": len(data.failed),
            "missing_metric": len(data.missing_metric),
            "pending": data.count("pending") + max(0, data.expected - len(data.records)),
            "running": data.count("running"),
        },
        "extractors": [
            {
                "extractor": e.name,
                "tier": e.tier.rank if e.tier else None,
                "tested": e.tier.tested if e.tier else None,
                **_summary_dict(e.summary),
                "finished_seeds": list(e.summary.finished) if e.summary else [],
                "failed": [{"seed": f.seed, "error": f.error} for f in e.summary.failed]
                if e.summary
                else [],
                "pending_seeds": list(e.pending),
                "running_seeds": list(e.running),
                "metrics": {
                    m: {"n": s.n, "mean": s.mean, "std": s.std} for m, s in e.others.items()
                },
            }
            for e in data.extractors
        ],
        "ranking": {
            "order": list(r.order),
            "tiers": [
                {"rank": t.rank, "extractors": list(t.extractors), "tested": t.tested}
                for t in r.tiers
            ],
            "unranked": [e.name for e in data.extractors if e.tier is None],
        },
        "tests": [
            {"a": t.a, "b": t.b, "p": t.p, "p_holm": t.p_holm, "significant": t.significant}
            for t in r.tests
        ],
        "improvement": {
            "extractors": list(data.matrix.extractors),
            "probability": [list(row) for row in data.matrix.probability],
        },
        "missing_metric": list(data.missing_metric),
        "plots": plots,
        "notes": notes,
        "trials": [rec.model_dump(mode="json") for rec in data.records],
    }
