"""``analyze_csv``: statistics, plots, a diagnosis of the loss curve and the reports for W&B
CSV exports."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .. import plots
from ..atomic import write_json_atomic
from ..diagnose import Diagnosis, diagnose
from ..numfmt import sig_grouped as _f
from ..numfmt import signed_pct
from .document import Bullets, Heading, Image, Para, Report, TableBlock, write_report
from .results import Analysis, _commentary


def _csv_monitor(columns: dict[str, list]) -> str | None:
    names = list(columns)
    for pick in (
        lambda n: "val" in n.lower() and "loss" in n.lower(),
        lambda n: "loss" in n.lower(),
    ):
        found = [n for n in names if pick(n)]
        if found:
            return found[0]
    return None


def analyze_csv(
    *,
    paths: Sequence[Path],
    out_dir: Path,
    window: int | None = None,
    llm: bool = False,
    llm_model: str | None = None,
) -> Analysis:
    """Statistics, plots, a diagnosis of the loss curve and the reports for W&B CSV exports."""
    from ..metrics_csv import load_wandb_csvs, summarize

    table = load_wandb_csvs(paths=list(paths))
    summary = summarize(table=table, window=window)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / "csv_summary.json", summary.to_dict())
    images = _csv_plots(table, out_dir)

    monitor = _csv_monitor(table.columns)
    diag = None
    if monitor is not None:
        logged = [v for v in table.columns[monitor] if v is not None]
        if len(logged) >= 1:
            diag = diagnose({monitor: logged}, monitor=monitor, patience=max(5, len(logged) // 10))
            write_json_atomic(out_dir / "diagnosis.json", diag.to_dict())

    r = _csv_report(paths, table, summary, monitor, diag, images)
    commentary = None
    if llm:
        commentary = _commentary(
            r,
            out_dir,
            llm_model,
            csv_summary=summary.to_dict(),
            diagnosis=diag.to_dict() if diag is not None else None,
        )
    paths_out = write_report(r, out_dir=out_dir)
    if commentary is not None and commentary.path:
        paths_out["llm"] = commentary.path
    paths_out["csv_summary"] = out_dir / "csv_summary.json"
    if diag is not None:
        paths_out["diagnosis"] = out_dir / "diagnosis.json"
    paths_out.update({img.path.stem: img.path for img in images})
    lines = [
        f"{len(table.columns)} metrics from {len(paths)} file(s), "
        f"{summary.steps.get('count')} steps"
    ]
    lr = summary.lr_schedule
    if lr is not None:
        lines.append(f"learning rate ({lr.column}): {lr.kind}")
    if diag is not None:
        lines.append(f"{monitor}: {diag.status.value}")
    return Analysis(out_dir, paths_out, diag, {}, [], lines, commentary)


def _csv_plots(table, out_dir: Path) -> list[Image]:
    images = [
        Image(
            plots.csv_overview(
                steps=table.steps, columns=table.columns, path=out_dir / "metrics_overview.png"
            ),
            "Every metric against the step.",
        ),
        Image(
            plots.csv_trends(steps=table.steps, columns=table.columns, path=out_dir / "trends.png"),
            "Per-metric values, rolling mean and linear trend.",
        ),
    ]
    if len(table.columns) >= 2:
        images.append(
            Image(
                plots.correlation_heatmap(columns=table.columns, path=out_dir / "correlations.png"),
                "Pearson correlation between metrics (steps where both are finite).",
            )
        )
    return images


def _csv_report(
    paths: Sequence[Path],
    table,
    summary,
    monitor: str | None,
    diag: Diagnosis | None,
    images: list[Image],
) -> Report:
    from ..metrics_csv import format_summary

    r = Report(title=f"Analysis of {len(paths)} metric file(s)")
    r.add(
        Heading("Inputs"),
        TableBlock(["file", "layout"], [[Path(f).name, lay] for f, lay in table.layout.items()]),
        Para(
            f"{len(table.columns)} metrics over {summary.steps.get('count')} steps "
            f"({summary.steps.get('first')} to {summary.steps.get('last')})."
        ),
    )
    rows = []
    for name, st in summary.stats.items():
        change = signed_pct(st.pct_change) if st.pct_change is not None else "n/a"
        rows.append(
            [
                name, str(st.count), _f(st.mean), _f(st.std),
                _f(st.cv) if st.cv is not None else "n/a",
                f"{_f(st.first)} -> {_f(st.last)}", change, st.direction or "n/a",
            ]
        )  # fmt: skip
    r.add(
        Heading("Statistics"),
        TableBlock(
            ["metric", "n", "mean", "std", "CV", "first -> last (window)", "change", "trend"], rows
        ),
    )
    lr = summary.lr_schedule
    r.add(Heading("Learning-rate schedule"))
    if lr is None:
        r.add(Para("No learning-rate column found."))
    else:
        fit = f" (R^2 {lr.r2:.3f})" if getattr(lr, "r2", None) is not None else ""
        r.add(Para(f"{lr.column}: {lr.kind}{fit}."))
    r.add(Heading("Summary"), Para(format_summary(summary).replace("\n", " / ")))
    if diag is not None:
        r.add(Heading(f"Diagnosis of {monitor}"), Para(diag.to_text().replace("\n", " / ")))
        if diag.recommendations:
            r.add(
                Bullets([f"{x.action} (because {x.evidence})" for x in diag.recommendations], True)
            )
    r.add(Heading("Plots"), *images)
    return r
