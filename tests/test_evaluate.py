"""Metrics against values worked out by hand."""

from __future__ import annotations

import pytest
import torch

from tether.ml.errors import MLError
from tether.ml.evaluate import (
    classification_metrics,
    confusion_matrix,
    early_decision_metrics,
    metrics_from_confusion,
    regression_metrics,
)


def test_binary_metrics_from_a_known_confusion_matrix():
    # rows = truth (transient, persistent), columns = predicted
    m = metrics_from_confusion([[40, 10], [5, 45]], class_names=["transient", "persistent"])
    assert m.accuracy == pytest.approx(0.85)
    t, p = m.per_class["transient"], m.per_class["persistent"]
    assert t.precision == pytest.approx(40 / 45) and t.recall == pytest.approx(40 / 50)
    assert p.precision == pytest.approx(45 / 55) and p.recall == pytest.approx(45 / 50)
    assert t.f1 == pytest.approx(2 * (40 / 45) * 0.8 / (40 / 45 + 0.8))
    assert m.precision == pytest.approx((40 / 45 + 45 / 55) / 2)
    assert m.f1 == pytest.approx((t.f1 + p.f1) / 2)
    assert (t.support, p.support) == (50, 50)


def test_confusion_from_labels_matches_counting():
    y_true = [0, 0, 1, 1, 1, 2]
    y_pred = [0, 1, 1, 1, 0, 2]
    assert confusion_matrix(y_true=y_true, y_pred=y_pred, num_classes=3) == [
        [1, 1, 0],
        [1, 2, 0],
        [0, 0, 1],
    ]
    m = classification_metrics(y_true=y_true, y_pred=y_pred, class_names=["a", "b", "c"])
    assert m.accuracy == pytest.approx(4 / 6)
    with pytest.raises(MLError, match="3x3"):
        metrics_from_confusion([[1, 2], [3, 4]], class_names=["a", "b", "c"])


def test_regression_mse_overall_and_per_group():
    y = torch.zeros(4, 3)
    pred = torch.tensor([[1.0, 1, 1], [2, 2, 2], [0, 0, 0], [3, 3, 3]])
    groups = torch.tensor([0, 0, 1, 1])
    m = regression_metrics(y_true=y, y_pred=pred, groups=groups, group_names=["1Hz", "3Hz"])
    assert m.mse == pytest.approx((1 + 4 + 0 + 9) / 4)
    assert m.per_group == {"1Hz": pytest.approx(2.5), "3Hz": pytest.approx(4.5)}
    assert m.worst_group == "3Hz"
    assert m.mae == pytest.approx((1 + 2 + 0 + 3) / 4)


def test_early_decision_first_confident_frame_or_the_last():
    confident = torch.tensor([0.0, 5.0])  # softmax ~ 0.993 for class 1
    unsure = torch.tensor([0.0, 0.1])
    logits = torch.stack(
        [
            torch.stack([unsure, confident, confident, confident]),  # decided at frame 2
            torch.stack([unsure, unsure, unsure, unsure]),  # never: last frame, class 1
            torch.stack([confident.flip(0)] * 4),  # frame 1, class 0
        ]
    )
    labels = torch.tensor([1, 0, 0])
    m = early_decision_metrics(logits=logits, labels=labels, threshold=0.9)
    assert m.decision_frames == [2, 4, 1]
    assert m.early_stop_rate == pytest.approx(2 / 3)
    assert m.mean_decision_frame == pytest.approx(7 / 3)
    assert m.compute_savings_pct == pytest.approx(100 * (1 - (7 / 3) / 4))
    assert m.accuracy_at_decision == pytest.approx(2 / 3)  # clip 2 decided 1, truth 0
