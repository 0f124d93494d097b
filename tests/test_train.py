"""The training engine: exact resume, early stopping, self-describing checkpoints, results."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from tether.ml.data import FrequencyConfig, TrackConfig
from tether.ml.errors import MLError
from tether.ml.models import ExtractorConfig, LSTMConfig
from tether.ml.results import ResultsError, read_training_results
from tether.ml.train import (
    BEST_MODEL_NAME,
    CHECKPOINT_NAME,
    Callback,
    TrainConfig,
    fit,
    load_checkpoint,
)

TINY_TRACK = TrackConfig(train_size=48, val_size=16, test_size=16)


def _tiny(name: str = "i3d", **kw) -> TrainConfig:
    base = {
        "extractor": ExtractorConfig(name=name, size="tiny"),
        "track": TINY_TRACK,
        "epochs": 3,
        "batch_size": 16,
        "patience": 10,
    }
    return TrainConfig(**{**base, **kw})


class Interrupt(Exception):
    pass


class StopAfter(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, *, epoch, train, val, best_epoch) -> None:
        if epoch == self.epoch:
            raise Interrupt(f"simulated crash after epoch {epoch}")


class Recorder(Callback):
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def on_train_start(self, *, config, start_epoch, total_epochs) -> None:
        self.events.append(("start", start_epoch, total_epochs))

    def on_step(self, *, epoch, step, loss) -> None:
        self.events.append(("step", epoch, step))

    def on_epoch_end(self, *, epoch, train, val, best_epoch) -> None:
        self.events.append(("epoch", epoch, round(val["loss"], 6)))

    def on_train_end(self, *, results) -> None:
        self.events.append(("end", results.num_epochs))


def _weights(path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def _history(results) -> tuple:
    return results.train_history.series(), results.val_history.series()


@pytest.mark.parametrize("config", [_tiny("i3d"), _tiny("magvit")], ids=["i3d", "magvit"])
def test_interrupted_and_resumed_equals_uninterrupted(tmp_path, config):
    straight = fit(config=config, out_dir=tmp_path / "a")
    with pytest.raises(Interrupt):
        fit(config=config, out_dir=tmp_path / "b", callbacks=[StopAfter(2)])
    assert load_checkpoint(tmp_path / "b" / CHECKPOINT_NAME)["epoch"] == 2
    rec = Recorder()
    resumed = fit(config=config, out_dir=tmp_path / "b", callbacks=[rec])
    assert rec.events[0] == ("start", 3, 3)
    assert [e[1] for e in rec.events if e[0] == "epoch"] == [3]
    a, b = _weights(tmp_path / "a" / CHECKPOINT_NAME), _weights(tmp_path / "b" / CHECKPOINT_NAME)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs after resume"
    assert _history(straight) == _history(resumed)
    timing = {"latency_ms_per_clip"}  # wall-clock, the one thing allowed to differ
    assert straight.test_results.model_dump(exclude=timing) == resumed.test_results.model_dump(
        exclude=timing
    )
    assert straight.best_epoch == resumed.best_epoch


def test_checkpoint_describes_itself_and_rejects_another_config(tmp_path):
    config = _tiny(epochs=1)
    fit(config=config, out_dir=tmp_path)
    ckpt = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert TrainConfig.from_dict(ckpt["config"]) == config
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "epoch", "history", "best"} <= set(
        ckpt
    )
    assert ckpt["dataset_info"]["splits"] == {"train": 48, "val": 16, "test": 16}
    with pytest.raises(MLError, match="different config"):
        fit(config=replace(config, lr=0.5), out_dir=tmp_path)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(MLError, match="cannot load checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")


def test_checkpoints_can_live_apart_from_the_results(tmp_path):
    fit(config=_tiny(epochs=1), out_dir=tmp_path / "results", checkpoint_dir=tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["training_results.json"]
    assert {CHECKPOINT_NAME, BEST_MODEL_NAME} <= {p.name for p in (tmp_path / "ckpt").iterdir()}


def test_i3d_reaches_90_percent_test_accuracy_on_cpu(tmp_path):
    """The headline claim of docs/models.md, on a smaller budget than the table's run."""
    config = TrainConfig(
        extractor=ExtractorConfig(name="i3d", size="small"),
        track=TrackConfig(train_size=512, val_size=128, test_size=256),
        epochs=8,
    )
    res = fit(config=config, out_dir=tmp_path)
    assert res.test_results.accuracy >= 0.9, res.test_results
    assert res.test_results.f1 >= 0.9
    early = res.test_results.early_decision
    assert early.compute_savings_pct > 0 and early.accuracy_at_decision >= 0.85


def test_early_stopping_stops_and_tests_the_best_epoch(tmp_path):
    # lr so small nothing improves by min_delta: stops after `patience` epochs past epoch 1.
    config = _tiny(epochs=20, patience=2, min_delta=10.0)
    res = fit(config=config, out_dir=tmp_path)
    assert res.stopped_early and res.num_epochs == 3 and res.best_epoch == 1
    assert torch.load(tmp_path / BEST_MODEL_NAME, weights_only=False)["epoch"] == 1
    assert len(res.val_history.loss) == 3


def test_test_weights_last_tests_the_last_epoch_and_keeps_the_best_model(tmp_path):
    # Nothing improves by min_delta after epoch 1: best is epoch 1, last is epoch 3.
    best = fit(config=_tiny(patience=5, min_delta=10.0), out_dir=tmp_path / "best")
    last = fit(
        config=_tiny(patience=5, min_delta=10.0, test_weights="last"), out_dir=tmp_path / "last"
    )
    assert best.best_epoch == last.best_epoch == 1 and last.num_epochs == 3
    assert best.train_history.loss == last.train_history.loss  # the same training
    # The test split saw other weights: the attention the model pays differs.
    assert best.test_results.attention_mean != last.test_results.attention_mean
    assert last.model_config_["test_weights"] == "last"
    for run in ("best", "last"):  # best_model.pt is the best epoch's either way
        assert torch.load(tmp_path / run / BEST_MODEL_NAME, weights_only=False)["epoch"] == 1


def test_callbacks_see_every_step_and_epoch(tmp_path):
    rec = Recorder()
    fit(config=_tiny(epochs=2), out_dir=tmp_path, callbacks=[rec])
    steps = [e for e in rec.events if e[0] == "step"]
    assert [s[2] for s in steps] == list(range(1, 7))  # 48 clips / 16 per batch x 2 epochs
    assert rec.events[-1] == ("end", 2)


def test_results_file_round_trips_and_malformed_files_name_key_and_file(tmp_path):
    res = fit(config=_tiny(epochs=2), out_dir=tmp_path)
    path = tmp_path / "training_results.json"
    back = read_training_results(path)
    assert back == res
    data = json.loads(path.read_text())
    assert set(data["train_history"]) == {"loss", "accuracy", "f1", "lr"}
    assert data["test_results"]["kind"] == "classification"
    assert sum(map(sum, data["test_results"]["confusion_matrix"])) == 16

    del data["best_epoch"]
    data["test_results"]["accuracy"] = "high"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ResultsError) as err:
        read_training_results(bad)
    text = str(err.value)
    assert f"{bad}: missing key 'best_epoch'" in text
    assert f"{bad}: test_results.accuracy: Input should be a valid number" in text
    bad.write_text("{ nope")
    with pytest.raises(ResultsError, match="not valid JSON"):
        read_training_results(bad)


def test_lstm_learns_frequency_extraction_and_reports_per_frequency_mse(tmp_path):
    config = TrainConfig(
        task="frequency_extraction",
        lstm=LSTMConfig(hidden=32),
        frequency=FrequencyConfig(train_size=256, val_size=64, test_size=64),
        epochs=3,
        batch_size=32,
        lr=1e-2,
    )
    res = fit(config=config, out_dir=tmp_path)
    test = res.test_results
    assert test.kind == "regression"
    assert set(test.per_group) == {"1Hz", "3Hz", "5Hz", "7Hz"}
    # Predicting zero scores 0.5 (a unit sinusoid's mean square): training must beat it.
    assert test.mse < 0.45
    assert res.val_history.series().keys() >= {"loss", "mse", "mae"}
    assert res.train_history.loss[-1] < res.train_history.loss[0]
