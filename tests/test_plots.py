"""ml.plots: every plot writes a real, non-blank PNG of the documented size, atomically;
diverged (NaN) runs are drawn and marked instead of crashing; bad inputs raise MLError."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import matplotlib as mpl
import matplotlib.image
import numpy as np
import pytest

from tether.ml import plots
from tether.ml.errors import MLError

REPO_ROOT = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RED = (214, 39, 40)  # tab:red, the colour of non-finite markers
GREEN = (44, 160, 44)  # tab:green, the best-epoch line

TRAIN = {
    "loss": [1.0, 0.7, 0.5, 0.4, 0.35, 0.3, 0.28, 0.27],
    "accuracy": [0.5, 0.6, 0.7, 0.75, 0.8, 0.82, 0.84, 0.85],
    "f1": [0.45, 0.58, 0.68, 0.74, 0.79, 0.81, 0.83, 0.84],
    "lr": [1e-3] * 8,
}
VAL = {
    "loss": [1.1, 0.8, 0.6, 0.5, 0.48, 0.5, 0.55, 0.6],
    "accuracy": [0.5, 0.58, 0.66, 0.7, 0.72, 0.71, 0.7, 0.69],
    "f1": [0.44, 0.55, 0.64, 0.69, 0.71, 0.7, 0.69, 0.68],
}
STEPS = [float(s) for s in range(0, 200, 10)]


def _columns(k: int) -> dict[str, list[float | None]]:
    rng = np.random.default_rng(k)
    return {
        f"metric_{i}": [math.exp(-s / 80) * (i + 1) + float(rng.normal(0, 0.05)) for s in STEPS]
        for i in range(k)
    }


def _diverged(history: dict[str, list], from_epoch: int) -> dict[str, list]:
    """The history with every value from ``from_epoch`` (1-based) on non-finite (None)."""
    return {
        k: [v if i < from_epoch - 1 else None for i, v in enumerate(vs)]
        for k, vs in history.items()
    }


def read_png(path: Path, min_bytes: int = 10_000) -> np.ndarray:
    """The image as (H, W, 4) floats, after checking it is a real, non-blank PNG."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert len(data) > min_bytes, f"{path} is only {len(data)} bytes"
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[2] in (3, 4)
    assert float(img[..., :3].std()) > 0.02, f"{path} looks blank"
    return img


def expected_shape(figsize: tuple[float, float]) -> tuple[int, int]:
    return round(figsize[1] * plots.DPI), round(figsize[0] * plots.DPI)


def count_color(img: np.ndarray, rgb: tuple[int, int, int], tol: int = 12) -> int:
    px = (img[..., :3] * 255).round().astype(int)
    return int((np.abs(px - np.array(rgb)) <= tol).all(axis=-1).sum())


# One valid call per plot function: (function, kwargs, figsize it must render at).
CASES = {
    "training_curves": (
        plots.training_curves,
        {"train": TRAIN, "val": VAL, "best_epoch": 5, "targets": {"val_accuracy": 0.8}},
        plots.FIGSIZE,
    ),
    "metrics_summary": (
        plots.metrics_summary,
        {"metrics": {"accuracy": 0.91, "f1": 0.88, "loss": 0.36}, "targets": {"accuracy": 0.95}},
        plots.FIGSIZE,
    ),
    "confusion_matrix_plot": (
        plots.confusion_matrix_plot,
        {"matrix": [[180, 20], [35, 165]], "class_names": ["transient", "persistent"]},
        plots.CONFUSION_FIGSIZE,
    ),
    "attention_heatmap": (
        plots.attention_heatmap,
        {"attention": np.tril(np.full((6, 6), 1.0) / np.arange(1, 7)[:, None]).tolist()},
        plots.CONFUSION_FIGSIZE,
    ),
    "early_decision_plot": (
        plots.early_decision_plot,
        {"decision_frames": [3, 4, 4, 5, 8, 16, 2, 6], "frames": 16, "threshold": 0.9},
        plots.FIGSIZE,
    ),
    "csv_overview": (
        plots.csv_overview,
        {"steps": STEPS, "columns": _columns(14)},
        plots.CSV_FIGSIZE,
    ),
    "csv_trends": (
        plots.csv_trends,
        {
            "steps": STEPS,
            "columns": {**_columns(3), "nan": [1.0] * 10 + [math.nan] * 10},
            "window": 4,
        },
        plots.CSV_FIGSIZE,
    ),
    "correlation_heatmap": (
        plots.correlation_heatmap,
        {"columns": _columns(4)},
        plots.CORRELATION_FIGSIZE,
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_plot_writes_a_non_blank_png_of_the_documented_size(name: str, tmp_path: Path) -> None:
    fn, kwargs, figsize = CASES[name]
    target = tmp_path / "new" / "nested" / f"{name}.png"  # folders do not exist yet
    written = fn(path=target, **kwargs)
    assert written == target
    img = read_png(target)
    assert img.shape[:2] == expected_shape(figsize)
    # Atomic write: only the target is left in the folder, no temp file beside it.
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]


def test_documented_sizes_in_pixels() -> None:
    assert expected_shape(plots.FIGSIZE) == (660, 1100)  # 10 x 6 in at 110 dpi
    assert expected_shape(plots.CSV_FIGSIZE) == (880, 1430)


@pytest.fixture(scope="module")
def plain_curves(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """Training curves with no best epoch and no non-finite values, for comparisons."""
    path = tmp_path_factory.mktemp("plain") / "curves.png"
    return read_png(plots.training_curves(train=TRAIN, val=VAL, path=path))


def test_overwrites_an_existing_file_and_keeps_global_rcparams(tmp_path: Path) -> None:
    target = tmp_path / "m.png"
    target.write_bytes(b"old")
    before = dict(mpl.rcParams)
    plots.metrics_summary(metrics={"accuracy": 0.9}, path=target)
    assert dict(mpl.rcParams) == before
    read_png(target)
    assert [p.name for p in tmp_path.iterdir()] == ["m.png"]


def test_diverged_run_is_drawn_and_marked_in_red(tmp_path: Path, plain_curves) -> None:
    ok = plain_curves
    nan = read_png(
        plots.training_curves(
            train=_diverged(TRAIN, 5), val=_diverged(VAL, 5), path=tmp_path / "nan.png"
        )
    )
    assert count_color(ok, RED) < 50
    # Vertical red lines in the four panels (loss, accuracy, F1, gap), ~200 px tall each.
    assert count_color(nan, RED) > 500


def test_nan_inf_floats_and_all_none_series_still_plot(tmp_path: Path) -> None:
    train = {"loss": [1.0, 0.5, float("inf"), float("nan"), float("nan")]}
    val = {"loss": [None] * 5}
    path = tmp_path / "c.png"
    img = read_png(plots.training_curves(train=train, val=val, path=path, best_epoch=2))
    assert count_color(img, RED) > 150  # the inf/NaN epochs are marked, not silently dropped


def test_best_epoch_line_is_drawn(tmp_path: Path, plain_curves) -> None:
    without = plain_curves
    with_best = read_png(
        plots.training_curves(train=TRAIN, val=VAL, path=tmp_path / "b.png", best_epoch=5)
    )
    assert count_color(with_best, GREEN) > count_color(without, GREEN) + 300


def test_csv_none_is_missing_but_nan_is_marked(tmp_path: Path) -> None:
    cols = _columns(3)
    sparse = {k: [v if i % 3 == 0 else None for i, v in enumerate(vs)] for k, vs in cols.items()}
    diverged = {
        **cols,
        "metric_1": [v if i < 12 else float("nan") for i, v in enumerate(cols["metric_1"])],
    }
    a = read_png(plots.csv_overview(steps=STEPS, columns=sparse, path=tmp_path / "a.png"))
    b = read_png(plots.csv_overview(steps=STEPS, columns=diverged, path=tmp_path / "b.png"))
    assert count_color(a, RED) < 50
    assert count_color(b, RED) > 150


def test_correlation_handles_constant_and_sparse_columns(tmp_path: Path) -> None:
    cols = {
        "a": [float(i) for i in range(10)],
        "b": [float(-i) for i in range(10)],
        "const": [1.0] * 10,
        "sparse": [1.0, None, None, None, None, None, None, None, None, 2.0],
    }
    names, r, shared = plots.correlation_matrix(columns=cols)
    assert names == ["a", "b", "const", "sparse"]
    assert r[0, 1] == pytest.approx(-1.0) and r[0, 0] == pytest.approx(1.0)
    # const has no variance, sparse only 2 finite rows: every pair with them is undefined
    assert np.isnan(r[2]).all() and np.isnan(r[:, 3]).all()
    assert shared[0, 3] == 2 and shared[0, 2] == 10
    fig = plots.correlation_figure(columns=cols)
    ax = fig.axes[0]
    cells = {(round(t.get_position()[1] - 0.5), round(t.get_position()[0] - 0.5)): t.get_text()
             for t in ax.texts}  # fmt: skip
    # Every cell is written exactly once: r where it is defined, "n/a" where it is not.
    assert len(ax.texts) == 16 and len(cells) == 16
    assert cells[(0, 1)] == cells[(1, 0)] == "-1.00" and cells[(0, 0)] == "+1.00"
    na = {(i, j) for i in range(4) for j in range(4) if i in (2, 3) or j in (2, 3)}
    assert {c for c, text in cells.items() if text == "n/a"} == na
    assert "fewest shared: 2" in ax.get_title()
    # The same figure, saved: a real PNG.
    read_png(plots.correlation_heatmap(columns=cols, path=tmp_path / "c.png"))


ERRORS = [
    # (function, kwargs, message fragment)
    (plots.training_curves, {"train": {}, "val": None}, "history is empty"),
    (plots.training_curves, {"train": {"loss": []}, "val": None}, "history is empty"),
    (
        plots.training_curves,
        {"train": {"loss": [1, 2, 3]}, "val": {"loss": [1, 2]}},
        "mismatched lengths: val history['loss'] has 2 values",
    ),
    (
        plots.training_curves,
        {"train": {"loss": [1, 2], "accuracy": [0.5]}, "val": None},
        "mismatched lengths",
    ),
    (plots.training_curves, {"train": {"loss": [1, "x"]}, "val": None}, "'x', not a number"),
    (
        plots.training_curves,
        {"train": {"loss": [1, 2]}, "val": None, "best_epoch": 3},
        "best_epoch must be a 1-based epoch in 1..2",
    ),
    (plots.training_curves, {"train": {"lr": [0.1]}, "val": None}, "none of the plotted metrics"),
    (
        plots.training_curves,
        {"train": {"loss": [1]}, "val": None, "targets": {"loss": float("nan")}},
        "targets['loss'] must be a finite number",
    ),
    (plots.metrics_summary, {"metrics": {}}, "metrics is empty"),
    (
        plots.metrics_summary,
        {"metrics": {"acc": 0.9}, "targets": {"f1": 0.8}},
        "targets['f1'] names no metric",
    ),
    (
        plots.confusion_matrix_plot,
        {"matrix": [], "class_names": ["a"]},
        "confusion matrix is empty",
    ),
    (
        plots.confusion_matrix_plot,
        {"matrix": [[1, 2], [3, 4]], "class_names": ["a"]},
        "2 rows but 1 class names",
    ),
    (
        plots.confusion_matrix_plot,
        {"matrix": [[1, 2], [3]], "class_names": ["a", "b"]},
        "row 1 has 1 entries, expected 2",
    ),
    (
        plots.confusion_matrix_plot,
        {"matrix": [[1, -2], [3, 4]], "class_names": ["a", "b"]},
        "counts must be integers >= 0",
    ),
    (plots.attention_heatmap, {"attention": []}, "attention matrix is empty"),
    (plots.attention_heatmap, {"attention": [[1.0, 0.0], [0.5]]}, "must be square"),
    (plots.early_decision_plot, {"decision_frames": [], "frames": 8}, "decision_frames is empty"),
    (
        plots.early_decision_plot,
        {"decision_frames": [1, 9], "frames": 8},
        "decision_frames[1] is 9",
    ),
    (
        plots.early_decision_plot,
        {"decision_frames": [1], "frames": 0},
        "frames must be a positive integer",
    ),
    (plots.csv_overview, {"steps": [], "columns": {"a": []}}, "steps is empty"),
    (plots.csv_overview, {"steps": [1, 2], "columns": {}}, "columns is empty"),
    (
        plots.csv_overview,
        {"steps": [1, 2, 3], "columns": {"a": [1.0, 2.0]}},
        "mismatched lengths: columns['a'] has 2 values but steps has 3",
    ),
    (
        plots.csv_trends,
        {"steps": [1, 2], "columns": {"a": [1.0, 2.0]}, "window": 0},
        "window must be a positive integer",
    ),
    (
        plots.correlation_heatmap,
        {"columns": {"a": [1.0, 2.0, 3.0]}},
        "at least 2 metric columns, got 1",
    ),
    (plots.correlation_heatmap, {"columns": {"a": [1.0, 2.0], "b": [1.0]}}, "mismatched lengths"),
]


@pytest.mark.parametrize(
    ("fn", "kwargs", "message"), ERRORS, ids=lambda v: getattr(v, "__name__", None)
)
def test_bad_inputs_raise_mlerror_naming_the_problem(
    fn, kwargs, message: str, tmp_path: Path
) -> None:
    with pytest.raises(MLError) as info:
        fn(path=tmp_path / "x.png", **kwargs)
    assert message in str(info.value)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_path_must_be_png(tmp_path: Path) -> None:
    with pytest.raises(MLError, match=r"must end in \.png"):
        plots.metrics_summary(metrics={"a": 1.0}, path=tmp_path / "x.pdf")


def test_importing_plots_does_not_import_torch_or_cluster_libraries() -> None:
    code = (
        "import tether.ml.plots, sys; "
        "bad = [m for m in ('torch', 'ray', 'fabric', 'textual') if m in sys.modules]; "
        "assert not bad, bad"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
