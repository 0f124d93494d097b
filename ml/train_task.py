"""What ``fit`` trains and evaluates: the task's model and datasets (classification of
track persistence, or regression of frequencies), its loss and epoch metrics, the loaders,
and the validation and test evaluations."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler

from .data import TRACK_CLASSES, FrequencyDataset, TrackPersistenceDataset
from .evaluate import (
    classification_metrics,
    early_decision_metrics,
    latency_ms_per_clip,
    regression_metrics,
)
from .models.build import build_lstm, build_video_classifier
from .results import ClassificationResults, RegressionResults
from .train_config import TrainConfig


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


def _loader(dataset, *, batch_size: int, seed: int | None, device: torch.device) -> DataLoader:
    """Shuffled by a generator seeded per epoch (``seed``), so resuming needs no loader state."""
    sampler = None
    if seed is not None:
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, pin_memory=device.type == "cuda"
    )


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
