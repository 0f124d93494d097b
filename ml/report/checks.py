"""The checks a report makes before it says anything: stored test metrics against the
confusion matrix (the matrix wins), and which targets are on test metrics."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..diagnose import Target
from ..errors import MLError
from ..metrics import metrics_from_confusion
from ..results import ClassificationResults

TEST_METRICS = ("accuracy", "precision", "recall", "f1", "mse", "mae")
AGREE_TOLERANCE = 0.005  # half a point in the second decimal


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
