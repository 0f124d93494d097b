"""The comparison as report blocks (``ml.report.document``), rendered to ``comparison.md`` and
a self-contained ``comparison.html`` by the same renderers as the run reports, so the two say
the same. Every number comes from ``ComparisonData``; unknown values print as "unknown"/"—".
"""

from __future__ import annotations

from pathlib import Path

from .. import comparison_stats as cs
from ..report.document import Bullets, Heading, Image, Para, Report, TableBlock
from .build import EPOCH_TEXT, ComparisonData
from .records import TrialRecord
from .summary import (
    DASH,
    UNKNOWN,
    better_text,
    mean_std,
    num,
    status_text,
)

MAX_LAST_LINES = 20
PLOT_CAPTIONS = {
    "val_curves": "Validation curves per extractor: mean over the finished seeds, band min-max",
    "metric_bars": "Mean per extractor, error bars the 95% bootstrap CI, points the seeds",
    "accuracy_vs_latency": "The trade-off: mean metric against mean latency per extractor",
}


def _known(v: object) -> str:
    return UNKNOWN if v is None or v == "" else str(v)


def _seeds_cell(data: ComparisonData, name: str) -> str:
    e = next(x for x in data.extractors if x.name == name)
    s = e.summary
    bits = [f"{s.n if s else 0} finished"]
    if s and s.failed:
        bits.append(f"{len(s.failed)} failed")
    if e.pending:
        bits.append(f"{len(e.pending)} pending")
    if e.running:
        bits.append(f"{len(e.running)} running")
    return ", ".join(bits)


def _ranking_table(data: ComparisonData) -> TableBlock:
    rows = []
    for e in data.extractors:
        s = e.summary
        tier = DASH if e.tier is None else f"{e.tier.rank}" + ("" if e.tier.tested else " *")
        ci = DASH if s is None or s.ci_low is None else f"[{num(s.ci_low)}, {num(s.ci_high)}]"
        points = ", ".join(f"s{p.seed}: {num(p.value)}" for p in s.points) if s else ""
        rows.append([
            tier, e.name, _seeds_cell(data, e.name), mean_std(s),
            num(s.median if s else None), ci, points or DASH,
        ])  # fmt: skip
    header = ["tier", "extractor", "seeds", "mean ± std", "median", "95% CI", "each seed"]
    return TableBlock(header=header, rows=rows)


def _warnings(data: ComparisonData) -> list[str]:
    out = []
    for e in data.extractors:
        if e.summary is not None and e.summary.n and e.summary.warning:
            out.append(f"{e.name}: {e.summary.warning}")
    if any(t.tested is False for t in data.ranking.tiers):
        out.append("* a single finished seed cannot be tested: that tier is by mean alone")
    return out


def _other_metrics(data: ComparisonData) -> TableBlock | None:
    if not data.other_metrics:
        return None
    names = [e.name for e in data.extractors]
    rows = []
    for metric, label in data.other_metrics:
        cells = []
        for e in data.extractors:
            s = e.others.get(metric)
            cells.append(num(s.mean) if s is not None else DASH)
        rows.append([label, *cells])
    return TableBlock(header=["metric (mean over seeds)", *names], rows=rows)


def _tests_table(ranking: cs.Ranking) -> TableBlock:
    rows = [
        [t.a, t.b, f"{t.p:.3g}", f"{t.p_holm:.3g}", "yes" if t.significant else "no"]
        for t in ranking.tests
    ]
    return TableBlock(header=["a", "b", "Welch p", "Holm p", "significant"], rows=rows)


def _matrix_table(m: cs.ImprovementMatrix) -> TableBlock:
    rows = [
        [a, *(DASH if p is None else f"{p:.0%}" for p in row)]
        for a, row in zip(m.extractors, m.probability, strict=True)
    ]
    return TableBlock(header=["P(row beats column)", *m.extractors], rows=rows)


def _duration(rec: TrialRecord) -> str:
    if rec.started is None or rec.ended is None:
        return DASH
    return f"{rec.ended - rec.started:.0f} s"


def _trial_row(r: TrialRecord, metric: str) -> list[str]:
    return [
        r.trial, r.status, num(r.value(metric)), _known(r.device),
        _known(r.node[:12] if r.node else None),
        ", ".join(r.gpu_ids) or DASH, _known(r.host), str(r.attempts) if r.attempts else DASH,
        DASH if r.resumed_from_epoch is None else str(r.resumed_from_epoch),
        _duration(r), _known(r.config_hash),
    ]  # fmt: skip


def _trials_table(data: ComparisonData) -> TableBlock:
    rows = [_trial_row(r, data.metric) for r in data.records]
    header = ["trial", "status", data.metric, "device", "node", "GPU ids", "host", "attempts",
              "resumed from epoch", "time", "config hash"]  # fmt: skip
    return TableBlock(header=header, rows=rows)


def _provenance(data: ComparisonData) -> TableBlock:
    p = data.provenance
    dirty = UNKNOWN if p.dirty is None else ("yes (uncommitted changes)" if p.dirty else "no")
    rows = [
        ["run", _known(p.run)], ["spec", _known(p.spec)], ["branch", _known(p.branch)],
        ["commit", _known(p.commit)], ["dirty", dirty],
    ]  # fmt: skip
    return TableBlock(header=["what", "value"], rows=rows)


def build_report(
    data: ComparisonData, *, plots: dict[str, Path | None], notes: list[str]
) -> Report:
    title = f"Comparison of {data.metric}"
    if data.provenance.run:
        title += f": run {data.provenance.run}"
    rep = Report(title=title)
    rep.add(
        Para(
            f"{status_text(data)}. Ranked by {data.metric} ({better_text(data)}); "
            f"{EPOCH_TEXT[data.epoch]}. Only finished trials count."
        ),
        Heading("Ranking"),
        Para(
            f"Tiers: extractors the seeds cannot tell apart (Welch's t-test, Holm-corrected "
            f"over all pairs, alpha {data.ranking.alpha:g}). Mean ± sample std (ddof=1); "
            f"95% CI of the mean by bootstrap (BCa, {cs.BOOTSTRAP_RESAMPLES} resamples, "
            f"seed {cs.BOOTSTRAP_SEED})."
        ),
        _ranking_table(data),
    )
    warnings = _warnings(data)
    if warnings:
        rep.add(Bullets(warnings))
    others = _other_metrics(data)
    if others is not None:
        rep.add(Heading("Other metrics"), others)
    if data.ranking.tests:
        rep.add(Heading("Pairwise tests"), _tests_table(data.ranking))
    if len(data.matrix.extractors) > 1:
        rep.add(
            Heading("Probability of improvement"),
            Para("Share of seed pairs where the row's value beats the column's (ties half)."),
            _matrix_table(data.matrix),
        )
    rep.add(Heading("Plots"))
    for name, path in plots.items():
        if path is not None:
            rep.add(Image(path=path, caption=PLOT_CAPTIONS[name]))
    if notes:
        rep.add(Bullets(notes))
    if data.failed or data.missing_metric:
        rep.add(Heading("Failed trials"))
    for rec in data.failed:
        rep.add(Heading(rec.trial, level=3), Para(f"error: {rec.error or 'no error kept'}"))
        if rec.last_lines:
            rep.add(Para("last lines:"), Bullets(rec.last_lines[-MAX_LAST_LINES:]))
    if data.missing_metric:
        rep.add(
            Para(f"finished without a value of {data.metric}: " + ", ".join(data.missing_metric))
        )
    rep.add(Heading("Provenance"), _provenance(data), Heading("Trials", level=3))
    recorded = f"{len(data.records)} of {data.expected} trials recorded"
    if len(data.records) < data.expected:
        recorded += "; the others are pending"
    rep.add(Para(recorded + "."))
    rep.add(_trials_table(data))
    return rep
