"""Every plot writes a real, non-blank PNG; bad input is a clear MLError; NaN does not crash."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.image as mpimg
import pytest

from ml import plots
from ml.errors import MLError

PNG = b"\x89PNG\r\n\x1a\n"


def _check_png(path: Path, *, min_px: int = 300) -> None:
    assert path.read_bytes()[:8] == PNG
    img = mpimg.imread(path)
    assert img.shape[0] >= min_px and img.shape[1] >= min_px
    assert float(img[..., :3].std()) > 0.02, f"{path.name} looks blank"
    assert sorted(p.name for p in path.parent.iterdir() if p.name.startswith(".")) == []


HIST = {
    "loss": [1.0, 0.7, 0.5, 0.4, 0.35],
    "accuracy": [0.5, 0.6, 0.7, 0.8, 0.85],
    "f1": [0.4, 0.6, 0.7, 0.78, 0.84],
}
VAL = {"loss": [1.1, 0.8, 0.6, 0.55, 0.6], "accuracy": [0.5, 0.6, 0.65, 0.7, 0.72]}


def test_training_curves_with_targets_best_epoch_and_a_new_folder(tmp_path):
    out = plots.training_curves(
        train=HIST, val=VAL, path=tmp_path / "new" / "curves.png", best_epoch=4,
        targets={"val_loss": 0.3, "accuracy": 0.9},
    )  # fmt: skip
    assert out == tmp_path / "new" / "curves.png"
    _check_png(out)


def test_training_curves_survive_a_diverged_run(tmp_path):
    nan = float("nan")
    train = {"loss": [1.0, 0.8, 3.0, nan, nan, None]}
    val = {"loss": [1.1, 0.9, 4.0, math.inf, None, None]}
    _check_png(plots.training_curves(train=train, val=val, path=tmp_path / "nan.png"))


def test_the_other_plots(tmp_path):
    _check_png(
        plots.metrics_summary(
            metrics={"accuracy": 0.9, "f1": 0.88},
            targets={"accuracy": 0.95},
            path=tmp_path / "m.png",
        )
    )
    _check_png(
        plots.confusion_matrix_plot(
            matrix=[[40, 10], [5, 45]],
            class_names=["transient", "persistent"],
            path=tmp_path / "cm.png",
        )
    )
    t = 6
    attn = [[1.0 / (i + 1) if j <= i else 0.0 for j in range(t)] for i in range(t)]
    _check_png(plots.attention_heatmap(attention=attn, path=tmp_path / "a.png"))
    _check_png(
        plots.early_decision_plot(
            decision_frames=[1, 1, 2, 5, 16, 3, 1],
            frames=16,
            path=tmp_path / "e.png",
            threshold=0.9,
            compute_savings_pct=75.0,
        )
    )
    steps = list(range(50))
    cols = {
        "train/loss": [1.0 / (s + 1) for s in steps],
        "val/acc": [s / 50 if s % 5 else None for s in steps],
        "lr": [0.1 * (1 + math.cos(math.pi * s / 50)) / 2 for s in steps],
    }
    _check_png(plots.csv_overview(steps=steps, columns=cols, path=tmp_path / "o.png"))
    _check_png(plots.csv_trends(steps=steps, columns=cols, path=tmp_path / "t.png"))
    _check_png(plots.correlation_heatmap(columns=cols, path=tmp_path / "c.png"))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda p: plots.training_curves(train={"loss": []}, val=None, path=p), "empty"),
        (lambda p: plots.training_curves(train={"loss": [1, "x"]}, val=None, path=p), "not a number"),
        (lambda p: plots.metrics_summary(metrics={}, path=p), "empty"),
        (lambda p: plots.confusion_matrix_plot(matrix=[[1, 2], [3]], class_names=["a", "b"], path=p),
         "square"),
        (lambda p: plots.correlation_heatmap(columns={"a": [1, 2, 3]}, path=p), "2"),
        (lambda p: plots.metrics_summary(metrics={"a": 1.0}, path=p.with_suffix(".jpg")), ".png"),
    ],
)  # fmt: skip
def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, call, message):
    target = tmp_path / "x.png"
    with pytest.raises(MLError, match=message):
        call(target)
    assert list(tmp_path.iterdir()) == []
