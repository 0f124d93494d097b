"""The side-by-side timer of docs/benchmarks.md (tether watch vs wandb leet): start CMD in tmux
at 140x40, poll capture-pane until NEEDLE shows, print the wall time and peak RSS of the tree.
Usage: python bench/tui_leet_timer.py NAME NEEDLE CMD (ad hoc, run by hand)."""

import subprocess
import sys
import time

import psutil

name, cmd, needle = sys.argv[1], sys.argv[2], sys.argv[3]
t = time.monotonic()
subprocess.run(["tmux", "new-session", "-d", "-s", name, "-x", "140", "-y", "40", cmd])
pid = int(
    subprocess.check_output(["tmux", "list-panes", "-t", name, "-F", "#{pane_pid}"]).split()[0]
)
peak = 0
seen = None
while time.monotonic() - t < 60:
    try:
        p = psutil.Process(pid)
        rss = sum(q.memory_info().rss for q in [p, *p.children(recursive=True)])
        peak = max(peak, rss)
    except psutil.Error:
        pass
    if needle in subprocess.check_output(["tmux", "capture-pane", "-p", "-t", name]).decode():
        seen = time.monotonic() - t
        break
    time.sleep(0.05)
for _ in range(10):
    try:
        p = psutil.Process(pid)
        peak = max(peak, sum(q.memory_info().rss for q in [p, *p.children(recursive=True)]))
    except psutil.Error:
        pass
    time.sleep(0.1)
subprocess.run(["tmux", "kill-session", "-t", name])
print(name, "seen_s", seen and round(seen, 2), "peak_rss_mb", round(peak / 2**20, 1))
