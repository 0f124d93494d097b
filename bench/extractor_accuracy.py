"""What each built-in model reaches on CPU, and in how long (the table in docs/models.md).

Trains the four extractors on the default track-persistence task and the LSTM on frequency
extraction with ``ml.train.fit`` (real runs, fixed seed), then prints a Markdown table.
Chance on track persistence is 50% (the classes are exactly balanced); the regression
baseline is predicting zero (MSE 0.5 for a unit sinusoid).

    .venv/bin/python bench/extractor_accuracy.py [--epochs 12] [--out /tmp/tether-acc]
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch

from tether.ml.data import FrequencyConfig, TrackConfig
from tether.ml.models import ExtractorConfig, LSTMConfig
from tether.ml.train import TrainConfig, fit

NAMES = ("i3d", "slowfast", "magvit", "transformer")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--size", default="small")
    p.add_argument("--train-size", type=int, default=2000)
    p.add_argument("--out", type=Path, default=Path("/tmp/tether-accuracy"))
    p.add_argument("--only", nargs="*", default=None)
    args = p.parse_args()
    print(f"CPU: {platform.processor() or platform.machine()}, threads={torch.get_num_threads()}")
    track = TrackConfig(train_size=args.train_size)
    rows = []
    for name in args.only or NAMES:
        config = TrainConfig(
            extractor=ExtractorConfig(name=name, size=args.size),
            track=track,
            epochs=args.epochs,
            device="cpu",
        )
        res = fit(config=config, out_dir=args.out / name, resume=False)
        t = res.test_results
        e = t.early_decision
        rows.append(
            f"| {name} | {res.parameters:,} | {t.accuracy:.1%} | {t.f1:.3f} | "
            f"{e.accuracy_at_decision:.1%} | {e.mean_decision_frame:.1f} / {e.frames} | "
            f"{e.compute_savings_pct:.0f}% | {res.best_epoch}/{res.num_epochs} | "
            f"{res.timings.train_seconds:.0f} s | {t.latency_ms_per_clip:.1f} ms |"
        )
        print(rows[-1], flush=True)
    print()
    print(
        "| extractor | parameters | test accuracy | macro F1 | accuracy at early decision "
        "| mean decision frame | compute saved | best/run epochs | train time | latency |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    print("\n".join(rows))
    if args.only is None or "lstm" in args.only:
        config = TrainConfig(
            task="frequency_extraction",
            lstm=LSTMConfig(hidden=64),
            frequency=FrequencyConfig(),
            epochs=args.epochs,
            lr=5e-3,
            device="cpu",
        )
        res = fit(config=config, out_dir=args.out / "lstm", resume=False)
        t = res.test_results
        print()
        print("| LSTM (hidden 64) | test MSE | " + " | ".join(t.per_group) + " | train time |")
        print("| --- | ---: | " + " | ".join("---:" for _ in t.per_group) + " | ---: |")
        groups = " | ".join(f"{v:.4f}" for v in t.per_group.values())
        secs = res.timings.train_seconds
        print(f"| {res.parameters:,} params | {t.mse:.4f} | {groups} | {secs:.0f} s |")


if __name__ == "__main__":
    main()
