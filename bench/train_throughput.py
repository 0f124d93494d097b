"""Training throughput (clips/s, forward + backward + AdamW step) per extractor.

Baseline: the i3d extractor (plain inflated 3D convolutions), measured in the same run; each
extractor is reported as clips/s and as a ratio to it. Also measures how fast the data
generator makes clips, to show it is not the bottleneck. On CUDA it runs with AMP (bf16).

    .venv/bin/python bench/train_throughput.py [--size small] [--batch 32] [--steps 20]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from tether.ml.data import TrackConfig, make_track_clip
from tether.ml.models import ExtractorConfig, HeadConfig, build_video_classifier, count_parameters
from tether.ml.train import resolve_device

NAMES = ("i3d", "slowfast", "magvit", "transformer")


def bench_model(name: str, *, size: str, batch: int, steps: int, device, amp: bool) -> dict:
    torch.manual_seed(0)
    model = build_video_classifier(
        extractor=ExtractorConfig(name=name, size=size), head=HeadConfig()
    ).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    cfg = TrackConfig()
    clips = torch.stack([make_track_clip(cfg, "train", i)[0] for i in range(batch)]).to(device)
    labels = torch.tensor([i % 2 for i in range(batch)], device=device)
    dtype = torch.bfloat16

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=amp):
            out = model(clips)
            b, t, k = out.logits.shape
            loss = (
                torch.nn.functional.cross_entropy(
                    out.logits.reshape(b * t, k).float(), labels.repeat_interleave(t)
                )
                + model.aux_loss
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    times = []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"name": name, "params": count_parameters(model), "clips_per_s": batch / med}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", default="small")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    device = resolve_device(args.device)
    amp = device.type == "cuda"
    cfg = TrackConfig()
    t0 = time.perf_counter()
    for i in range(512):
        make_track_clip(cfg, "train", i)
    gen_rate = 512 / (time.perf_counter() - t0)
    where = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor()
    print(
        f"device={device} ({where}), torch {torch.__version__}, threads={torch.get_num_threads()}"
    )
    print(f"size={args.size} batch={args.batch} T=16 32x32 amp={'bf16' if amp else 'off'}")
    print(f"data generator: {gen_rate:,.0f} clips/s (one process)")
    rows = [
        bench_model(n, size=args.size, batch=args.batch, steps=args.steps, device=device, amp=amp)
        for n in NAMES
    ]
    base = rows[0]["clips_per_s"]
    print("| extractor | parameters | clips/s | vs i3d |")
    print("| --- | ---: | ---: | ---: |")
    for r in rows:
        ratio = r["clips_per_s"] / base
        print(f"| {r['name']} | {r['params']:,} | {r['clips_per_s']:,.0f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
