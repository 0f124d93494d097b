"""The comparison in a line (commit messages) and in a few plain lines (the job log), and the
number formats the report shares. ASCII only ("+-"), so they read the same in any terminal,
``git log`` and log file."""

from __future__ import annotations

from .. import comparison_stats as cs
from ..numfmt import sig, sig_grouped
from .build import EPOCH_TEXT, ComparisonData, ExtractorView

UNKNOWN = "unknown"
DASH = "—"


def num(v: float | None) -> str:
    """A value in a table: 4 significant digits, thousands grouped; None as a dash."""
    return DASH if v is None else sig_grouped(v, 4)


def mean_std(s: cs.ExtractorSummary | None, *, pm: str = "±") -> str:
    """``0.981 ± 0.004``; the mean alone for a single seed; a dash with none."""
    if s is None or s.mean is None:
        return DASH
    if s.std is None:
        return sig(s.mean, 4)
    return f"{sig(s.mean, 4)} {pm} {sig(s.std, 2)}"


def seeds_text(n: int) -> str:
    return f"{n} seed{'' if n == 1 else 's'}"


def n_failed(data: ComparisonData) -> int:
    return len(data.failed) + len(data.missing_metric)


def summary_line(data: ComparisonData) -> str:
    """``5/12 trials, best i3d 0.981 +- 0.004`` (``; 1 failed`` when some did);
    ``0/12 trials finished`` before any finished. The best is the best tested extractor (2
    seeds or more); one with a single seed and a better value is named beside it
    (``(magvit 0.99 from 1 seed)``), so an early leader is not hidden while seeds come in."""
    best = data.best()
    if data.finished == 0 or best is None:
        line = f"{data.finished}/{data.expected} trials finished"
    else:
        line = f"{data.finished}/{data.expected} trials, best {best.name} "
        line += mean_std(best.summary, pm="+-")
        sign = 1 if data.mode == "max" else -1
        ahead = [
            e for e in data.extractors
            if e.summary and e.summary.n == 1 and e is not best and best.summary.mean is not None
            and sign * (e.summary.mean - best.summary.mean) > 0
        ]  # fmt: skip
        if ahead:
            top = max(ahead, key=lambda e: sign * e.summary.mean)
            line += f" ({top.name} {sig(top.summary.mean, 4)} from 1 seed)"
    failed = n_failed(data)
    return f"{line}; {failed} failed" if failed else line


def status_text(data: ComparisonData) -> str:
    """``5/12 trials finished, 1 failed, 6 pending or running``."""
    parts = [f"{data.finished}/{data.expected} trials finished"]
    if n_failed(data):
        parts.append(f"{n_failed(data)} failed")
    if data.waiting:
        parts.append(f"{data.waiting} pending or running")
    return ", ".join(parts)


def better_text(data: ComparisonData) -> str:
    return "higher is better" if data.mode == "max" else "lower is better"


def _member(e: ExtractorView) -> str:
    n = e.summary.n if e.summary else 0
    return f"{e.name} {mean_std(e.summary, pm='+-')} ({seeds_text(n)})"


def _waiting(e: ExtractorView) -> str:
    bits = []
    if e.summary and e.summary.failed:
        bits.append(f"{len(e.summary.failed)} failed")
    if e.pending:
        bits.append(f"{len(e.pending)} pending")
    if e.running:
        bits.append(f"{len(e.running)} running")
    return f"{e.name} ({', '.join(bits) or 'no trials'})"


def log_text(data: ComparisonData) -> str:
    """A few plain lines: settings and counts, the tiers with mean +- std, warnings, failures."""
    lines = [
        f"comparison of {data.metric} ({better_text(data)}): {status_text(data)}; "
        f"{EPOCH_TEXT[data.epoch]}"
    ]
    views = {e.name: e for e in data.extractors}
    for tier in data.ranking.tiers:
        label = f"tier {tier.rank}" if tier.tested else f"tier {tier.rank} (1 seed, not tested)"
        lines.append(f"  {label}: " + ", ".join(_member(views[n]) for n in tier.extractors))
    unranked = [e for e in data.extractors if e.tier is None]
    if unranked:
        lines.append("  no finished seed: " + ", ".join(_waiting(e) for e in unranked))
    for e in data.extractors:
        if e.summary and e.summary.n and e.summary.warning:
            lines.append(f"  warning: {e.name}: {e.summary.warning}")
    for rec in data.failed:
        lines.append(f"  failed: {rec.trial}: {rec.error or 'no error kept'}")
    for trial in data.missing_metric:
        lines.append(f"  no value of {data.metric}: {trial}")
    return "\n".join(lines)
