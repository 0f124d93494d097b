"""The training engine: ``fit`` trains a built-in model on a built-in workload, resumably.

- AdamW, cosine annealing (per step), gradient clipping, early stopping on validation loss
  (``patience``, ``min_delta``), AMP on CUDA, device chosen automatically.
- ``checkpoint.pt`` after every epoch holds the model, optimizer, scheduler, AMP scaler,
  epoch, history, early-stopping state, RNG states and the config: it describes itself, and
  ``fit`` resumes from it exactly (same weights, same history as an uninterrupted run).
- Callbacks receive progress (the cluster's reporter plugs in here; ``ml`` knows no Ray).
- Writes ``training_results.json`` (schema: docs/training_results.md) and ``best_model.pt``.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler

from .atomic import save_torch_atomic
from .data import (
    TRACK_CLASSES,
    FrequencyDataset,
    TrackPersistenceDataset,
    dataset_info,
)
from .errors import MLError
from .evaluate import (
    classification_metrics,
    early_decision_metrics,
    latency_ms_per_clip,
    regression_metrics,
)
from .models.build import build_lstm, build_video_classifier, count_parameters
from .results import (
    RESULTS_NAME,
    ClassificationResults,
    RegressionResults,
    Timings,
    TrainingResults,
    write_training_results,
)
from .train_config import TrainConfig

CHECKPOINT_NAME = "checkpoint.pt"
BEST_MODEL_NAME = "best_model.pt"
CHECKPOINT_FORMAT = "tether-checkpoint/1"


class Callback:
    """Progress hooks; override what you need. Must not raise unless it means to stop."""

    def on_train_start(self, *, config: TrainConfig, start_epoch: int, total_epochs: int) -> None:
        pass

    def on_step(self, *, epoch: int, step: int, loss: float) -> None:
        pass

    def on_epoch_end(
        self, *, epoch: int, train: dict[str, float], val: dict[str, float], best_epoch: int
    ) -> None:
        pass

    def on_train_end(self, *, results: TrainingResults) -> None:
        pass


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise MLError(f"unknown device {name!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MLError(f"device {name!r} asked for, but CUDA is not available here; use 'auto'")
    return device


# --------------------------------------------------------------------------- task adapters


@dataclass
class _Task:
    """What differs between classification and regression, in one place."""

    config: TrainConfig
    model: nn.Module
    datasets: dict[str, Any]
    group_names: list[str]

    @property
    def classification(self) -> bool:
        return self.config.task == "track_persistence"

    def loss_and_stats(self, batch: Sequence[torch.Tensor], device: torch.device):
        """(loss, stats for the epoch: final-frame predictions or squared errors)."""
        if self.classification:
            clips, labels = batch[0].to(device), batch[1].to(device)
            out = self.model(clips)
            logits = out.logits  # (B, T, K)
            b, t, k = logits.shape
            per_frame = nn.functional.cross_entropy(
                logits.reshape(b * t, k).float(), labels.repeat_interleave(t)
            )
            loss = per_frame + self.model.aux_loss
            return loss, (logits[:, -1].argmax(dim=-1).detach(), labels)
        x, y = batch[0].to(device), batch[1].to(device)
        pred = self.model(x).float()
        loss = nn.functional.mse_loss(pred, y)
        return loss, (pred.detach(), y)

    def epoch_metrics(self, loss_sum: float, n: int, stats: list) -> dict[str, float]:
        metrics = {"loss": loss_sum / max(n, 1)}
        if self.classification:
            pred = torch.cat([s[0] for s in stats]).cpu()
            true = torch.cat([s[1] for s in stats]).cpu()
            m = classification_metrics(y_true=true, y_pred=pred, class_names=self.group_names)
            metrics.update(accuracy=m.accuracy, f1=m.f1)
        else:
            err = torch.cat([(s[0] - s[1]).flatten() for s in stats]).cpu()
            metrics.update(mse=float((err**2).mean()), mae=float(err.abs().mean()))
        return metrics


def _build_task(config: TrainConfig) -> _Task:
    if config.task == "track_persistence":
        data_cfg = config.track
        ext = config.extractor
        if (ext.frames, ext.height, ext.width) != (
            data_cfg.frames,
            data_cfg.height,
            data_cfg.width,
        ):
            ext = dataclasses.replace(
                ext, frames=data_cfg.frames, height=data_cfg.height, width=data_cfg.width
            )
        model = build_video_classifier(extractor=ext, head=config.head)
        datasets = {
            s: TrackPersistenceDataset(config=data_cfg, split=s) for s in ("train", "val", "test")
        }
        groups = list(TRACK_CLASSES)
    else:
        data_cfg = config.frequency
        lstm = dataclasses.replace(config.lstm, input_size=data_cfg.input_size)
        model = build_lstm(config=lstm)
        datasets = {s: FrequencyDataset(config=data_cfg, split=s) for s in ("train", "val", "test")}
        groups = [f"{f:g}Hz" for f in data_cfg.freqs]
    return _Task(config=config, model=model, datasets=datasets, group_names=groups)


# --------------------------------------------------------------------------- RNG state


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _loader(dataset, *, batch_size: int, seed: int | None, device: torch.device) -> DataLoader:
    """Shuffled by a generator seeded per epoch (``seed``), so resuming needs no loader state."""
    sampler = None
    if seed is not None:
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, pin_memory=device.type == "cuda"
    )


# --------------------------------------------------------------------------- fit


def fit(
    *,
    config: TrainConfig,
    out_dir: Path,
    checkpoint_dir: Path | None = None,
    callbacks: Sequence[Callback] = (),
    resume: bool = True,
) -> TrainingResults:
    """Train, checkpoint every epoch, evaluate the best model on the test split.

    ``out_dir`` receives the lightweight results (``training_results.json``); checkpoints
    (``checkpoint.pt``, ``best_model.pt``) go to ``checkpoint_dir`` (default: ``out_dir``),
    so results folders can stay free of them. With ``resume`` and a ``checkpoint.pt`` whose
    config matches, training continues after the last completed epoch. Raises ``MLError``
    when the checkpoint belongs to a different config (use another directory or
    ``resume=False``).
    """
    out_dir = Path(out_dir)
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else out_dir
    for folder in (out_dir, ckpt_dir):
        folder.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    use_amp = config.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16

    torch.manual_seed(config.seed)
    random.seed(config.seed)
    task = _build_task(config)
    model = task.model.to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    steps_per_epoch = -(-len(task.datasets["train"]) // config.batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=config.epochs * steps_per_epoch
    )
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    info = dataset_info(config.track if task.classification else config.frequency)

    history: dict[str, dict[str, list[float]]] = {"train": {}, "val": {}}
    best = {"epoch": 0, "val_loss": float("inf"), "bad_epochs": 0, "state": None}
    epoch_seconds: list[float] = []
    start_epoch = 1
    ckpt_path = ckpt_dir / CHECKPOINT_NAME
    if resume and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path)
        if ckpt["config"] != config.to_dict():
            raise MLError(
                f"{ckpt_path} was written by a different config; "
                "use another checkpoint_dir, or resume=False to start over"
            )
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        history, best, epoch_seconds = ckpt["history"], ckpt["best"], ckpt["epoch_seconds"]
        start_epoch = ckpt["epoch"] + 1
        _set_rng_state(ckpt["rng"])

    for cb in callbacks:
        cb.on_train_start(config=config, start_epoch=start_epoch, total_epochs=config.epochs)
    stopped_early = best["bad_epochs"] >= config.patience
    epoch = start_epoch - 1
    samples_seen = 0
    for epoch in range(start_epoch, config.epochs + 1):
        if stopped_early:
            break
        t0 = time.perf_counter()
        model.train()
        loader = _loader(
            task.datasets["train"],
            batch_size=config.batch_size,
            seed=config.seed * 100_003 + epoch,
            device=device,
        )
        loss_sum, n, stats = 0.0, 0, []
        for i, batch in enumerate(loader):
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                loss, st = task.loss_and_stats(batch, device)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            bs = len(batch[0])
            loss_value = float(loss.detach())
            loss_sum += loss_value * bs
            n += bs
            stats.append(st)
            for cb in callbacks:
                cb.on_step(epoch=epoch, step=(epoch - 1) * steps_per_epoch + i + 1, loss=loss_value)
        samples_seen += n
        train_m = task.epoch_metrics(loss_sum, n, stats)
        train_m["lr"] = optimizer.param_groups[0]["lr"]
        val_m = _evaluate_loss(task, device, config, amp_dtype if use_amp else None)
        for split, m in (("train", train_m), ("val", val_m)):
            for key, value in m.items():
                history[split].setdefault(key, []).append(value)
        if val_m["loss"] < best["val_loss"] - config.min_delta:
            best = {
                "epoch": epoch,
                "val_loss": val_m["loss"],
                "bad_epochs": 0,
                "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            }
        else:
            best["bad_epochs"] += 1
        stopped_early = best["bad_epochs"] >= config.patience
        epoch_seconds.append(time.perf_counter() - t0)
        save_torch_atomic(
            ckpt_path,
            {
                "format": CHECKPOINT_FORMAT,
                "config": config.to_dict(),
                "epoch": epoch,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "history": history,
                "best": best,
                "epoch_seconds": epoch_seconds,
                "rng": _rng_state(),
                "dataset_info": info.to_dict(),
            },
        )
        for cb in callbacks:
            cb.on_epoch_end(epoch=epoch, train=train_m, val=val_m, best_epoch=best["epoch"])

    num_epochs = len(history["train"].get("loss", []))
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    save_torch_atomic(
        ckpt_dir / BEST_MODEL_NAME,
        {"format": CHECKPOINT_FORMAT, "config": config.to_dict(), "model": model.state_dict(),
         "epoch": best["epoch"]},
    )  # fmt: skip
    t_eval = time.perf_counter()
    test = _evaluate_test(task, device, config)
    train_seconds = sum(epoch_seconds)
    results = TrainingResults(
        task=config.task,
        model=config.model_name,
        num_epochs=num_epochs,
        best_epoch=best["epoch"],
        best_val_loss=best["val_loss"] if best["epoch"] else None,
        stopped_early=stopped_early and num_epochs < config.epochs,
        train_history=history["train"] or {"loss": []},
        val_history=history["val"] or {"loss": []},
        test_results=test,
        model_config=config.to_dict(),
        dataset_info=info.to_dict(),
        parameters=count_parameters(model),
        device=str(device),
        timings=Timings(
            train_seconds=train_seconds,
            eval_seconds=time.perf_counter() - t_eval,
            epoch_seconds=epoch_seconds,
            samples_per_second=len(task.datasets["train"]) * num_epochs / train_seconds
            if train_seconds
            else 0.0,
        ),
    )
    write_training_results(out_dir / RESULTS_NAME, results)
    for cb in callbacks:
        cb.on_train_end(results=results)
    return results


def load_checkpoint(path: Path) -> dict:
    """Load a checkpoint written by ``fit`` and check that it describes itself."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many kinds for a corrupt file
        raise MLError(f"{path}: cannot load checkpoint ({exc}); delete it to start over") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise MLError(f"{path}: not a tether checkpoint (format {ckpt.get('format')!r})")
    return ckpt


@torch.no_grad()
def _evaluate_loss(task: _Task, device, config: TrainConfig, amp_dtype) -> dict[str, float]:
    task.model.eval()
    loader = _loader(
        task.datasets["val"], batch_size=config.eval_batch_size, seed=None, device=device
    )
    loss_sum, n, stats = 0.0, 0, []
    for batch in loader:
        with torch.autocast(
            device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
        ):
            loss, st = task.loss_and_stats(batch, device)
        loss_sum += float(loss) * len(batch[0])
        n += len(batch[0])
        stats.append(st)
    return task.epoch_metrics(loss_sum, n, stats)


@torch.no_grad()
def _evaluate_test(task: _Task, device, config: TrainConfig):
    model = task.model.eval()
    ds = task.datasets["test"]
    loader = _loader(ds, batch_size=config.eval_batch_size, seed=None, device=device)
    if task.classification:
        logits, labels, attention = [], [], None
        for clips, y in loader:
            out = model(clips.to(device))
            logits.append(out.logits.float().cpu())
            labels.append(y)
            batch_attention = out.attention.float().sum(dim=0).cpu()
            attention = batch_attention if attention is None else attention + batch_attention
        all_logits, all_labels = torch.cat(logits), torch.cat(labels)
        m = classification_metrics(
            y_true=all_labels, y_pred=all_logits[:, -1].argmax(-1), class_names=task.group_names
        )
        early = early_decision_metrics(
            logits=all_logits, labels=all_labels, threshold=config.head.threshold
        )
        return ClassificationResults(
            **m.to_dict(),
            early_decision=early.to_dict(),
            latency_ms_per_clip=latency_ms_per_clip(model, sample=ds[0][0].to(device)),
            attention_mean=(attention / len(ds)).tolist(),
        )
    preds, ys, groups = [], [], []
    for x, y, g in loader:
        preds.append(model(x.to(device)).float().cpu())
        ys.append(y)
        groups.append(g)
    m = regression_metrics(
        y_true=torch.cat(ys), y_pred=torch.cat(preds), groups=torch.cat(groups),
        group_names=task.group_names,
    )  # fmt: skip
    return RegressionResults(
        **m.to_dict(), latency_ms_per_clip=latency_ms_per_clip(model, sample=ds[0][0].to(device))
    )
