"""Evaluation: classification and regression metrics, early-decision efficiency, latency.

Precision, recall and F1 are macro averages over the classes (each class counts the same),
computed from the confusion matrix, so anything holding the matrix can recompute them.
Rows of the confusion matrix are true classes, columns predicted classes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .errors import MLError
from .metrics import ClassificationMetrics, metrics_from_confusion
from .models.head import decide


def confusion_matrix(
    *, y_true: Sequence[int] | torch.Tensor, y_pred: Sequence[int] | torch.Tensor, num_classes: int
) -> list[list[int]]:
    t = torch.as_tensor(y_true, dtype=torch.long).flatten()
    p = torch.as_tensor(y_pred, dtype=torch.long).flatten()
    if t.shape != p.shape:
        raise MLError(f"y_true and y_pred differ in length ({t.numel()} vs {p.numel()})")
    m = torch.bincount(t * num_classes + p, minlength=num_classes**2)
    return m.view(num_classes, num_classes).tolist()


def classification_metrics(
    *, y_true: Sequence[int] | torch.Tensor, y_pred: Sequence[int] | torch.Tensor,
    class_names: Sequence[str],
) -> ClassificationMetrics:  # fmt: skip
    m = confusion_matrix(y_true=y_true, y_pred=y_pred, num_classes=len(class_names))
    return metrics_from_confusion(m, class_names=class_names)


@dataclass(frozen=True)
class RegressionMetrics:
    mse: float
    mae: float
    per_group: dict[str, float]  # group name -> MSE
    worst_group: str

    def to_dict(self) -> dict:
        return asdict(self)


def regression_metrics(
    *, y_true: torch.Tensor, y_pred: torch.Tensor, groups: torch.Tensor,
    group_names: Sequence[str],
) -> RegressionMetrics:  # fmt: skip
    """MSE/MAE over all samples and steps, and MSE per group (e.g. per frequency)."""
    if y_true.shape != y_pred.shape:
        raise MLError(f"y_true {tuple(y_true.shape)} and y_pred {tuple(y_pred.shape)} differ")
    err = (y_pred - y_true).float()
    per_sample = (err**2).flatten(1).mean(dim=1) if err.dim() > 1 else err**2
    per_group = {}
    for i, name in enumerate(group_names):
        mask = groups == i
        if mask.any():
            per_group[name] = float(per_sample[mask].mean())
    if not per_group:
        raise MLError("no samples in any group")
    return RegressionMetrics(
        mse=float((err**2).mean()),
        mae=float(err.abs().mean()),
        per_group=per_group,
        worst_group=max(per_group, key=per_group.__getitem__),
    )


@dataclass(frozen=True)
class EarlyDecisionMetrics:
    threshold: float
    frames: int
    early_stop_rate: float  # share of clips decided before their last frame
    mean_decision_frame: float  # 1-based: frame 1 is the first frame
    compute_savings_pct: float  # frames a streaming model would not process, in %
    accuracy_at_decision: float
    decision_frames: list[int]  # per clip, 1-based (for the histogram)

    def to_dict(self) -> dict:
        return asdict(self)


def early_decision_metrics(
    *, logits: torch.Tensor, labels: torch.Tensor, threshold: float
) -> EarlyDecisionMetrics:
    """Decide each clip with ``ml.models.decide`` (the first frame whose top softmax
    probability reaches ``threshold``, else the last); the models are causal, so a streaming
    deployment could stop reading frames there."""
    decision = decide(logits, threshold=threshold)
    frames = logits.shape[1]
    used = decision.frame + 1
    return EarlyDecisionMetrics(
        threshold=threshold,
        frames=frames,
        early_stop_rate=float((decision.frame < frames - 1).float().mean()),
        mean_decision_frame=float(used.float().mean()),
        compute_savings_pct=float(100 * (1 - used.float().mean() / frames)),
        accuracy_at_decision=float((decision.pred == labels.view(-1)).float().mean()),
        decision_frames=used.tolist(),
    )


@torch.no_grad()
def latency_ms_per_clip(
    model: nn.Module, *, sample: torch.Tensor, repeats: int = 10, warmup: int = 2
) -> float:
    """Median wall time of one forward pass on a batch of one (``sample`` has no batch dim)."""
    was_training = model.training
    model.eval()
    x = sample.unsqueeze(0)
    for _ in range(warmup):
        model(x)
    times = []
    for _ in range(repeats):
        if x.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        model(x)
        if x.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    model.train(was_training)
    return 1000 * sorted(times)[len(times) // 2]
