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

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .atomic import save_torch_atomic
from .data import dataset_info
from .errors import MLError
from .models.build import count_parameters
from .results import RESULTS_NAME, Timings, TrainingResults, write_training_results
from .train_config import TrainConfig
from .train_task import _build_task, _evaluate_loss, _evaluate_test, _loader, _Task

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


# --------------------------------------------------------------------------- fit


@dataclass
class _Session:
    """What one ``fit`` trains with, and its state so far (resumed from a checkpoint)."""

    config: TrainConfig
    task: _Task
    device: torch.device
    use_amp: bool
    amp_dtype: torch.dtype
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    steps_per_epoch: int
    info: Any  # the dataset's info record
    ckpt_path: Path
    history: dict[str, dict[str, list[float]]] = field(
        default_factory=lambda: {"train": {}, "val": {}}
    )
    best: dict = field(  # best epoch, its val loss and weights, epochs without improvement
        default_factory=lambda: {
            "epoch": 0,
            "val_loss": float("inf"),
            "bad_epochs": 0,
            "state": None,
        }
    )
    epoch_seconds: list[float] = field(default_factory=list)
    start_epoch: int = 1

    @property
    def model(self) -> nn.Module:
        return self.task.model


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
    out_dir = Path(out_dir)
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else out_dir
    for folder in (out_dir, ckpt_dir):
        folder.mkdir(parents=True, exist_ok=True)
    s = _start(config, ckpt_dir / CHECKPOINT_NAME, resume=resume)
    for cb in callbacks:
        cb.on_train_start(config=config, start_epoch=s.start_epoch, total_epochs=config.epochs)
    stopped_early = s.best["bad_epochs"] >= config.patience
    for epoch in range(s.start_epoch, config.epochs + 1):
        if stopped_early:
            break
        t0 = time.perf_counter()
        train_m = _train_epoch(s, epoch, callbacks)
        val_m = _evaluate_loss(s.task, s.device, config, s.amp_dtype if s.use_amp else None)
        stopped_early = _end_epoch(s, epoch, train_m, val_m, started=t0)
        for cb in callbacks:
            cb.on_epoch_end(epoch=epoch, train=train_m, val=val_m, best_epoch=s.best["epoch"])
    results = _finish(s, ckpt_dir, stopped_early=stopped_early)
    write_training_results(out_dir / RESULTS_NAME, results)
    for cb in callbacks:
        cb.on_train_end(results=results)
    return results


def _start(config: TrainConfig, ckpt_path: Path, *, resume: bool) -> _Session:
    """Seeded model, optimizer, schedule and scaler; with ``resume`` and a checkpoint of the
    same config, their state, the history and the RNG states from it."""
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
    s = _Session(
        config=config,
        task=task,
        device=device,
        use_amp=use_amp,
        amp_dtype=amp_dtype,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        steps_per_epoch=steps_per_epoch,
        info=info,
        ckpt_path=ckpt_path,
    )
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
        s.history, s.best, s.epoch_seconds = ckpt["history"], ckpt["best"], ckpt["epoch_seconds"]
        s.start_epoch = ckpt["epoch"] + 1
        _set_rng_state(ckpt["rng"])
    return s


def _train_epoch(s: _Session, epoch: int, callbacks: Sequence[Callback]) -> dict[str, float]:
    """One pass over the training set (clipped, scaled, stepped per batch); its metrics."""
    config, model, device = s.config, s.model, s.device
    model.train()
    loader = _loader(
        s.task.datasets["train"],
        batch_size=config.batch_size,
        seed=config.seed * 100_003 + epoch,
        device=device,
    )
    loss_sum, n, stats = 0.0, 0, []
    for i, batch in enumerate(loader):
        with torch.autocast(device.type, dtype=s.amp_dtype, enabled=s.use_amp):
            loss, st = s.task.loss_and_stats(batch, device)
        s.optimizer.zero_grad(set_to_none=True)
        s.scaler.scale(loss).backward()
        s.scaler.unscale_(s.optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        s.scaler.step(s.optimizer)
        s.scaler.update()
        s.scheduler.step()
        bs = len(batch[0])
        loss_value = float(loss.detach())
        loss_sum += loss_value * bs
        n += bs
        stats.append(st)
        for cb in callbacks:
            cb.on_step(epoch=epoch, step=(epoch - 1) * s.steps_per_epoch + i + 1, loss=loss_value)
    train_m = s.task.epoch_metrics(loss_sum, n, stats)
    train_m["lr"] = s.optimizer.param_groups[0]["lr"]
    return train_m


def _end_epoch(
    s: _Session, epoch: int, train_m: dict[str, float], val_m: dict[str, float], *, started: float
) -> bool:
    """History, best epoch and early stopping, then the checkpoint; whether to stop early."""
    config = s.config
    for split, m in (("train", train_m), ("val", val_m)):
        for key, value in m.items():
            s.history[split].setdefault(key, []).append(value)
    if val_m["loss"] < s.best["val_loss"] - config.min_delta:
        s.best = {
            "epoch": epoch,
            "val_loss": val_m["loss"],
            "bad_epochs": 0,
            "state": {k: v.detach().cpu().clone() for k, v in s.model.state_dict().items()},
        }
    else:
        s.best["bad_epochs"] += 1
    stopped_early = s.best["bad_epochs"] >= config.patience
    s.epoch_seconds.append(time.perf_counter() - started)
    save_torch_atomic(
        s.ckpt_path,
        {
            "format": CHECKPOINT_FORMAT,
            "config": config.to_dict(),
            "epoch": epoch,
            "model": s.model.state_dict(),
            "optimizer": s.optimizer.state_dict(),
            "scheduler": s.scheduler.state_dict(),
            "scaler": s.scaler.state_dict(),
            "history": s.history,
            "best": s.best,
            "epoch_seconds": s.epoch_seconds,
            "rng": _rng_state(),
            "dataset_info": s.info.to_dict(),
        },
    )
    return stopped_early


def _finish(s: _Session, ckpt_dir: Path, *, stopped_early: bool) -> TrainingResults:
    """The best weights saved as ``best_model.pt``; the test split sees them, or the last
    epoch's weights when ``config.test_weights`` is ``"last"``."""
    config, model, history, best = s.config, s.model, s.history, s.best
    num_epochs = len(history["train"].get("loss", []))
    last = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    save_torch_atomic(
        ckpt_dir / BEST_MODEL_NAME,
        {"format": CHECKPOINT_FORMAT, "config": config.to_dict(), "model": model.state_dict(),
         "epoch": best["epoch"]},
    )  # fmt: skip
    if config.test_weights == "last":
        model.load_state_dict(last)
    t_eval = time.perf_counter()
    test = _evaluate_test(s.task, s.device, config)
    train_seconds = sum(s.epoch_seconds)
    return TrainingResults(
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
        dataset_info=s.info.to_dict(),
        parameters=count_parameters(model),
        device=str(s.device),
        timings=Timings(
            train_seconds=train_seconds,
            eval_seconds=time.perf_counter() - t_eval,
            epoch_seconds=s.epoch_seconds,
            samples_per_second=len(s.task.datasets["train"]) * num_epochs / train_seconds
            if train_seconds
            else 0.0,
        ),
    )


def load_checkpoint(path: Path) -> dict:
    """Load a checkpoint written by ``fit`` and check that it describes itself."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many kinds for a corrupt file
        raise MLError(f"{path}: cannot load checkpoint ({exc}); delete it to start over") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise MLError(f"{path}: not a tether checkpoint (format {ckpt.get('format')!r})")
    return ckpt
