"""The video models, the early-decision head and the LSTM: shapes, gradients, causality,
inflation, vector quantisation, decisions, learning, and config validation."""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle

import pytest
import torch
from torch import nn

from tether.ml.errors import MLError
from tether.ml.models import (
    EXTRACTOR_NAMES,
    EXTRACTORS,
    SIZE_NAMES,
    EarlyDecisionHead,
    ExtractorConfig,
    HeadConfig,
    LSTMConfig,
    MagvitExtractor,
    VectorQuantizer,
    VideoClassifier,
    build_extractor,
    build_lstm,
    build_video_classifier,
    count_parameters,
    decide,
    frame_causal_mask,
    inflate_conv2d,
)

T, H, W = 16, 32, 32


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _clip(batch: int = 2, frames: int = T) -> torch.Tensor:
    return torch.randn(batch, 1, frames, H, W)


def _first_layers(model: nn.Module) -> list[torch.Tensor]:
    """The weights that first touch the clip, per extractor."""
    name = model.config.name
    if name == "i3d":
        return [model.body[0].weight]
    if name == "slowfast":
        return [model.slow[0][0].weight, model.fast[0][0].weight]
    if name == "magvit":
        return [model.encoder[0][0].weight]
    return [model.embed.weight]


def test_registry_covers_every_extractor_name():
    assert set(EXTRACTORS) == set(EXTRACTOR_NAMES) == {"i3d", "slowfast", "magvit", "transformer"}


# --------------------------------------------------------------------------- shapes, gradients


@pytest.mark.parametrize("size", SIZE_NAMES)
@pytest.mark.parametrize("name", EXTRACTOR_NAMES)
def test_extractor_shape_finite_and_gradients_reach_the_first_layer(name, size):
    model = build_extractor(config=ExtractorConfig(name=name, size=size, feature_dim=24))
    clip = _clip().requires_grad_(True)
    features = model(clip)
    assert features.shape == (2, T, 24)
    assert torch.isfinite(features).all()
    (features.square().mean() + model.aux_loss).backward()
    for weight in _first_layers(model):
        assert weight.grad is not None and weight.grad.abs().sum() > 0
    assert clip.grad.abs().sum() > 0
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", EXTRACTOR_NAMES)
def test_aux_loss_is_zero_except_for_magvit(name):
    model = build_extractor(config=ExtractorConfig(name=name, size="tiny"))
    model(_clip())
    assert model.aux_loss.dim() == 0
    assert (model.aux_loss.item() > 0) == (name == "magvit")


# --------------------------------------------------------------------------- causality


def _assert_causal(run, *, t: int, reach_atol: float = 1e-3) -> None:
    """``run(clip) -> (B, T, ...)``: frames > t must not matter at <= t; frame t must at t."""
    clip = _clip()
    base = run(clip)
    future = clip.clone()
    future[:, :, t + 1 :] = torch.randn_like(future[:, :, t + 1 :]) * 3
    changed = run(future)
    assert torch.allclose(base[:, : t + 1], changed[:, : t + 1], atol=1e-5, rtol=0), (
        "the future leaked into the past"
    )
    assert not torch.allclose(base[:, t + 1 :], changed[:, t + 1 :], atol=1e-3)
    present = clip.clone()
    present[:, :, t] = torch.randn_like(present[:, :, t]) * 3
    now = run(present)
    assert torch.allclose(base[:, :t], now[:, :t], atol=1e-5, rtol=0)
    assert not torch.allclose(base[:, t], now[:, t], atol=reach_atol), "frame t must reach t"


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("size", ["tiny", "small"])
@pytest.mark.parametrize("name", EXTRACTOR_NAMES)
def test_extractor_is_causal_in_time(name, size, train):
    model = build_extractor(config=ExtractorConfig(name=name, size=size)).train(train)
    with torch.no_grad():
        for t in (5, 8):  # inside a slowfast slow step and on one (alpha=4)
            _assert_causal(model, t=t)


@pytest.mark.parametrize("name", EXTRACTOR_NAMES)
def test_classifier_logits_are_causal_in_time(name):
    model = build_video_classifier(
        extractor=ExtractorConfig(name=name, size="tiny"), head=HeadConfig(num_classes=3)
    )
    with torch.no_grad():
        # untrained, the head averages frame t with the past: its effect is small but real
        _assert_causal(lambda clip: model(clip).logits, t=7, reach_atol=1e-5)
        _assert_causal(lambda clip: model(clip).attention, t=7, reach_atol=1e-6)


@pytest.mark.parametrize("name", EXTRACTOR_NAMES)
def test_a_prefix_clip_gives_the_same_features_as_the_full_clip(name):
    model = build_extractor(config=ExtractorConfig(name=name, size="tiny")).eval()
    clip = _clip()
    with torch.no_grad():
        full, prefix = model(clip), model(clip[:, :, :6])
    assert prefix.shape == (2, 6, model.feature_dim)
    assert torch.allclose(full[:, :6], prefix, atol=1e-5, rtol=0)


def test_frame_causal_mask_allows_only_tokens_of_past_and_present_frames():
    mask = frame_causal_mask(frames=3, tokens_per_frame=2)
    expected = torch.tensor(
        [
            [1, 1, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [1, 1, 1, 1, 1, 1],
            [1, 1, 1, 1, 1, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(mask, expected)


# --------------------------------------------------------------------------- i3d inflation


def test_inflated_conv_answers_a_static_clip_like_the_2d_conv():
    conv2d = nn.Conv2d(3, 5, kernel_size=3, stride=2, padding=1)
    conv3d = inflate_conv2d(conv2d, time_kernel=3)
    assert conv3d.weight.shape == (5, 3, 3, 3, 3)
    frame = torch.randn(2, 3, 12, 12)
    static = frame.unsqueeze(2).expand(-1, -1, 6, -1, -1).contiguous()
    with torch.no_grad():
        out3d, out2d = conv3d(static), conv2d(frame)
    assert out3d.shape == (2, 5, 6, 6, 6)
    for t in range(2, 6):  # frames with a full window of real (not padded) frames
        assert torch.allclose(out3d[:, :, t], out2d, atol=1e-5)
    assert not torch.allclose(out3d[:, :, 0], out2d, atol=1e-3)  # the zero-padded past


def test_inflate_rejects_what_it_cannot_inflate():
    with pytest.raises(MLError, match="time_kernel"):
        inflate_conv2d(nn.Conv2d(1, 1, 3), time_kernel=0)
    with pytest.raises(MLError, match="padding"):
        inflate_conv2d(nn.Conv2d(1, 1, 3, padding="same"), time_kernel=3)
    with pytest.raises(MLError, match="Conv2d"):
        inflate_conv2d(nn.Linear(1, 1), time_kernel=3)


# --------------------------------------------------------------------------- magvit


def test_magvit_quantises_with_a_straight_through_gradient():
    config = ExtractorConfig(name="magvit", size="tiny", codebook_size=16)
    model = build_extractor(config=config)
    assert isinstance(model, MagvitExtractor)
    clip = _clip()
    vq = model.tokenize(clip)
    assert vq.indices.shape == (2, T, 4, 4)
    assert vq.indices.dtype == torch.long
    assert int(vq.indices.min()) >= 0 and int(vq.indices.max()) < 16
    assert 1.0 < model.quantizer.perplexity() <= 16
    assert int(model.quantizer.usage.sum()) == vq.indices.numel()

    features = model(clip)
    assert model.aux_loss.item() > 0
    features.sum().backward(
        retain_graph=True
    )  # the task loss alone: reaches the encoder only through the STE
    assert model.encoder[0][0].weight.grad.abs().sum() > 0
    assert model.quantizer.codebook.grad is None
    model.aux_loss.backward()  # the codebook learns from the VQ loss
    assert model.quantizer.codebook.grad.abs().sum() > 0


def test_vq_entropy_penalty_punishes_a_collapsed_codebook():
    vq = VectorQuantizer(codebook_size=4, code_dim=4, commitment=0.25, entropy_weight=0.1)
    with torch.no_grad():
        vq.codebook.copy_(torch.eye(4))
    collapsed = vq(torch.eye(4)[[0] * 8])
    assert vq.perplexity() == pytest.approx(1.0)
    spread = vq(torch.eye(4)[[0, 1, 2, 3] * 2])
    assert vq.perplexity() == pytest.approx(4.0)
    assert spread.indices.tolist() == [0, 1, 2, 3] * 2
    assert spread.loss.item() < 1e-3  # exact codes, even use: nothing to pay
    assert collapsed.loss.item() > 0.1  # one code for everything: the penalty bites
    plain = VectorQuantizer(codebook_size=4, code_dim=4, commitment=0.25, entropy_weight=0.0)
    with torch.no_grad():
        plain.codebook.copy_(torch.eye(4))
    assert plain(torch.eye(4)[[0] * 8]).loss.item() == pytest.approx(0.0, abs=1e-7)


def test_magvit_vq_loss_falls_when_trained_on_its_own():
    model = build_extractor(config=ExtractorConfig(name="magvit", size="tiny"))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    clip = _clip()
    losses = []
    for _ in range(30):
        model(clip)
        losses.append(model.aux_loss.item())
        opt.zero_grad()
        model.aux_loss.backward()
        opt.step()
    assert losses[-1] < 0.5 * losses[0]


# --------------------------------------------------------------------------- head and decide


def test_head_attention_is_lower_triangular_and_rows_sum_to_one():
    head = EarlyDecisionHead(feature_dim=8, config=HeadConfig(num_classes=3, hidden=16))
    out = head(torch.randn(4, 6, 8))
    assert out.logits.shape == (4, 6, 3)
    assert out.attention.shape == (4, 6, 6)
    assert torch.allclose(out.attention.sum(-1), torch.ones(4, 6), atol=1e-6)
    assert torch.equal(out.attention.triu(1), torch.zeros(4, 6, 6))
    assert torch.equal(out.attention[:, 0, 0], torch.ones(4))  # frame 0 sees only itself
    lower = torch.ones(6, 6, dtype=torch.bool).tril()
    assert (out.attention[:, lower] > 0).all()  # every past frame gets some weight


def _logits_from_probs(rows: list[list[list[float]]]) -> torch.Tensor:
    return torch.tensor(rows).log()


def test_decide_picks_the_first_confident_frame_else_the_last():
    logits = _logits_from_probs(
        [
            [[0.6, 0.4], [0.05, 0.95], [0.97, 0.03], [0.5, 0.5]],  # confident at 1 (class 1)
            [[0.6, 0.4], [0.7, 0.3], [0.2, 0.8], [0.3, 0.7]],  # never: last frame, class 1
            [[0.92, 0.08], [0.1, 0.9], [0.5, 0.5], [0.5, 0.5]],  # confident at 0 (class 0)
            [[0.5, 0.5], [0.5, 0.5], [0.5, 0.5], [0.01, 0.99]],  # confident only at the end
        ]
    )
    d = decide(logits, threshold=0.9)
    assert d.frame.tolist() == [1, 3, 0, 3]
    assert d.pred.tolist() == [1, 1, 0, 1]
    assert d.early.tolist() == [True, False, True, True]
    assert d.frame.dtype == torch.long and d.early.dtype == torch.bool
    lenient = decide(logits, threshold=0.65)
    assert lenient.frame.tolist() == [1, 1, 0, 3]
    assert lenient.pred.tolist() == [1, 0, 0, 1]
    assert lenient.early.all()


def test_decide_rejects_bad_thresholds_and_shapes():
    with pytest.raises(MLError, match=r"\(0, 1\]"):
        decide(torch.zeros(1, 2, 2), threshold=1.5)
    with pytest.raises(MLError, match=r"\(B, T, K\)"):
        decide(torch.zeros(2, 2), threshold=0.9)


def test_classifier_decide_uses_the_head_threshold():
    model = build_video_classifier(
        extractor=ExtractorConfig(name="transformer", size="tiny"), head=HeadConfig(threshold=0.5)
    )
    d = model.decide(_clip(batch=3))
    assert d.early.all() and (d.frame == 0).all()  # a 2-class max prob is always >= 0.5


# --------------------------------------------------------------------------- learning


@pytest.mark.parametrize("name", EXTRACTOR_NAMES)
def test_tiny_classifier_overfits_random_clips_with_random_labels(name):
    model = build_video_classifier(
        extractor=ExtractorConfig(name=name, size="tiny"), head=HeadConfig()
    )
    clips, labels = torch.randn(16, 1, T, H, W), torch.randint(0, 2, (16,))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    accuracy = 0.0
    for _ in range(150):
        out = model(clips)
        accuracy = float((out.logits[:, -1].argmax(-1) == labels).float().mean())
        if accuracy >= 0.9:
            break
        loss = nn.functional.cross_entropy(out.logits.flatten(0, 1), labels.repeat_interleave(T))
        opt.zero_grad()
        (loss + model.aux_loss).backward()
        opt.step()
    assert accuracy >= 0.9


def test_lstm_gives_one_value_per_step_and_overfits_a_tiny_batch():
    model = build_lstm(config=LSTMConfig(input_size=5, hidden=32))
    x, y = torch.randn(4, 20, 5), torch.randn(4, 20)
    assert model(x).shape == (4, 20)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = last = None
    for _ in range(100):
        loss = nn.functional.mse_loss(model(x), y)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
        last = loss.item()
    assert last < first / 5


def test_stacked_lstm_with_dropout_builds():
    model = build_lstm(config=LSTMConfig(input_size=3, hidden=8, layers=2, dropout=0.1))
    assert model(torch.randn(2, 7, 3)).shape == (2, 7)
    with pytest.raises(MLError, match=r"\(B, L, 3\)"):
        model(torch.randn(2, 7, 4))


# --------------------------------------------------------------------------- configs


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: ExtractorConfig(name="resnet"),
            "set name to one of i3d, slowfast, magvit, transformer",
        ),
        (lambda: ExtractorConfig(name="i3d", size="huge"), "set size to one of tiny, small, base"),
        (lambda: ExtractorConfig(name="i3d", frames=0), "frames must be an integer >= 1"),
        (lambda: ExtractorConfig(name="i3d", in_channels=1.5), "in_channels must be an integer"),
        (lambda: ExtractorConfig(name="i3d", feature_dim=True), "feature_dim must be an integer"),
        (lambda: ExtractorConfig(name="slowfast", alpha=32), "use alpha <= frames"),
        (lambda: ExtractorConfig(name="slowfast", beta=0), r"beta must lie in \(0, 1\]"),
        (
            lambda: ExtractorConfig(name="magvit", codebook_size=1),
            "codebook_size must be an integer >= 2",
        ),
        (lambda: ExtractorConfig(name="magvit", commitment=-1), "commitment must be >= 0"),
        (
            lambda: ExtractorConfig(name="magvit", entropy_weight=-0.1),
            "entropy_weight must be >= 0",
        ),
        (lambda: ExtractorConfig(name="magvit", patch_size=6), "power of two"),
        (lambda: ExtractorConfig(name="transformer", height=36), "not both multiples of 8"),
        (lambda: ExtractorConfig(name="transformer", dropout=1.0), r"dropout must lie in \[0, 1\)"),
        (lambda: HeadConfig(num_classes=1), "num_classes must be an integer >= 2"),
        (lambda: HeadConfig(threshold=0), r"threshold .* must lie in \(0, 1\]"),
        (lambda: HeadConfig(hidden=0), "hidden must be an integer >= 1"),
        (lambda: LSTMConfig(hidden=0), "hidden must be an integer >= 1"),
        (lambda: LSTMConfig(dropout=0.2), "set layers >= 2 or dropout = 0"),
        (
            lambda: ExtractorConfig.from_dict({"name": "i3d", "widht": 3}),
            "unknown ExtractorConfig field",
        ),
        (lambda: ExtractorConfig.from_dict({"size": "tiny"}), "cannot build ExtractorConfig"),
    ],
)
def test_bad_config_values_raise_a_helpful_error(make, message):
    with pytest.raises(MLError, match=message):
        make()


def test_configs_round_trip_through_json():
    configs = [
        ExtractorConfig(name="magvit", size="tiny", codebook_size=64),
        HeadConfig(num_classes=3, threshold=0.8),
        LSTMConfig(layers=2, dropout=0.1),
    ]
    for config in configs:
        data = json.loads(json.dumps(dataclasses.asdict(config)))
        assert type(config).from_dict(data) == config
    with pytest.raises(dataclasses.FrozenInstanceError):
        configs[0].size = "base"


def test_a_clip_that_does_not_fit_the_config_is_refused():
    model = build_extractor(config=ExtractorConfig(name="i3d", size="tiny"))
    with pytest.raises(MLError, match="unsqueeze"):
        model(torch.randn(2, T, H, W))
    with pytest.raises(MLError, match="T<=16"):
        model(torch.randn(2, 1, T + 1, H, W))
    with pytest.raises(MLError, match="32, 32"):
        model(torch.randn(2, 1, T, 16, 16))


def test_classifier_refuses_a_head_of_another_width_and_stores_its_configs():
    extractor = build_extractor(config=ExtractorConfig(name="i3d", size="tiny", feature_dim=32))
    with pytest.raises(MLError, match="same feature_dim"):
        VideoClassifier(
            extractor=extractor, head=EarlyDecisionHead(feature_dim=16, config=HeadConfig())
        )
    model = VideoClassifier(
        extractor=extractor, head=EarlyDecisionHead(feature_dim=32, config=HeadConfig())
    )
    stored = json.loads(json.dumps(model.config_dict()))
    assert ExtractorConfig.from_dict(stored["extractor"]) == extractor.config
    assert HeadConfig.from_dict(stored["head"]) == HeadConfig()


def test_sizes_grow_and_count_parameters_counts_every_element():
    for name in EXTRACTOR_NAMES:
        counts = [
            count_parameters(build_extractor(config=ExtractorConfig(name=name, size=size)))
            for size in SIZE_NAMES
        ]
        assert counts[0] < counts[1] < counts[2], (name, counts)
    linear = nn.Linear(3, 4)
    linear.bias.requires_grad_(False)
    assert count_parameters(linear) == 16
    assert count_parameters(linear, trainable_only=True) == 12


@pytest.mark.parametrize("name", EXTRACTOR_NAMES)
def test_training_is_bitwise_deterministic(name):
    """Resuming from a checkpoint must reproduce an uninterrupted run: no racy kernels."""
    clips, labels = _clip(batch=8), torch.randint(0, 2, (8,))
    runs = []
    for _ in range(2):
        torch.manual_seed(1)
        model = build_video_classifier(
            extractor=ExtractorConfig(name=name, size="tiny"), head=HeadConfig()
        )
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(3):
            out = model(clips)
            loss = nn.functional.cross_entropy(
                out.logits.flatten(0, 1), labels.repeat_interleave(T)
            )
            opt.zero_grad()
            (loss + model.aux_loss).backward()
            opt.step()
        runs.append(model.state_dict())
    for key, value in runs[0].items():
        assert torch.equal(value, runs[1][key]), f"{key} differs between identical runs"


def test_a_model_copies_and_pickles_after_a_forward():
    model = build_video_classifier(
        extractor=ExtractorConfig(name="magvit", size="tiny"), head=HeadConfig()
    )
    clip = _clip()
    logits = model(clip).logits  # leaves a graph-attached aux loss behind
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert clone.aux_loss.item() == 0.0
        assert torch.equal(clone(clip).logits, logits)
    assert model.aux_loss.requires_grad  # the original keeps its loss for backward
