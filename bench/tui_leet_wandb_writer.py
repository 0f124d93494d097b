"""Writes the offline W&B run that bench/tui_leet_timer.py opens with `wandb leet` (the same
100,000 steps of loss for 4 trials as bench/tui_replay.py; WANDB_MODE=offline). Run by hand;
wandb is not a tether dependency (pip install wandb)."""

import time

import wandb

t = time.time()
run = wandb.init(project="bench", mode="offline", dir="/tmp/leet100")
for step in range(1, 100001):
    d = {}
    for i, n in enumerate(("i3d-s0", "i3d-s1", "magvit-s0", "magvit-s1")):
        d[f"{n}/loss"] = round(0.2 + 2.0 / (1 + step / 500) + 0.01 * i, 5)
    run.log(d, step=step)
run.finish()
print("write_s", time.time() - t)
