"""The watch's run model: events applied once in seq order, bounded windows, health from the
monitor's verdicts, stage commits, trial progress and ETA. Pure: no Textual, no Ray."""

from __future__ import annotations

from tether.client.watch.model import Caps, RunModel
from tether.cluster.events import make_event, validate_event

RUN = "r-model"


class Events:
    """Events as the monitor stores them: schema-checked, with consecutive seqs."""

    def __init__(self) -> None:
        self.seq = 0

    def __call__(self, kind: str, *, time: float, **fields) -> dict:
        self.seq += 1
        event = make_event(kind=kind, run=RUN, **fields)
        event.update(time=time, seq=self.seq)
        return validate_event(event)


def test_events_apply_once_in_order_and_a_replayed_tail_changes_nothing():
    ev = Events()
    events = [
        ev("stage", time=1.0, stage="train", worker="w-1", status="started", attempt=1, epochs=4),
        ev("progress", time=2.0, stage="train", worker="w-1", step=None, epoch=1,
           metrics={"loss": 0.9, "val_loss": 1.0}, epoch_end=True),
        ev("progress", time=4.0, stage="train", worker="w-1", step=None, epoch=2,
           metrics={"loss": 0.7, "val_loss": 0.8}, epoch_end=True),
    ]  # fmt: skip
    m = RunModel(RUN)
    assert m.apply_all(events) == 3
    assert m.apply_all(events[1:]) == 0  # a reconnect that replays: nothing applied twice
    assert (m.duplicates, m.gaps, m.last_seq) == (2, 0, 3)
    assert m.series("train", "val_loss") == [(1, 1.0), (2, 0.8)]
    trial = m.trials["train"]
    assert (trial.epoch, trial.epochs, trial.fraction) == (2, 4, 0.5)
    assert trial.eta_s() == 4.0  # 2 epochs left at 2 s per epoch
    gap = ev("log", time=5.0, stage="train", worker="w-1", stream="stdout", line="x")
    gap["seq"] += 5
    m.apply(gap)
    assert m.gaps == 1


def test_health_stage_commits_and_compare_trials():
    ev = Events()
    sha = "a" * 40
    m = RunModel(RUN)
    m.apply_all(
        [
            ev("stage", time=1.0, stage="compare", trial="i3d-s0", worker="w-1", status="started",
               gpu_ids=["2"], epochs=3),
            ev("stage", time=1.0, stage="compare", trial="i3d-s1", worker="w-2", status="started",
               gpu_ids=["3"], epochs=3),
            ev("heartbeat", time=2.0, stage="compare", trial="i3d-s0", worker="w-1", host="h",
               pid=7, rss_mb=100.0, gpus=None),
            ev("alert", time=3.0, stage="compare", trial="i3d-s0", worker="w-1", level="warning",
               code="health:stalled", message="no progress for 30 s", health="stalled"),
            ev("metric", time=4.0, stage="compare", trial="i3d-s1", worker="w-2",
               name="test.accuracy", value=0.91, step=None, epoch=None),
            ev("stage", time=4.0, stage="compare", trial="i3d-s1", worker="w-2", status="finished"),
            ev("alert", time=4.5, stage="compare", level="info", code="git:committed",
               message="committed", commit=sha),
        ]
    )  # fmt: skip
    assert m.workers["w-1"].health == "stalled" and m.workers["w-2"].health == "finished"
    assert m.trials["i3d-s0"].gpu_ids == ["2"] and m.trials["i3d-s1"].results == {
        "test.accuracy": 0.91
    }
    stage = m.stages["compare"]
    assert stage.status == "running" and stage.commit == sha  # one trial still runs
    m.apply(ev("stage", time=6.0, stage="compare", trial="i3d-s0", worker="w-1", status="failed",
               error="ValueError: nan"))  # fmt: skip
    assert (stage.status, stage.ended) == ("failed", 6.0)
    assert m.trials["i3d-s0"].error == "ValueError: nan"
    assert [a.code for a in m.alerts] == ["health:stalled", "git:committed"]


def test_windows_are_capped_but_every_epoch_point_stays():
    ev = Events()
    m = RunModel(RUN, caps=Caps(log_lines=50, alerts=5, steps_per_trial=20))
    for i in range(1, 1001):
        m.apply(ev("log", time=float(i), stage="train", worker="w", stream="stdout", line=f"l{i}"))
        m.apply(ev("progress", time=float(i), stage="train", worker="w", step=i, epoch=None,
                   metrics={"loss": 1.0 / i}))  # fmt: skip
        m.apply(ev("progress", time=float(i), stage="train", worker="w", step=None, epoch=i,
                   metrics={"val_loss": 1.0 / i}, epoch_end=True))  # fmt: skip
    assert len(m.logs) == 50 and m.logs[-1].line == "l1000"
    assert len(m.trials["train"].steps) == 20
    assert len(m.series("train", "val_loss")) == 1000


def test_long_trial_names_keep_their_seed_on_screen():
    from tether.client.watch.model import TrialView
    from tether.client.watch.widgets.trial_progress import row_text

    rows = [
        row_text(TrialView(trial=f"transformer-s{i}"), color="red", pinned=False, eta=None).plain
        for i in (0, 1)
    ]
    assert rows[0] != rows[1] and "er-s0" in rows[0] and "er-s1" in rows[1]
