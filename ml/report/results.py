"""``analyze_results``: plots, diagnosis and the three report files for one
``training_results.json`` (the sections: ``sections``; the LLM commentary on request)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import plots
from ..atomic import write_json_atomic
from ..diagnose import Diagnosis, Milestone, Target, diagnose, history_from_results
from ..metrics import metrics_from_confusion
from ..numfmt import fraction_pct as _pct
from ..numfmt import sig_grouped as _f
from ..results import ClassificationResults, TrainingResults, read_training_results
from .checks import MetricCheck, check_classification, read_run_meta, split_targets
from .document import Heading, Image, Para, Report, write_report
from .sections import results_report


@dataclass
class Analysis:
    out_dir: Path
    paths: dict[str, Path]
    diagnosis: Diagnosis | None
    metrics: dict[str, float]
    checks: list[MetricCheck]
    summary: list[str]
    llm: object | None = None


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
    metrics, checks, groups = _test_metrics(results)
    diag = diagnose(
        history,
        targets=hist_targets,
        milestones=milestones,
        groups=groups,
        patience=results.model_config_.get("patience", 5),
        min_delta=results.model_config_.get("min_delta", 1e-4),
    )
    write_json_atomic(out_dir / "diagnosis.json", diag.to_dict())
    images = _plots(results, out_dir, metrics, targets=targets, test_targets=test_targets)

    report = results_report(results, meta, metrics, checks, test_targets, diag, images)
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


def _test_metrics(
    results: TrainingResults,
) -> tuple[dict[str, float], list[MetricCheck], dict[str, dict[str, float]]]:
    """(test metrics, their checks, per-group metrics for the diagnosis)."""
    test = results.test_results
    if isinstance(test, ClassificationResults):
        metrics, checks = check_classification(test)
        per = metrics_from_confusion(test.confusion_matrix, class_names=test.class_names)
        groups = {
            "recall": {n: c.recall for n, c in per.per_class.items()},
            "f1": {n: c.f1 for n, c in per.per_class.items()},
        }
        return metrics, checks, groups
    return {"mse": test.mse, "mae": test.mae}, [], {"mse": dict(test.per_group)}


def _plots(
    results: TrainingResults,
    out_dir: Path,
    metrics: dict[str, float],
    *,
    targets: Sequence[Target],
    test_targets: Sequence[Target],
) -> list[Image]:
    test = results.test_results
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
    return images


def _commentary(report: Report, out_dir: Path, model: str | None, **inputs):
    """Ask for LLM commentary (never raises) and say in the report what came of it."""
    from ..llm import generate_commentary

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
