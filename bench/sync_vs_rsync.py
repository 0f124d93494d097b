"""The result puller (``client.sync.pull``) against ``rsync -a`` over ssh, on loopback.

Both pull from the same head-side trees through the same OpenSSH sshd on 127.0.0.1 (the
test suite's server, tests/sshdserver.py), with the same include rules (tether's defaults)
and size cap, into their own destination folders, interleaved, in the same run:

  (a) initial pull of 2,000 files of ~10 KB (a fresh destination each time);
  (b) no-op pull of 10,000 files (destination already in sync);
  (c) pull after 1% of those 10,000 files changed (the same 100 files changed for both).

Each timing includes opening the SSH connection (rsync spawns ssh; tether opens a fresh
SSHRemote), like a ``tether pull`` from the command line. Medians of ``--repeats`` runs.
Goals: (a) and (c) within 1.5x of rsync, (b) no slower than rsync.

    .venv/bin/python bench/sync_vs_rsync.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from sshdserver import find_sshd, start_sshd, stop_sshd  # noqa: E402

from tether.client.config import SyncRules  # noqa: E402
from tether.client.remote import SSHRemote  # noqa: E402
from tether.client.sync import pull  # noqa: E402


def make_tree(root: Path, *, files: int, size: int, seed: int) -> list[Path]:
    rng = random.Random(seed)
    exts = (".json", ".txt", ".csv", ".log", ".md")
    out = []
    for i in range(files):
        folder = root / f"d{i // 100:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        p = folder / f"f{i:05d}{exts[i % len(exts)]}"
        p.write_bytes(rng.randbytes(size))
        out.append(p)
    return out


def rsync_args(rules: SyncRules, ssh_config: Path, alias: str, src: Path, dst: Path) -> list[str]:
    args = ["rsync", "-a", "-e", f"ssh -F {ssh_config}", "--include=*/"]
    args += [f"--include={g}" for g in rules.include] + ["--exclude=*"]
    args += [f"--max-size={int(rules.max_file_mb)}m", "--prune-empty-dirs"]
    return [*args, f"{alias}:{src}/", f"{dst}/"]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if shutil.which("rsync") is None:
        raise SystemExit("rsync is not installed: apt-get install -y rsync (benchmark only)")
    binary = find_sshd()
    if binary is None:
        raise SystemExit("no sshd: apt-get install -y openssh-server")
    work = Path(tempfile.mkdtemp(prefix="tb-sync-", dir="/tmp"))
    (work / "sshd").mkdir()
    sshd, proc = start_sshd(work / "sshd", binary)
    rules = SyncRules()
    py = sys.executable

    def ours(src: Path, dst: Path) -> None:
        remote = SSHRemote(host=sshd.host_alias, ssh_config=sshd.ssh_config)
        try:
            pull(remote=remote, python=py, remote_root=str(src), dest=dst, rules=rules)
        finally:
            remote.close()

    def theirs(src: Path, dst: Path) -> None:
        dst.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            rsync_args(rules, sshd.ssh_config, sshd.host_alias, src, dst),
            check=True, capture_output=True,
        )  # fmt: skip

    rows = []
    try:
        # (a) initial pull of 2,000 x 10 KB
        small = work / "small"
        make_tree(small, files=2000, size=10_000, seed=1)
        a_ours, a_rsync = [], []
        for i in range(args.repeats):
            a_rsync.append(timed(lambda i=i: theirs(small, work / f"a-rsync-{i}")))
            a_ours.append(timed(lambda i=i: ours(small, work / f"a-ours-{i}")))
        rows.append(("(a) initial pull, 2,000 x 10 KB", a_rsync, a_ours, 1.5))

        # (b) no-op pull of 10,000 files; (c) 1% of them changed
        big = work / "big"
        files = make_tree(big, files=10_000, size=2_000, seed=2)
        d_ours, d_rsync = work / "b-ours", work / "b-rsync"
        theirs(big, d_rsync)
        ours(big, d_ours)
        b_ours, b_rsync, c_ours, c_rsync = [], [], [], []
        rng = random.Random(3)
        for _ in range(args.repeats):
            b_rsync.append(timed(lambda: theirs(big, d_rsync)))
            b_ours.append(timed(lambda: ours(big, d_ours)))
            for p in rng.sample(files, len(files) // 100):
                p.write_bytes(rng.randbytes(2_000))
            c_rsync.append(timed(lambda: theirs(big, d_rsync)))
            c_ours.append(timed(lambda: ours(big, d_ours)))
        rows.append(("(b) no-op pull, 10,000 files", b_rsync, b_ours, 1.0))
        rows.append(("(c) 1% of 10,000 changed", c_rsync, c_ours, 1.5))
        # Both destinations hold the same bytes.
        for d in (d_ours, d_rsync):
            assert sorted(p.relative_to(d) for p in d.rglob("*") if p.is_file() and
                          not p.name.startswith(".tether-sync")) == sorted(
                p.relative_to(big) for p in files
            ), d  # fmt: skip
    finally:
        stop_sshd(proc)
        shutil.rmtree(work, ignore_errors=True)

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; {args.repeats} runs each")
    print("| case | rsync median s | tether median s | tether / rsync | goal | met |")
    print("|---|---:|---:|---:|---:|---|")
    for name, r, o, goal in rows:
        mr, mo = statistics.median(r), statistics.median(o)
        met = "yes" if mo <= goal * mr else "NO"
        print(f"| {name} | {mr:.3f} | {mo:.3f} | {mo / mr:.2f}x | <= {goal:g}x | {met} |")


if __name__ == "__main__":
    main()
