"""``format_summary``: the CSV statistics as a short text block, every statement with its
figure (number formats: ``tether.ml.numfmt``)."""

from __future__ import annotations

from ..numfmt import sig as _f
from ..numfmt import signed_pct
from ..numfmt import step as _fs
from .records import CONSTANT_LR, FIT_R2, FLAT_TREND, CSVSummary, LRSchedule


def format_summary(summary: CSVSummary, *, top_correlations: int = 5) -> str:
    """A short text block: one line per metric with its numbers, the lr schedule and the
    strongest correlations. Every statement carries its figure."""
    st = summary.steps
    lines: list[str] = []
    files = ", ".join(f"{p} ({k})" for p, k in summary.files.items())
    span = f" ({_fs(st['first'])}..{_fs(st['last'])})" if st["count"] else ""
    lines.append(f"{st['count']} steps{span}" + (f" from {files}" if files else ""))
    if summary.stats:
        lines.append(
            "first/last = mean of the first/last <w> finite values; trend = least-squares slope "
            f"per step, and slope x step span / (max - min), flat when |that| < {FLAT_TREND:g}"
        )
    width = max((len(n) for n in summary.stats), default=0)
    for name, s in summary.stats.items():
        counts = f"n={s.count}"
        if s.missing:
            counts += f" missing={s.missing}"
        if s.non_finite:
            counts += f" non-finite={s.non_finite} (first at step {_fs(s.first_non_finite_step)})"
        if not s.count:
            lines.append(f"  {name:<{width}}  {counts}")
            continue
        text = (
            f"  {name:<{width}}  mean {_f(s.mean)}  std {_f(s.std)}  CV {_f(s.cv)}  "
            f"first->last {_f(s.first)} -> {_f(s.last)} ({_pct(s.pct_change)}, w={s.window})"
        )
        if s.trend_slope is not None:
            text += (
                f"  trend {_f(s.trend_slope)}/step ({_f(s.relative_trend, 2)} x range: "
                f"{s.direction})"
            )
        lines.append(f"{text}  [{counts}]")
    lr = summary.lr_schedule
    if lr is None:
        lines.append("LR schedule: no lr column")
    else:
        others = lr.details.get("other_lr_columns")
        also = f" (not classified: {', '.join(others)})" if others else ""
        lines.append(f"LR schedule ({lr.column}): {_lr_text(lr)}{also}")
    pairs = sorted(
        {
            (a, b) if a < b else (b, a): r
            for a, row in summary.correlations.items()
            for b, r in row.items()
        }.items(),
        key=lambda kv: -abs(kv[1]),
    )[:top_correlations]
    if pairs:
        lines.append(f"Strongest correlations (Pearson r, top {len(pairs)} by |r|):")
        for (a, b), r in pairs:
            n = summary.correlation_counts[a][b]
            lines.append(f"  {a} ~ {b}: r = {r:+.3f} over {n} steps")
    else:
        lines.append("Correlations: no pair of metrics with >= 3 common finite steps")
    for note in summary.notes:
        lines.append(f"Note: {note}")
    return "\n".join(lines)


def _lr_text(lr: LRSchedule) -> str:
    d = lr.details
    warm = ""
    if "warmup_steps" in d:
        warm = (
            f", after a warmup of {_fs(d['warmup_steps'])} steps "
            f"from {_f(d['warmup_from'])} to {_f(d['warmup_to'])}"
        )
    if lr.kind == "constant":
        return (
            f"constant at {_f(d['value'])} (variation {d['relative_variation'] * 100:.2f}% "
            f"< {CONSTANT_LR * 100:g}%){warm}"
        )
    if lr.kind == "step":
        drops = "; ".join(
            f"step {_fs(x['step'])}: {_f(x['from'])} -> {_f(x['to'])} (x{x['factor']:.3g})"
            for x in d["drops"]
        )
        return f"step decay, {len(d['drops'])} drop(s): {drops} (R^2 {_f(lr.r2)}){warm}"
    if lr.kind == "cosine":
        text = (
            f"cosine from {_f(d['max'])} to {_f(d['min'])} over {_fs(d['period_steps'])} steps "
            f"from step {_fs(d['start_step'])} (R^2 {lr.r2:.4f} > {FIT_R2}; "
            f"linear R^2 {_f(d.get('linear_r2'))})"
        )
    elif lr.kind == "linear":
        text = (
            f"linear decay from {_f(d['start'])} to {_f(d['end'])}, {_f(d['slope_per_step'])}/step "
            f"(R^2 {lr.r2:.4f} > {FIT_R2}; cosine R^2 {_f(d.get('cosine_r2'))})"
        )
    else:
        reason = d.get("reason") or (
            f"neither fits: cosine R^2 {_f(d.get('cosine_r2'))}, linear R^2 "
            f"{_f(d.get('linear_r2'))}, need > {FIT_R2}"
        )
        return f"unknown ({reason}){warm}"
    if d.get("quantized"):
        text += f", updated in {d['updates']} steps"
    return text + warm


def _pct(x: float | None) -> str:
    return "% change n/a, first ~ 0" if x is None else signed_pct(x)
