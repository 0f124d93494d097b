"""W&B CSV import: both layouts, merging, statistics and lr schedules against hand-worked numbers.

The files under tests/data/wandb/ are small hand-checked exports; the numbers asserted below are
the ones written in them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tether.ml.errors import MLError
from tether.ml.metrics_csv import (
    MetricsCSVError,
    MetricsTable,
    classify_lr_schedule,
    format_summary,
    load_wandb_csvs,
    lr_columns,
    metric_stats,
    read_wandb_csv,
    split_chart_column,
    summarize,
)

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data" / "wandb"
BASE = "baseline - lr 3e-4"  # a run name that contains the ' - ' separator itself


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- chart layout


def test_chart_export_parses_runs_metrics_values_and_bands():
    t = read_wandb_csv(path=DATA / "chart_export.csv")
    assert t.layout == {str(DATA / "chart_export.csv"): "chart"}
    assert t.steps == [float(s) for s in range(0, 101, 10)]
    # two runs in the inputs -> <run>/<metric>; __MIN/__MAX are bands, not metrics
    assert list(t.columns) == [
        f"{BASE}/train/loss",
        "wide-mlp/train/loss",
        f"{BASE}/val/accuracy",
        "wide-mlp/val/accuracy",
    ]
    assert t.runs[f"{BASE}/train/loss"] == BASE
    assert t.runs["wide-mlp/val/accuracy"] == "wide-mlp"
    loss = t.columns[f"{BASE}/train/loss"]
    assert loss[0] == 2.3026 and loss[2] == 1.523 and loss[10] == 0.6702
    lo, hi = t.bands[f"{BASE}/train/loss"]
    assert (lo[2], hi[2]) == (1.4468, 1.6144)
    # an empty cell is missing, in the metric and in its band
    wide = t.columns["wide-mlp/train/loss"]
    assert wide[5] is None and wide[4] == 0.912
    assert t.bands["wide-mlp/train/loss"][0][5] is None
    # val/accuracy is logged every 20 steps only
    acc = t.columns["wide-mlp/val/accuracy"]
    assert acc[:2] == [None, None] and acc[6] == 0.6618 and acc[10] == 0.7204
    assert t.bands["wide-mlp/val/accuracy"][0][6] == 0.6518
    assert t.bands["wide-mlp/val/accuracy"][1][6] is None  # empty __MAX cell
    assert set(t.sources.values()) == {str(DATA / "chart_export.csv")}
    assert t.duplicate_steps == {str(DATA / "chart_export.csv"): 0}


def test_chart_column_split_on_the_last_separator():
    assert split_chart_column(name="baseline - lr 3e-4 - train/loss") == (
        "baseline - lr 3e-4",
        "train/loss",
        None,
    )
    assert split_chart_column(name="run-7 - val/top 1 acc__MIN") == (
        "run-7",
        "val/top 1 acc",
        "min",
    )
    assert split_chart_column(name="run-7 - loss__MAX") == ("run-7", "loss", "max")
    assert split_chart_column(name="loss") == (None, "loss", None)


def test_single_run_chart_uses_bare_metric_names_with_awkward_names(tmp_path):
    path = write(
        tmp_path,
        "one.csv",
        "Step,exp - bs 64 - seed 1 - val/top 1 acc,exp - bs 64 - seed 1 - val/top 1 acc__MIN,"
        "exp - bs 64 - seed 1 - val/top 1 acc__MAX\n"
        "0,0.25,0.2,0.3\n"
        "5,0.5,,0.55\n",
    )
    t = read_wandb_csv(path=path)
    assert list(t.columns) == ["val/top 1 acc"]
    assert t.runs == {"val/top 1 acc": "exp - bs 64 - seed 1"}
    assert t.columns["val/top 1 acc"] == [0.25, 0.5]
    assert t.bands["val/top 1 acc"] == ([0.2, None], [0.3, 0.55])


def test_chart_wandb_keys_are_not_metrics(tmp_path):
    path = write(tmp_path, "c.csv", "Step,r1 - _step,r1 - _step__MIN,r1 - loss\n0,0,0,1.0\n")
    assert read_wandb_csv(path=path).columns == {"loss": [1.0]}


def test_runs_counted_across_all_inputs(tmp_path):
    a = write(tmp_path, "a.csv", "Step,r1 - loss\n0,1.0\n1,0.5\n")
    b = write(tmp_path, "b.csv", "Step,r2 - loss\n1,2.0\n2,1.5\n")
    assert list(read_wandb_csv(path=a).columns) == ["loss"]
    t = load_wandb_csvs(paths=[a, b])
    assert list(t.columns) == ["r1/loss", "r2/loss"]  # two runs in all inputs: no clash, no rename
    assert t.columns["r1/loss"] == [1.0, 0.5, None]
    assert t.columns["r2/loss"] == [None, 2.0, 1.5]
    assert t.notes == []


# --------------------------------------------------------------------------- history layout


def test_history_export_parses_metrics_and_keeps_wandb_columns_out():
    path = DATA / "history_export.csv"
    t = read_wandb_csv(path=path)
    assert t.layout == {str(path): "history"}
    assert list(t.columns) == ["epoch", "train/loss", "val/loss", "val/accuracy", "lr"]
    assert t.steps == [float(s) for s in range(200)]
    assert t.bands == {} and t.runs == {}
    assert t.columns["train/loss"][0] == 2.3169
    assert t.columns["lr"][0] == 0.003 and t.columns["lr"][199] == 1.01844e-05
    assert t.columns["val/loss"][0] is None
    assert (t.columns["val/loss"][19], t.columns["val/accuracy"][19]) == (1.6936, 0.5717)
    assert t.columns["epoch"][20] == 1.0
    # _runtime is elapsed seconds per step; _timestamp is dropped
    assert t.elapsed[str(path)][0] == 3.332 and t.elapsed[str(path)][199] == 171.718


def test_nan_is_kept_apart_from_missing(tmp_path):
    path = write(
        tmp_path,
        "h.csv",
        "_step,loss\n0,1.0\n1,\n2,NaN\n3,nan\n4,inf\n5,-Infinity\n6,0.5\n",
    )
    t = read_wandb_csv(path=path)
    loss = t.columns["loss"]
    assert loss[0] == 1.0 and loss[1] is None and loss[6] == 0.5
    assert math.isnan(loss[2]) and math.isnan(loss[3])
    assert loss[4] == math.inf and loss[5] == -math.inf
    s = summarize(table=t).stats["loss"]
    assert (s.count, s.missing, s.non_finite, s.first_non_finite_step) == (2, 1, 4, 2.0)
    assert s.mean == pytest.approx(0.75)
    as_json = t.to_dict()["columns"]["loss"]
    assert as_json == [1.0, None, "nan", "nan", "inf", "-inf", 0.5]
    json.dumps(t.to_dict(), allow_nan=False)


def test_duplicate_steps_keep_the_last_value_and_are_counted(tmp_path):
    path = write(
        tmp_path,
        "dup.csv",
        "_step,loss,acc\n0,1.0,0.1\n1,0.9,\n1,0.8,\n1,,0.3\n2,0.7,0.4\n",
    )
    t = read_wandb_csv(path=path)
    assert t.steps == [0.0, 1.0, 2.0]
    assert t.columns["loss"] == [1.0, 0.8, 0.7]  # the empty cell in the last row erases nothing
    assert t.columns["acc"] == [0.1, 0.3, 0.4]
    assert t.duplicate_steps == {str(path): 2}
    assert any("2 row(s) repeat an earlier step" in n for n in t.notes)


# --------------------------------------------------------------------------- merging


def test_merge_two_files_on_the_union_of_steps(tmp_path):
    a = write(tmp_path, "a.csv", "_step,_runtime,train/loss\n0,1.5,2.0\n2,3.0,1.0\n4,4.5,0.5\n")
    b = write(tmp_path, "b.csv", "_step,val/loss\n1,2.5\n2,1.5\n3,1.25\n")
    t = load_wandb_csvs(paths=[a, b])
    assert t.steps == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert t.columns["train/loss"] == [2.0, None, 1.0, None, 0.5]
    assert t.columns["val/loss"] == [None, 2.5, 1.5, 1.25, None]
    assert t.sources == {"train/loss": str(a), "val/loss": str(b)}
    assert t.layout == {str(a): "history", str(b): "history"}
    assert t.elapsed == {str(a): [1.5, None, 3.0, None, 4.5]}


def test_name_clash_between_files_renames_every_one_and_says_so(tmp_path):
    a = write(tmp_path, "run_a.csv", "_step,loss,lr\n0,2.0,0.1\n1,1.0,0.1\n")
    b = write(tmp_path, "run_b.csv", "_step,loss\n0,3.0\n1,1.5\n")
    t = load_wandb_csvs(paths=[a, b])
    assert list(t.columns) == ["loss@run_a", "lr", "loss@run_b"]
    assert t.columns["loss@run_a"] == [2.0, 1.0] and t.columns["loss@run_b"] == [3.0, 1.5]
    assert t.sources["loss@run_b"] == str(b)
    assert len(t.notes) == 1 and "'loss' is in 2 files" in t.notes[0]
    assert "'loss@run_a'" in t.notes[0] and "'loss@run_b'" in t.notes[0]


def test_same_stem_in_two_folders_still_gets_unique_names(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    a = write(tmp_path, "x/h.csv", "_step,loss\n0,1.0\n")
    b = write(tmp_path, "y/h.csv", "_step,loss\n0,2.0\n")
    t = load_wandb_csvs(paths=[a, b])
    assert t.columns == {"loss@h": [1.0], "loss@h#2": [2.0]}


def test_merge_two_real_exports_keeps_both_lr_columns():
    t = load_wandb_csvs(paths=[DATA / "history_export.csv", DATA / "history_step_lr.csv"])
    assert "lr@history_export" in t.columns and "lr@history_step_lr" in t.columns
    assert len(t.steps) == 200
    assert t.columns["lr@history_step_lr"][119] == 0.001
    assert t.columns["lr@history_step_lr"][120] is None  # that file stops at step 119
    lr = summarize(table=t).lr_schedule
    assert lr is not None and lr.column == "lr@history_export" and lr.kind == "cosine"
    assert lr.details["other_lr_columns"] == ["lr@history_step_lr"]


def test_the_same_file_twice_is_refused():
    with pytest.raises(MetricsCSVError, match="given twice"):
        load_wandb_csvs(paths=[DATA / "chart_export.csv", DATA / "chart_export.csv"])


# --------------------------------------------------------------------------- statistics


def test_stats_against_hand_computed_numbers():
    # mean 5, population std 2: the textbook example
    s = metric_stats(steps=list(range(8)), values=[2, 4, 4, 4, 5, 5, 7, 9])
    assert (s.count, s.missing, s.non_finite) == (8, 0, 0)
    assert s.mean == pytest.approx(5.0) and s.std == pytest.approx(2.0)
    assert s.cv == pytest.approx(0.4)
    assert (s.min, s.max) == (2.0, 9.0)
    assert s.window == 1  # max(1, 10% of 8)
    assert (s.first, s.last) == (2.0, 9.0)
    assert s.pct_change == pytest.approx(350.0)
    w2 = metric_stats(steps=list(range(8)), values=[2, 4, 4, 4, 5, 5, 7, 9], window=2)
    assert (w2.first, w2.last) == (3.0, 8.0)
    assert w2.pct_change == pytest.approx(500 / 3)


def test_default_window_is_ten_percent_of_the_finite_count():
    values = [float(i) for i in range(40)]
    s = metric_stats(steps=list(range(40)), values=values)
    assert s.window == 4
    assert s.first == pytest.approx(1.5) and s.last == pytest.approx(
        37.5
    )  # mean(0..3), mean(36..39)
    assert s.pct_change == pytest.approx(2400.0)


def test_slope_of_a_perfectly_linear_series():
    steps = [float(s) for s in range(0, 100, 10)]
    s = metric_stats(steps=steps, values=[3.0 - 0.05 * x for x in steps])
    assert s.trend_slope == pytest.approx(-0.05)
    assert s.relative_trend == pytest.approx(-1.0)
    assert s.direction == "decreasing"
    assert s.pct_change == pytest.approx(-150.0)  # 3.0 -> -1.5


def test_flat_zero_mean_and_empty_series():
    flat = metric_stats(steps=[0, 1, 2, 3], values=[1.0, 1.0, 1.0, 1.0])
    assert (flat.std, flat.cv, flat.trend_slope, flat.direction) == (0.0, 0.0, 0.0, "flat")
    noisy = metric_stats(steps=[0, 1, 2, 3, 4, 5], values=[1.0, 1.2, 0.8, 0.8, 1.2, 1.0])
    assert noisy.direction == "flat" and noisy.relative_trend == pytest.approx(0.0, abs=1e-12)
    zero_mean = metric_stats(steps=[0, 1], values=[-1.0, 1.0])
    assert zero_mean.cv is None and zero_mean.direction == "increasing"
    zero_first = metric_stats(steps=[0, 1, 2], values=[0.0, 1.0, 2.0])
    assert zero_first.pct_change is None
    empty = metric_stats(steps=[0, 1], values=[None, math.nan])
    assert (empty.count, empty.missing, empty.non_finite, empty.mean) == (0, 1, 1, None)
    assert empty.first_non_finite_step == 1.0 and empty.direction is None


def test_bad_window_is_refused():
    t = MetricsTable(steps=[0.0], columns={"a": [1.0]})
    with pytest.raises(MetricsCSVError, match="window must be >= 1"):
        summarize(table=t, window=0)
    with pytest.raises(MetricsCSVError, match="window must be an integer"):
        metric_stats(steps=[0.0], values=[1.0], window=2.5)  # type: ignore[arg-type]


def test_correlations_need_three_shared_finite_points():
    a = [1.0, 2.0, 3.0, 5.0, 8.0]
    t = MetricsTable(
        steps=[0.0, 1.0, 2.0, 3.0, 4.0],
        columns={
            "a": a,
            "neg": [-x for x in a],
            "sparse": [1.0, None, 2.0, math.nan, 4.0],  # 3 finite points shared with a
            "two": [None, None, 1.0, 2.0, None],  # only 2 shared: left out
            "const": [1.0] * 5,  # no variance: r undefined, left out
        },
    )
    summary = summarize(table=t)
    c = summary.correlations
    assert c["a"]["neg"] == pytest.approx(-1.0) and c["neg"]["a"] == pytest.approx(-1.0)
    assert summary.correlation_counts["a"]["neg"] == 5
    assert summary.correlation_counts["a"]["sparse"] == 3
    # by hand, (1, 3, 8) vs (1, 2, 4): sum dx*dy = 11, sum dx^2 = 26, sum dy^2 = 14/3
    assert c["a"]["sparse"] == pytest.approx(11 / math.sqrt(26 * 14 / 3))
    assert "two" not in c and "const" not in c


def test_summary_of_the_history_export():
    summary = summarize(table=read_wandb_csv(path=DATA / "history_export.csv"))
    assert summary.steps == {"first": 0.0, "last": 199.0, "count": 200}
    loss = summary.stats["train/loss"]
    assert loss.count == 200 and loss.window == 20 and loss.direction == "decreasing"
    val = summary.stats["val/loss"]
    assert (val.count, val.missing) == (10, 190)
    assert (val.first, val.last) == (1.6936, 0.4548)
    assert summary.correlations["val/loss"]["val/accuracy"] < -0.99
    json.dumps(summary.to_dict(), allow_nan=False)


# --------------------------------------------------------------------------- lr schedules


def test_cosine_lr_is_recognised():
    lr = summarize(table=read_wandb_csv(path=DATA / "history_export.csv")).lr_schedule
    assert lr is not None and lr.column == "lr" and lr.kind == "cosine"
    assert lr.r2 > 0.98
    assert lr.details["max"] == pytest.approx(3e-3, rel=1e-3)
    assert lr.details["min"] == pytest.approx(1e-5, abs=1e-6)
    assert lr.details["period_steps"] == pytest.approx(200, rel=0.01)
    assert "warmup_steps" not in lr.details


def test_step_lr_is_recognised_with_its_drops():
    lr = summarize(table=read_wandb_csv(path=DATA / "history_step_lr.csv")).lr_schedule
    assert lr is not None and lr.kind == "step"
    assert lr.details["drop_steps"] == [40.0, 80.0]
    assert [d["factor"] for d in lr.details["drops"]] == pytest.approx([0.1, 0.1])
    assert lr.details["gamma"] == pytest.approx(0.1)
    assert lr.r2 == pytest.approx(1.0)


def test_constant_linear_and_warmup_schedules():
    steps = list(range(300))
    const = classify_lr_schedule(column="lr", steps=steps, values=[3e-4] * 300)
    assert const.kind == "constant" and const.details["value"] == pytest.approx(3e-4)
    jitter = [3e-4 * (1 + 0.001 * math.sin(s)) for s in steps]
    assert classify_lr_schedule(column="lr", steps=steps, values=jitter).kind == "constant"
    linear = classify_lr_schedule(
        column="lr", steps=steps, values=[1e-3 * (1 - s / 300) for s in steps]
    )
    assert linear.kind == "linear" and linear.r2 == pytest.approx(1.0)
    assert linear.details["slope_per_step"] == pytest.approx(-1e-3 / 300)
    warm = [
        1e-3 * s / 20
        if s < 20
        else 1e-5 + (1e-3 - 1e-5) / 2 * (1 + math.cos(math.pi * (s - 20) / 280))
        for s in steps
    ]
    cos = classify_lr_schedule(column="lr", steps=steps, values=warm)
    assert cos.kind == "cosine" and cos.details["warmup_steps"] == 20.0
    assert cos.details["period_steps"] == pytest.approx(280, rel=1e-3)


def test_geometric_step_decay_and_a_per_epoch_cosine():
    steps = list(range(300))
    step_lr = classify_lr_schedule(
        column="lr", steps=steps, values=[1e-3 * 0.5 ** (s // 30) for s in steps]
    )
    assert step_lr.kind == "step" and step_lr.details["gamma"] == pytest.approx(0.5)
    assert step_lr.details["drop_steps"] == [float(s) for s in range(30, 300, 30)]
    # a cosine updated once per 15-step epoch is a staircase, but not a step decay
    epoch_cos = [1e-5 + (1e-3 - 1e-5) / 2 * (1 + math.cos(math.pi * (s // 15) / 20)) for s in steps]
    lr = classify_lr_schedule(column="lr", steps=steps, values=epoch_cos)
    assert lr.kind == "cosine" and lr.details["quantized"] is True and lr.details["updates"] == 19


def test_unknown_schedules_say_why():
    steps = list(range(300))
    restarts = [1e-5 + (1e-3 - 1e-5) / 2 * (1 + math.cos(math.pi * (s % 100) / 100)) for s in steps]
    lr = classify_lr_schedule(column="lr", steps=steps, values=restarts)
    assert lr.kind == "unknown" and lr.details["cosine_r2"] < 0.98
    few = classify_lr_schedule(column="lr", steps=[0, 1], values=[1.0, 0.5])
    assert few.kind == "unknown" and few.details["points"] == 2


def test_lr_column_names():
    names = ["train/loss", "lr-AdamW", "run-a/Learning_Rate", "train/lr", "lrx", "val/acc@1"]
    assert lr_columns(names=names) == ["run-a/Learning_Rate", "train/lr", "lr-AdamW"]
    assert lr_columns(names=["lr@history_export", "learning-rate#2"]) == [
        "lr@history_export",
        "learning-rate#2",
    ]


# --------------------------------------------------------------------------- text


def test_format_summary_states_figures():
    t = MetricsTable(
        steps=[float(s) for s in range(8)],
        columns={
            "loss": [9, 7, 5, 5, 4, 4, 4, 2],
            "lr": [0.1] * 8,
            "neg": [-9, -7, -5, -5, -4, -4, -4, -2],
        },
    )
    text = format_summary(summarize(table=t))
    assert text.splitlines()[0] == "8 steps (0..7)"
    assert "mean 5  std 2  CV 0.4  first->last 9 -> 2 (-77.8%, w=1)" in text
    assert "LR schedule (lr): constant at 0.1 (variation 0.00% < 1%)" in text
    assert "loss ~ neg: r = -1.000 over 8 steps" in text


def test_format_summary_of_real_exports():
    text = format_summary(summarize(table=read_wandb_csv(path=DATA / "history_step_lr.csv")))
    assert "step 40: 0.1 -> 0.01 (x0.1); step 80: 0.01 -> 0.001 (x0.1)" in text
    text = format_summary(summarize(table=read_wandb_csv(path=DATA / "history_export.csv")))
    assert "LR schedule (lr): cosine from 0.003 to 1e-05 over 200 steps" in text
    assert "[n=10 missing=190]" in text


# --------------------------------------------------------------------------- errors


def test_no_step_column_error_lists_the_columns():
    path = DATA / "bad_no_step.csv"
    with pytest.raises(MetricsCSVError) as exc:
        read_wandb_csv(path=path)
    assert str(exc.value) == (
        f"{path}: no step column: expected 'Step' (W&B chart export) or '_step' "
        "(W&B run-history export); found columns: 'step', 'train/loss', 'lr'"
    )
    assert isinstance(exc.value, MLError)


def test_non_numeric_error_names_file_line_and_column():
    path = DATA / "bad_non_numeric.csv"
    with pytest.raises(MetricsCSVError) as exc:
        read_wandb_csv(path=path)
    assert str(exc.value) == f"{path}:5: column 'train/loss': not a number: 'tensor(0.8123)'"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("_step,loss\n0,1\n\n3,x\n", ":4: column 'loss': not a number: 'x'"),  # blank lines count
        ('_step,loss\n0,1\n1,"2\n"\n2,y\n', ":5: column 'loss': not a number: 'y'"),
        ("_step,loss\n0,1,2\n", ":2: expected 2 fields like the header, found 3"),
        ("_step,loss\n,1\n", ":2: column '_step': the step must be a finite number, got empty"),
        ("Step,r - a\nnan,1\n", ":2: column 'Step': the step must be a finite number, got 'nan'"),
        ("Step,r - a,r - a\n0,1,2\n", ":1: column 'r - a' appears twice in the header"),
        (
            "Step,r - a__MIN\n0,1\n",
            ":1: column 'r - a__MIN' or 'r - a__MAX' has no matching column 'r - a'",
        ),
        ("_step,loss\n0,1_000\n", ":2: column 'loss': not a number: '1_000'"),
        ("", ": empty file: no header line"),
    ],
)
def test_malformed_files(tmp_path, text, message):
    path = write(tmp_path, "bad.csv", text)
    with pytest.raises(MetricsCSVError) as exc:
        read_wandb_csv(path=path)
    assert str(exc.value) == f"{path}{message}"


def test_missing_file(tmp_path):
    with pytest.raises(MetricsCSVError, match=r"nope\.csv: no such file"):
        read_wandb_csv(path=tmp_path / "nope.csv")


def test_header_only_file_and_unnamed_index_column(tmp_path):
    t = read_wandb_csv(path=write(tmp_path, "h.csv", "_step,loss\n"))
    assert t.steps == [] and t.columns == {"loss": []}
    summary = summarize(table=t)
    assert summary.steps == {"first": None, "last": None, "count": 0}
    assert "0 steps" in format_summary(summary)
    # pandas' to_csv writes its index as an unnamed first column
    t = read_wandb_csv(path=write(tmp_path, "p.csv", ",_step,loss\n0,0,1.5\n1,5,1.25\n"))
    assert t.columns == {"loss": [1.5, 1.25]} and t.steps == [0.0, 5.0]
    assert any("column 1 has no name" in n for n in t.notes)


# --------------------------------------------------------------------------- records


def test_records_are_frozen_and_serialise_to_plain_json():
    t = read_wandb_csv(path=DATA / "chart_export.csv")
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.steps = []  # type: ignore[misc]
    d = t.to_dict()
    assert d["bands"][f"{BASE}/train/loss"]["min"][2] == 1.4468
    json.dumps(d, allow_nan=False)
    summary = summarize(table=t)
    assert summary.stats[f"{BASE}/train/loss"].to_dict()["mean"] == pytest.approx(
        summary.stats[f"{BASE}/train/loss"].mean
    )
    json.dumps(summary.to_dict(), allow_nan=False)
    with pytest.raises(MetricsCSVError, match="has 1 values for 2 steps"):
        MetricsTable(steps=[0.0, 1.0], columns={"a": [1.0]})


def test_import_does_not_load_torch():
    code = (
        "import tether.ml.metrics_csv, sys; "
        "bad = [m for m in ('torch', 'ray', 'fabric', 'textual', 'pandas') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)
