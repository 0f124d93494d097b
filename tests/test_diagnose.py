"""Diagnosis rules on histories whose shape we know."""

from __future__ import annotations

import math

import pytest

from tether.ml.diagnose import (
    DiagnosisError,
    Fit,
    Flag,
    Milestone,
    Status,
    Target,
    diagnose,
    history_from_results,
    live_alerts,
    read_milestones,
)


def _plateau_history(epochs: int = 30) -> dict[str, list[float]]:
    # Falls from 1.0 to ~0.36 by epoch 8, then flat: both train and val far above 0.01.
    train = [max(0.36, 1.0 - 0.08 * e) + 0.0005 * (e % 2) for e in range(epochs)]
    val = [v + 0.005 for v in train]
    return {"loss": train, "val_loss": val}


def test_plateau_far_above_target_is_capacity_limited_with_the_ratio():
    d = diagnose(_plateau_history(), targets=[Target.parse("val_loss<0.01")], patience=5)
    assert d.status is Status.PLATEAUED
    assert d.fit is Fit.CAPACITY_LIMITED
    check = d.targets[0]
    assert check.flag is Flag.RED
    assert check.ratio == pytest.approx(36.5, abs=0.1)
    assert "is 36.5x the 0.01 target" in check.text
    assert d.recommendations[0].action.startswith("increase capacity")
    assert "both stay 36.0x and 36.5x above the 0.01 target" in d.recommendations[0].evidence
    text = d.to_text()
    assert "plateaued" in text and "capacity-limited" in text


def test_overfitting_recommends_early_stopping_and_regularisation():
    train = [1.0 / (e + 1) for e in range(20)]
    val = [0.8 - 0.05 * e if e <= 8 else 0.4 + 0.03 * (e - 8) for e in range(20)]
    d = diagnose({"loss": train, "val_loss": val}, patience=5)
    assert d.fit is Fit.OVERFITTING
    assert d.best_epoch == 9 and d.epochs_since_best == 11
    rec = d.recommendations[0]
    assert "early stopping" in rec.action and "regularisation" in rec.action
    assert "epoch-9 weights" in rec.action
    assert "val_loss rose from 0.4 (epoch 9) to 0.73" in rec.evidence
    assert d.gap_final == pytest.approx(0.73 - 0.05)
    assert d.gap_trend > 0


def test_nan_history_is_divergence():
    loss = [1.0, 0.8, 0.7, 2.5, float("nan"), float("nan")]
    d = diagnose({"loss": loss, "val_loss": [1.1, 0.9, 0.8, 3.0, None, float("inf")]})
    assert d.status is Status.DIVERGED
    assert d.findings[0].code == "diverged" and d.findings[0].epoch == 5
    assert "non-finite" in d.findings[0].text
    assert "lower the learning rate" in d.recommendations[0].action
    assert d.to_dict()["final_value"] is None  # JSON-safe


def test_oscillation_lists_the_spike_epochs():
    loss = [1.0, 0.9, 0.8, 0.75, 1.3, 0.7, 0.68, 0.66, 1.2, 0.64, 0.62]
    d = diagnose({"loss": loss})
    assert d.oscillation_epochs == [5, 9]
    assert any(r.action.startswith("lower the learning rate or raise") for r in d.recommendations)


def test_still_improving_with_a_target_not_yet_met_says_train_longer():
    loss = [1.0 * 0.8**e for e in range(10)]
    d = diagnose({"val_loss": loss}, targets=[Target.parse("val_loss<0.01")])
    assert d.status is Status.STILL_IMPROVING
    assert d.recommendations[0].action.startswith("train longer")
    assert "-59.0%" in d.recommendations[0].evidence  # 0.8**4 - 1 over the last 5 epochs


def test_converged_when_the_target_is_met():
    loss = [0.5, 0.1, 0.02, 0.005] + [0.005] * 8
    d = diagnose({"val_loss": loss}, targets=[Target.parse("val_loss<0.01")])
    assert d.status is Status.CONVERGED
    assert d.targets[0].flag is Flag.GREEN
    assert not any("capacity" in r.action for r in d.recommendations)


def test_milestones_are_red_amber_green_or_pending(tmp_path):
    val = [0.5 - 0.01 * e for e in range(25)]  # epoch 20: 0.31, epoch 10: 0.41
    f = tmp_path / "milestones.txt"
    f.write_text(
        "# expectations\n"
        "epoch 20: expect val_loss < 0.25, red flag > 0.30\n"
        "epoch 10: val_loss < 0.45, red flag > 0.5\n"
        "epoch 22: val_loss < 0.28\n"
        "epoch 40: val_loss < 0.1\n"
    )
    d = diagnose({"val_loss": val}, milestones=read_milestones(f))
    flags = [(m.epoch, m.flag) for m in d.milestones]
    assert flags == [(20, Flag.RED), (10, Flag.GREEN), (22, Flag.AMBER), (40, Flag.PENDING)]
    assert "val_loss 0.31 at epoch 20 (expect < 0.25, red flag > 0.3)" in d.milestones[0].text
    assert any("milestone at epoch 20 is red" in r.action for r in d.recommendations)
    alerts = live_alerts({"val_loss": val}, milestones=read_milestones(f))
    assert [a.code for a in alerts] == ["milestone"]


def test_worst_group_is_named():
    d = diagnose(
        {"loss": [1.0, 0.5, 0.4]},
        groups={"mse": {"1Hz": 0.06, "3Hz": 0.05, "7Hz": 0.2}, "recall": {"a": 0.9, "b": 0.6}},
    )
    texts = [g.text for g in d.groups]
    assert texts[0].startswith("worst mse is 7Hz at 0.2")
    assert texts[1].startswith("worst recall is b at 0.6")
    group_recs = [r.action for r in d.recommendations if r.action.startswith("look at group")]
    assert group_recs == ["look at group 7Hz first: it is 94% off the mean"]
    even = diagnose({"loss": [1.0, 0.5, 0.4]}, groups={"recall": {"a": 0.99, "b": 0.995}})
    assert not [r for r in even.recommendations if r.action.startswith("look at group")]


def test_history_from_training_results_prefixes_validation():
    h = history_from_results(
        {"train_history": {"loss": [1, 0.5], "accuracy": [0.5, 0.7]},
         "val_history": {"loss": [1.1, 0.6], "accuracy": [0.4, 0.6]}}
    )  # fmt: skip
    assert h == {
        "loss": [1, 0.5], "accuracy": [0.5, 0.7], "val_loss": [1.1, 0.6], "val_accuracy": [0.4, 0.6]
    }  # fmt: skip
    d = diagnose(h)
    assert d.monitor == "val_loss" and d.status is Status.TOO_SHORT


@pytest.mark.parametrize(
    ("text", "goal", "lower", "acceptable"),
    [
        ("val_loss<0.01", 0.01, True, None),
        ("accuracy>=0.9", 0.9, False, None),
        ("accuracy=0.85:0.95", 0.95, False, 0.85),
        ("val_loss=0.30:0.25", 0.25, True, 0.30),
    ],
)
def test_target_parsing(text, goal, lower, acceptable):
    t = Target.parse(text)
    assert (t.goal, t.lower_better, t.acceptable) == (goal, lower, acceptable)


def test_range_targets_give_amber_between_acceptable_and_goal():
    t = Target.parse("accuracy=0.85:0.95")
    assert [t.flag(v) for v in (0.8, 0.9, 0.96, math.nan)] == [
        Flag.RED, Flag.AMBER, Flag.GREEN, Flag.RED
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: Target.parse("accuracy ~ 0.9"), "cannot read target"),
        (lambda: Target.parse("accuracy=0.9"), "needs a range"),
        (lambda: Milestone.parse("at 20 loss small"), "cannot read milestone"),
        (lambda: diagnose({}), "history is empty"),
        (lambda: diagnose({"loss": [1, 2], "val_loss": [1]}), "lengths differ"),
        (lambda: diagnose({"loss": [1, "x"]}), "loss[1] is 'x'"),
        (
            lambda: diagnose({"loss": [1.0]}, targets=[Target.parse("acc>0.9")]),
            "not in the history",
        ),
        (lambda: diagnose({"loss": [1.0]}, monitor="val_loss"), "no metric 'val_loss'"),
    ],
)
def test_bad_input_says_what_to_fix(call, message):
    with pytest.raises(DiagnosisError, match=message.replace("[", r"\[").replace("]", r"\]")):
        call()


def test_bad_milestone_file_names_the_line(tmp_path):
    f = tmp_path / "m.txt"
    f.write_text("epoch 5: loss < 1\nnonsense here\n")
    with pytest.raises(DiagnosisError, match=r"m.txt:2: cannot read milestone"):
        read_milestones(f)
