"""``write_comparison``: the comparison report of a compare stage, written into one folder.

``comparison.json`` (machine-readable; same inputs, same bytes: nothing in it depends on the
clock or the folder), ``comparison.md``, a self-contained ``comparison.html`` (plots embedded)
and ``plots/val_curves.png``, ``plots/metric_bars.png``, ``plots/accuracy_vs_latency.png``.
Every file is written atomically, so a reader (the puller, the TUI, a commit) never sees half
of one. The compare stage calls this after every trial; ``tether analyze --compare`` calls it
on a pulled run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .. import comparison_stats as cs
from ..atomic import write_bytes_atomic, write_json_atomic
from ..report.document import render_html, render_markdown
from . import plots as _plots
from .build import ComparisonData, Epoch, Provenance, build, to_json
from .records import TrialRecord
from .render import build_report
from .summary import log_text, summary_line

JSON_FILE = "comparison.json"
MARKDOWN_FILE = "comparison.md"
HTML_FILE = "comparison.html"
PLOTS_DIR = "plots"
PLOTS = ("val_curves", "metric_bars", "accuracy_vs_latency")
_SKIPPED = {
    "val_curves": "no finished trial recorded validation curves: no curves plot",
    "metric_bars": "no trial has finished yet: no metric plot",
    "accuracy_vs_latency": "no finished trial recorded a latency (test.latency_ms): "
    "no accuracy-vs-latency plot",
}


@dataclass(frozen=True)
class Comparison:
    """What ``write_comparison`` wrote, and the comparison in a line and in a few lines."""

    summary_line: str  # "5/12 trials, best i3d 0.981 +- 0.004" (commit messages)
    text: str  # a few plain lines for the job log
    paths: dict[str, Path]  # json, markdown, html and each plot written
    data: ComparisonData = field(repr=False)

    @property
    def finished(self) -> int:
        return self.data.finished

    @property
    def expected(self) -> int:
        return self.data.expected


def write_comparison(
    *,
    records: Sequence[TrialRecord],
    metric: str,
    mode: cs.Mode,
    epoch: Epoch,
    provenance: Provenance,
    out_dir: Path,
    expected_trials: int | None = None,
) -> Comparison:
    """Write the comparison of ``records`` (ranked by ``metric``, ``mode`` "max": higher is
    better) into ``out_dir``; ``epoch`` says whose test metrics these are ("best": the best
    epoch by val loss, "last": the last epoch, None: not recorded). ``expected_trials``: how
    many the comparison has in all (default: the records given), for "5/12 trials"."""
    out_dir = Path(out_dir)
    data = build(
        records=records, metric=metric, mode=mode, epoch=epoch, provenance=provenance,
        expected_trials=expected_trials,
    )  # fmt: skip
    drawers = {
        "val_curves": _plots.val_curves,
        "metric_bars": _plots.metric_bars,
        "accuracy_vs_latency": _plots.accuracy_vs_latency,
    }
    plot_paths: dict[str, Path | None] = {}
    notes: list[str] = []
    for name in PLOTS:
        target = out_dir / PLOTS_DIR / f"{name}.png"
        plot_paths[name] = drawers[name](data=data, path=target)
        if plot_paths[name] is None:
            target.unlink(missing_ok=True)  # a stale plot of an earlier comparison
            notes.append(_SKIPPED[name])
    line = summary_line(data)
    paths = {"json": out_dir / JSON_FILE}
    rel = {n: (f"{PLOTS_DIR}/{n}.png" if p is not None else None) for n, p in plot_paths.items()}
    write_json_atomic(paths["json"], to_json(data, summary_line=line, plots=rel, notes=notes))
    report = build_report(data, plots=plot_paths, notes=notes)
    paths["markdown"] = out_dir / MARKDOWN_FILE
    write_bytes_atomic(paths["markdown"], render_markdown(report, base=out_dir).encode())
    paths["html"] = out_dir / HTML_FILE
    write_bytes_atomic(paths["html"], render_html(report).encode())
    paths.update({n: p for n, p in plot_paths.items() if p is not None})
    return Comparison(summary_line=line, text=log_text(data), paths=paths, data=data)
