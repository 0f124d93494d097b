"""Classification metrics from a confusion matrix, in pure Python (no torch).

Precision, recall and F1 are macro averages over the classes (each class counts the same).
Rows of the matrix are true classes, columns predicted classes. The laptop-side analysis
uses this module to recompute a report's numbers from the matrix it holds.

``lower_is_better`` is the one rule, for every module, of which way a metric improves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from .errors import MLError

# A metric whose name contains one of these gets better as it falls (loss, val_mse,
# latency_ms, epoch_seconds, perplexity ...); any other metric gets better as it rises.
LOWER_IS_BETTER_WORDS = (
    "loss",
    "mse",
    "mae",
    "rmse",
    "error",
    "perplexity",
    "nll",
    "latency",
    "_ms",
    "seconds",
    "time",
)


def lower_is_better(metric: str) -> bool:
    """Whether a lower value of ``metric`` is better (``LOWER_IS_BETTER_WORDS``, any case)."""
    name = metric.lower()
    return any(word in name for word in LOWER_IS_BETTER_WORDS)


@dataclass(frozen=True)
class ClassMetrics:
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class ClassificationMetrics:
    accuracy: float
    precision: float  # macro
    recall: float  # macro
    f1: float  # macro
    confusion_matrix: list[list[int]]
    class_names: list[str]
    per_class: dict[str, ClassMetrics]

    def to_dict(self) -> dict:
        return asdict(self)


def _safe_div(a: float, b: float) -> float:
    return a / b if b else 0.0


def metrics_from_confusion(
    matrix: Sequence[Sequence[int]], *, class_names: Sequence[str]
) -> ClassificationMetrics:
    """Accuracy and macro precision/recall/F1 from a confusion matrix (rows = truth)."""
    k = len(class_names)
    if len(matrix) != k or any(len(row) != k for row in matrix):
        raise MLError(f"confusion matrix must be {k}x{k} for classes {list(class_names)}")
    if any(v < 0 for row in matrix for v in row):
        raise MLError("confusion matrix counts must be >= 0")
    total = sum(sum(row) for row in matrix)
    per_class = {}
    for i, name in enumerate(class_names):
        tp = matrix[i][i]
        predicted = sum(matrix[r][i] for r in range(k))
        actual = sum(matrix[i])
        p, r = _safe_div(tp, predicted), _safe_div(tp, actual)
        per_class[name] = ClassMetrics(
            precision=p, recall=r, f1=_safe_div(2 * p * r, p + r), support=actual
        )
    return ClassificationMetrics(
        accuracy=_safe_div(sum(matrix[i][i] for i in range(k)), total),
        precision=sum(c.precision for c in per_class.values()) / k,
        recall=sum(c.recall for c in per_class.values()) / k,
        f1=sum(c.f1 for c in per_class.values()) / k,
        confusion_matrix=[[int(v) for v in row] for row in matrix],
        class_names=list(class_names),
        per_class=per_class,
    )
