"""Reports: ``analysis_report.txt``, ``report.md`` and a self-contained ``report.html``.

A report is built once as a list of blocks (headings, paragraphs, tables, images, lists)
and rendered three ways, so the three files always say the same thing. Every number comes
from the data; where a stored metric disagrees with the confusion matrix the report shows
both and uses the matrix. HTML embeds its images (base64) and loads nothing from outside.
"""

from __future__ import annotations

import base64
import html
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import plots
from .atomic import write_bytes_atomic, write_json_atomic
from .diagnose import Diagnosis, Milestone, Target, diagnose, history_from_results
from .errors import MLError
from .metrics import metrics_from_confusion
from .results import ClassificationResults, TrainingResults, read_training_results

TEST_METRICS = ("accuracy", "precision", "recall", "f1", "mse", "mae")
AGREE_TOLERANCE = 0.005  # half a point in the second decimal


# --------------------------------------------------------------------------- blocks


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Para:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: list[str]
    ordered: bool = False


@dataclass(frozen=True)
class TableBlock:
    header: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Image:
    path: Path  # a PNG beside the report
    caption: str


Block = Heading | Para | Bullets | TableBlock | Image


@dataclass
class Report:
    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> None:
        self.blocks.extend(blocks)


def render_markdown(report: Report, *, base: Path) -> str:
    out = [f"# {report.title}", ""]
    for b in report.blocks:
        if isinstance(b, Heading):
            out += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, Para):
            out += [b.text, ""]
        elif isinstance(b, Bullets):
            out += [f"{i}. {t}" if b.ordered else f"- {t}" for i, t in enumerate(b.items, 1)]
            out.append("")
        elif isinstance(b, TableBlock):
            out.append("| " + " | ".join(b.header) + " |")
            out.append("|" + "|".join(" --- " for _ in b.header) + "|")
            out += ["| " + " | ".join(r) + " |" for r in b.rows]
            out.append("")
        elif isinstance(b, Image):
            out += [f"![{b.caption}]({b.path.relative_to(base).as_posix()})", ""]
    return "\n".join(out)


def render_text(report: Report) -> str:
    out = [report.title, "=" * len(report.title), ""]
    for b in report.blocks:
        if isinstance(b, Heading):
            out += [b.text, "-" * len(b.text)]
        elif isinstance(b, Para):
            out += [b.text, ""]
        elif isinstance(b, Bullets):
            out += [f"  {i}. {t}" if b.ordered else f"  - {t}" for i, t in enumerate(b.items, 1)]
            out.append("")
        elif isinstance(b, TableBlock):
            widths = [max(len(str(c)) for c in col) for col in zip(b.header, *b.rows, strict=True)]
            line = "  ".join(h.ljust(w) for h, w in zip(b.header, widths, strict=True))
            out += [line, "  ".join("-" * w for w in widths)]
            out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in b.rows]
            out.append("")
        elif isinstance(b, Image):
            out += [f"[plot: {b.path.name}] {b.caption}", ""]
    return "\n".join(out)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1000px;
margin:2rem auto;padding:0 1rem;color:#1d2125;line-height:1.45}
h1{border-bottom:2px solid #d0d7de;padding-bottom:.3rem}h2{margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0 1rem}td,th{border:1px solid #d0d7de;
padding:.3rem .6rem;text-align:left}th{background:#f6f8fa}
figure{margin:1rem 0}img{max-width:100%;border:1px solid #eaeef2}
figcaption{color:#57606a;font-size:.9rem}.red{color:#b42318;font-weight:600}
.amber{color:#b54708;font-weight:600}.green{color:#067647;font-weight:600}
"""


def render_html(report: Report) -> str:
    esc = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(report.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(report.title)}</h1>",
    ]
    for b in report.blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{esc(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            out.append(f"<p>{_flags(esc(b.text))}</p>")
        elif isinstance(b, Bullets):
            tag = "ol" if b.ordered else "ul"
            items = "".join(f"<li>{_flags(esc(t))}</li>" for t in b.items)
            out.append(f"<{tag}>{items}</{tag}>")
        elif isinstance(b, TableBlock):
            head = "".join(f"<th>{esc(h)}</th>" for h in b.header)
            rows = "".join(
                "<tr>" + "".join(f"<td>{_flags(esc(c))}</td>" for c in r) + "</tr>" for r in b.rows
            )
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(b, Image):
            data = base64.b64encode(b.path.read_bytes()).decode()
            out.append(
                f'<figure><img alt="{esc(b.caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{esc(b.caption)}</figcaption></figure>"
            )
    out.append("</body></html>")
    return "\n".join(out)


def _flags(text: str) -> str:
    for flag in ("red", "amber", "green"):
        text = text.replace(f"[{flag}]", f'<span class="{flag}">{flag.upper()}</span>')
    return text


def write_report(report: Report, *, out_dir: Path, stem: str = "report") -> dict[str, Path]:
    """Write ``analysis_report.txt``, ``<stem>.md`` and ``<stem>.html`` atomically."""
    paths = {
        "text": out_dir / "analysis_report.txt",
        "markdown": out_dir / f"{stem}.md",
        "html": out_dir / f"{stem}.html",
    }
    write_bytes_atomic(paths["text"], render_text(report).encode())
    write_bytes_atomic(paths["markdown"], render_markdown(report, base=out_dir).encode())
    write_bytes_atomic(paths["html"], render_html(report).encode())
    return paths


# --------------------------------------------------------------------------- analysis


@dataclass(frozen=True)
class MetricCheck:
    """A stored test metric against the value recomputed from the confusion matrix."""

    name: str
    stored: float
    recomputed: float

    @property
    def agrees(self) -> bool:
        return abs(self.stored - self.recomputed) <= AGREE_TOLERANCE


def check_classification(test: ClassificationResults) -> tuple[dict[str, float], list[MetricCheck]]:
    """Recompute accuracy and macro precision/recall/F1 from the matrix; the matrix wins."""
    m = metrics_from_confusion(test.confusion_matrix, class_names=test.class_names)
    recomputed = {"accuracy": m.accuracy, "precision": m.precision, "recall": m.recall, "f1": m.f1}
    checks = [MetricCheck(k, float(getattr(test, k)), v) for k, v in recomputed.items()]
    return recomputed, checks


@dataclass
class Analysis:
    out_dir: Path
    paths: dict[str, Path]
    diagnosis: Diagnosis | None
    metrics: dict[str, float]
    checks: list[MetricCheck]
    summary: list[str]
    llm: object | None = None


def _f(v: float | None, digits: int = 4) -> str:
    if v is None:
        return "n/a"
    return f"{v:.{digits}g}" if abs(v) < 1000 else f"{v:,.0f}"


def _pct(v: float) -> str:
    return f"{v:.2%}"


def split_targets(targets: Sequence[Target], *, history_keys: Sequence[str]) -> tuple[list, list]:
    """Targets on test metrics (``accuracy``, ``f1``, ``mse``...) vs on the history."""
    test, hist = [], []
    for t in targets:
        if t.metric in TEST_METRICS:
            test.append(t)
        elif t.metric in history_keys:
            hist.append(t)
        else:
            raise MLError(
                f"target {t.metric!r} is neither a test metric ({', '.join(TEST_METRICS)}) nor "
                f"in the history ({', '.join(history_keys)})"
            )
    return test, hist


def read_run_meta(results_path: Path) -> dict:
    """``run.json`` beside the results (written by the cluster runtime), else empty."""
    meta = results_path.parent / "run.json"
    if meta.is_file():
        try:
            return json.loads(meta.read_text())
        except (OSError, ValueError):
            return {}
    return {}


def analyze_results(
    *,
    results_path: Path,
    out_dir: Path | None = None,
    targets: Sequence[Target] = (),
    milestones: Sequence[Milestone] = (),
    run_meta: dict | None = None,
    llm: bool = False,
    llm_model: str | None = None,
) -> Analysis:
    """Plots, diagnosis and the three report files for one ``training_results.json``."""
    results = read_training_results(results_path)
    out_dir = Path(out_dir) if out_dir is not None else results_path.parent / "analysis"
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {**read_run_meta(results_path), **(run_meta or {})}
    history = history_from_results(results.model_dump(by_alias=True))
    test_targets, hist_targets = split_targets(targets, history_keys=list(history))

    test = results.test_results
    checks: list[MetricCheck] = []
    groups: dict[str, dict[str, float]] = {}
    if isinstance(test, ClassificationResults):
        metrics, checks = check_classification(test)
        per = metrics_from_confusion(test.confusion_matrix, class_names=test.class_names)
        groups = {
            "recall": {n: c.recall for n, c in per.per_class.items()},
            "f1": {n: c.f1 for n, c in per.per_class.items()},
        }
    else:
        metrics = {"mse": test.mse, "mae": test.mae}
        groups = {"mse": dict(test.per_group)}
    diag = diagnose(
        history,
        targets=hist_targets,
        milestones=milestones,
        groups=groups,
        patience=results.model_config_.get("patience", 5),
        min_delta=results.model_config_.get("min_delta", 1e-4),
    )
    write_json_atomic(out_dir / "diagnosis.json", diag.to_dict())

    # Plots.
    images: list[Image] = []
    target_lines = {t.metric: t.goal for t in targets}
    images.append(
        Image(
            plots.training_curves(
                train=results.train_history.series(),
                val=results.val_history.series(),
                path=out_dir / "training_curves.png",
                title=f"{results.model}: training curves",
                best_epoch=results.best_epoch or None,
                targets=target_lines,
            ),
            "Loss, metrics and generalization gap per epoch (dashed: best epoch).",
        )
    )
    images.append(
        Image(
            plots.metrics_summary(
                metrics=metrics,
                path=out_dir / "metrics_summary.png",
                targets={t.metric: t.goal for t in test_targets},
                title=f"{results.model}: test metrics",
            ),
            "Test metrics (recomputed from the confusion matrix where there is one).",
        )
    )
    if isinstance(test, ClassificationResults):
        images.append(
            Image(
                plots.confusion_matrix_plot(
                    matrix=test.confusion_matrix,
                    class_names=test.class_names,
                    path=out_dir / "confusion_matrix.png",
                ),
                "Confusion matrix: counts and share of each true class.",
            )
        )
        if test.early_decision is not None:
            e = test.early_decision
            images.append(
                Image(
                    plots.early_decision_plot(
                        decision_frames=e.decision_frames,
                        frames=e.frames,
                        path=out_dir / "early_decision.png",
                        threshold=e.threshold,
                        compute_savings_pct=e.compute_savings_pct,
                    ),
                    "When clips are decided, and the compute a streaming model would use.",
                )
            )
        if test.attention_mean:
            images.append(
                Image(
                    plots.attention_heatmap(
                        attention=test.attention_mean, path=out_dir / "attention.png"
                    ),
                    "Mean causal attention of the early-decision head over the test clips.",
                )
            )

    report = _results_report(results, meta, metrics, checks, test_targets, diag, images)
    commentary = None
    if llm:
        commentary = _commentary(
            report, out_dir, llm_model, results=results.to_json_dict(), diagnosis=diag.to_dict()
        )
    paths = write_report(report, out_dir=out_dir)
    paths["diagnosis"] = out_dir / "diagnosis.json"
    paths.update({img.path.stem: img.path for img in images})
    if commentary is not None and commentary.path:
        paths["llm"] = commentary.path
    summary = _summary_lines(results, metrics, checks, diag)
    return Analysis(out_dir, paths, diag, metrics, checks, summary, commentary)


def _commentary(report: Report, out_dir: Path, model: str | None, **inputs):
    """Ask for LLM commentary (never raises) and say in the report what came of it."""
    from .llm import generate_commentary

    kwargs = {"model": model} if model else {}
    commentary = generate_commentary(out_path=out_dir / "llm_analysis.md", **inputs, **kwargs)
    report.add(Heading("LLM commentary"), Para(_llm_line(commentary)))
    return commentary


def _llm_line(commentary) -> str:
    if commentary.status == "ok":
        return (
            f"Written to llm_analysis.md by {commentary.model}; "
            f"{len(commentary.unverified)} number(s) in it could not be verified against the "
            "data and are marked there."
        )
    return commentary.message


def _summary_lines(results, metrics, checks, diag) -> list[str]:
    head = f"{results.model} on {results.task}: "
    if "accuracy" in metrics:
        head += f"test accuracy {_pct(metrics['accuracy'])}, macro F1 {metrics['f1']:.3f}"
    else:
        head += f"test MSE {_f(metrics['mse'])}"
    lines = [head, f"diagnosis: {diag.status.value}, {diag.fit.value}"]
    lines += [
        f"stored {c.name} {c.stored:.4f} disagrees with the confusion matrix ({c.recomputed:.4f})"
        for c in checks
        if not c.agrees
    ]
    if diag.recommendations:
        lines.append(f"first recommendation: {diag.recommendations[0].action}")
    return lines


def _results_report(results: TrainingResults, meta, metrics, checks, test_targets, diag, images):
    test = results.test_results
    r = Report(title=f"Analysis: {results.model} on {results.task}")
    best_val = _f(results.best_val_loss)
    rows = [
        ["model", results.model],
        ["task", results.task],
        [
            "epochs run",
            f"{results.num_epochs}" + (" (early stop)" if results.stopped_early else ""),
        ],
        ["best epoch", f"{results.best_epoch} (val loss {best_val})"],
        ["parameters", f"{results.parameters:,}"],
        ["device", results.device],
        ["training time", f"{results.timings.train_seconds:.1f} s"],
    ]
    if "accuracy" in metrics:
        rows += [["test accuracy", _pct(metrics["accuracy"])], ["macro F1", f"{metrics['f1']:.4f}"]]
    else:
        rows += [["test MSE", _f(metrics["mse"])], ["test MAE", _f(metrics["mae"])]]
    r.add(Heading("Summary"), TableBlock(["", "value"], rows))

    r.add(Heading("Performance"))
    if isinstance(test, ClassificationResults):
        r.add(
            TableBlock(
                ["metric", "value (from the confusion matrix)", "stored in results"],
                [[c.name, f"{c.recomputed:.4f}", f"{c.stored:.4f}"] for c in checks],
            )
        )
        bad = [c for c in checks if not c.agrees]
        if bad:
            r.add(
                Para(
                    "[red] The stored test metrics disagree with the confusion matrix: "
                    + "; ".join(
                        f"{c.name} stored {c.stored:.4f}, matrix gives {c.recomputed:.4f}"
                        for c in bad
                    )
                    + ". This report uses the values computed from the matrix."
                )
            )
        else:
            r.add(Para("The stored test metrics agree with the confusion matrix (to 0.005)."))
        per = metrics_from_confusion(test.confusion_matrix, class_names=test.class_names)
        r.add(
            TableBlock(
                ["class", "precision", "recall", "F1", "support"],
                [
                    [n, f"{c.precision:.4f}", f"{c.recall:.4f}", f"{c.f1:.4f}", str(c.support)]
                    for n, c in per.per_class.items()
                ],
            )
        )
        if test.early_decision is not None:
            e = test.early_decision
            r.add(
                Para(
                    f"Early decision (confidence >= {e.threshold}): {e.early_stop_rate:.1%} of "
                    f"clips decided before their last frame, mean decision frame "
                    f"{e.mean_decision_frame:.2f} of {e.frames}, {e.compute_savings_pct:.1f}% of "
                    f"frames saved, accuracy at the decision {e.accuracy_at_decision:.2%} "
                    f"(vs {_pct(metrics['accuracy'])} on the full clip)."
                    + (
                        f" Latency {test.latency_ms_per_clip:.2f} ms per clip."
                        if test.latency_ms_per_clip
                        else ""
                    )
                )
            )
    else:
        r.add(
            TableBlock(["group", "MSE"], [[g, _f(v)] for g, v in test.per_group.items()]),
            Para(f"Worst group: {test.worst_group} (MSE {_f(test.per_group[test.worst_group])})."),
        )

    r.add(Heading("Performance vs targets"))
    if test_targets or diag.targets:
        rows = []
        for t in test_targets:
            value = metrics.get(t.metric)
            flag = t.flag(value)
            rows.append([t.metric, _f(value), _f(t.goal), f"[{flag.value}]", t.describe(value)])
        for c in diag.targets:
            rows.append([c.metric, _f(c.value), _f(c.goal), f"[{c.flag.value}]", c.text])
        r.add(TableBlock(["metric", "value", "target", "flag", "finding"], rows))
    else:
        r.add(Para("No targets given (tether analyze --target accuracy=0.85:0.95)."))

    r.add(Heading("Generalization"))
    if diag.gap_final is not None:
        trend = _f(diag.gap_trend) if diag.gap_trend is not None else "n/a"
        r.add(
            Para(
                f"Final gap val_loss - loss: {_f(diag.gap_final)}; trend over the last epochs "
                f"{trend} per epoch. Fit: {diag.fit.value}."
            )
        )
    else:
        r.add(Para("No train and validation loss to compare."))

    r.add(Heading("Convergence"))
    best = _f(diag.best_value)
    r.add(
        Para(
            f"{diag.monitor}: {diag.status.value}; best {best} at epoch {diag.best_epoch}, "
            f"final {_f(diag.final_value)}, {diag.epochs_since_best} epochs since best."
        )
    )
    r.add(Heading("Diagnosis and recommendations"))
    r.add(Bullets([f.text for f in diag.findings if f.code != "gap"] or ["nothing notable"]))
    if diag.milestones:
        r.add(Bullets([f"[{m.flag.value}] {m.text}" for m in diag.milestones]))
    if diag.groups:
        r.add(Bullets([g.text for g in diag.groups]))
    if diag.recommendations:
        r.add(Bullets([f"{x.action} (because {x.evidence})" for x in diag.recommendations], True))
    else:
        r.add(Para("No recommendation: nothing in the curves calls for a change."))

    r.add(Heading("Plots"), *images)
    r.add(Heading("Run"))
    r.add(
        TableBlock(
            ["", "value"],
            [[k, str(meta.get(k, "not recorded"))] for k in ("run", "spec", "branch", "commit")]
            + [["generated", time.strftime("%Y-%m-%d %H:%M:%S %Z")]],
        )
    )
    return r


# --------------------------------------------------------------------------- metric CSVs


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
    from .metrics_csv import format_summary, load_wandb_csvs, summarize

    table = load_wandb_csvs(paths=list(paths))
    summary = summarize(table=table, window=window)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / "csv_summary.json", summary.to_dict())

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

    monitor = _csv_monitor(table.columns)
    diag = None
    if monitor is not None:
        logged = [v for v in table.columns[monitor] if v is not None]
        if len(logged) >= 1:
            diag = diagnose({monitor: logged}, monitor=monitor, patience=max(5, len(logged) // 10))
            write_json_atomic(out_dir / "diagnosis.json", diag.to_dict())

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
        change = f"{st.pct_change:+.1f}%" if st.pct_change is not None else "n/a"
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
    if lr is not None:
        lines.append(f"learning rate ({lr.column}): {lr.kind}")
    if diag is not None:
        lines.append(f"{monitor}: {diag.status.value}")
    return Analysis(out_dir, paths_out, diag, {}, [], lines, commentary)
