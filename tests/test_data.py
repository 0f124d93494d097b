"""Built-in workloads: deterministic, labelled as they claim, split apart."""

from __future__ import annotations

import math

import pytest
import torch

from tether.ml.data import (
    TRACK_CLASSES,
    FrequencyConfig,
    FrequencyDataset,
    TrackConfig,
    TrackPersistenceDataset,
    dataset_info,
    make_frequency_sample,
    make_track_clip,
)
from tether.ml.errors import MLError


def test_track_clips_are_deterministic_and_differ_across_splits_and_seeds():
    c = TrackConfig()
    a, la = make_track_clip(c, "train", 7)
    b, lb = make_track_clip(c, "train", 7)
    assert torch.equal(a, b) and la == lb
    assert a.shape == (1, 16, 32, 32) and a.dtype == torch.float32
    assert not torch.equal(a, make_track_clip(c, "test", 7)[0])
    assert not torch.equal(a, make_track_clip(TrackConfig(seed=1), "train", 7)[0])


def _visible_mass(clip: torch.Tensor) -> torch.Tensor:
    return clip[0].sum(dim=(1, 2))  # per frame


def test_labels_mean_what_they_say_without_noise_or_clutter():
    c = TrackConfig(noise=0.0, clutter=0, train_size=60)
    ds = TrackPersistenceDataset(config=c, split="train")
    seen = set()
    for i in range(len(ds)):
        clip, label = ds[i]
        mass = _visible_mass(clip)
        present = mass > 1.0
        seen.add(label)
        if TRACK_CLASSES[label] == "persistent":
            assert present.all(), f"persistent clip {i} has an empty frame"
        else:
            n = int(present.sum())
            assert 4 <= n <= 12, f"transient clip {i} visible for {n} of 16 frames"
            idx = present.nonzero().flatten()
            assert (idx[-1] - idx[0] + 1) == n, "a transient track is visible in one window"
    assert seen == {0, 1}


def test_noise_and_clutter_are_there_by_default():
    c = TrackConfig()
    clip, _ = make_track_clip(c, "val", 3)
    background = clip[0][:, :2, :2]  # corners are mostly background
    assert 0.1 < float(background.std()) < 0.5


def test_dataset_info_counts_and_balance():
    info = dataset_info(TrackConfig(train_size=11, val_size=4, test_size=5))
    assert info.kind == "classification" and info.groups == ["transient", "persistent"]
    assert info.splits == {"train": 11, "val": 4, "test": 5}
    assert info.group_counts["train"] == {"transient": 6, "persistent": 5}
    ds = TrackPersistenceDataset(config=TrackConfig(train_size=11), split="train")
    assert sum(ds[i][1] for i in range(11)) == 5
    assert info.input_shape == [1, 16, 32, 32]
    with pytest.raises(IndexError):
        ds[11]


def test_frequency_target_is_the_selected_pure_sinusoid():
    c = FrequencyConfig(noise=0.0)
    for index in range(8):
        x, y, group = make_frequency_sample(c, "train", index)
        assert x.shape == (200, 5) and y.shape == (200,)
        assert group == index % 4
        assert torch.equal(x[:, 1:].argmax(dim=1), torch.full((200,), group))
        # y is a unit sinusoid at the selected frequency: fit its phase and compare.
        t = torch.arange(200) / 100.0
        f = c.freqs[group]
        basis = torch.stack([torch.sin(2 * math.pi * f * t), torch.cos(2 * math.pi * f * t)], 1)
        coef = torch.linalg.lstsq(basis, y.unsqueeze(1)).solution
        assert torch.allclose(basis @ coef, y.unsqueeze(1), atol=1e-4)
        assert abs(float(coef.norm()) - 1.0) < 1e-4
    info = dataset_info(c)
    assert info.kind == "regression" and info.groups == ["1Hz", "3Hz", "5Hz", "7Hz"]
    assert len(FrequencyDataset(config=c, split="test")) == 400


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: TrackConfig(frames=2), "frames >= 4"),
        (lambda: TrackConfig(min_visible=0.9, max_visible=0.5), "min_visible <= max_visible"),
        (lambda: FrequencyConfig(freqs=(1.0, 60.0)), "half the sample rate"),
        (lambda: TrackPersistenceDataset(config=TrackConfig(), split="dev"), "unknown split"),
    ],
)
def test_bad_data_configs_say_what_to_fix(factory, message):
    with pytest.raises(MLError, match=message):
        factory()
