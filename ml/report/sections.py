"""The sections of the report on one training run, each a function adding its blocks."""

from __future__ import annotations

import time

from ..diagnose import Diagnosis, Target
from ..metrics import metrics_from_confusion
from ..numfmt import fraction_pct as _pct
from ..numfmt import sig_grouped as _f
from ..results import ClassificationResults, RegressionResults, TrainingResults
from .checks import MetricCheck
from .document import Bullets, Heading, Image, Para, Report, TableBlock


def results_report(
    results: TrainingResults,
    meta: dict,
    metrics: dict[str, float],
    checks: list[MetricCheck],
    test_targets: list[Target],
    diag: Diagnosis,
    images: list[Image],
) -> Report:
    """The report on one run: summary, performance, targets, curves, plots, the run."""
    r = Report(title=f"Analysis: {results.model} on {results.task}")
    _summary(r, results, metrics)
    r.add(Heading("Performance"))
    test = results.test_results
    if isinstance(test, ClassificationResults):
        _classification(r, test, metrics, checks)
    else:
        _regression(r, test)
    _targets(r, metrics, test_targets, diag)
    _curves(r, diag)
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


def _summary(r: Report, results: TrainingResults, metrics: dict[str, float]) -> None:
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


def _classification(
    r: Report, test: ClassificationResults, metrics: dict[str, float], checks: list[MetricCheck]
) -> None:
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
                    f"{c.name} stored {c.stored:.4f}, matrix gives {c.recomputed:.4f}" for c in bad
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


def _regression(r: Report, test: RegressionResults) -> None:
    r.add(
        TableBlock(["group", "MSE"], [[g, _f(v)] for g, v in test.per_group.items()]),
        Para(f"Worst group: {test.worst_group} (MSE {_f(test.per_group[test.worst_group])})."),
    )


def _targets(
    r: Report, metrics: dict[str, float], test_targets: list[Target], diag: Diagnosis
) -> None:
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


def _curves(r: Report, diag: Diagnosis) -> None:
    """Generalization, convergence, the diagnosis and its recommendations."""
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
