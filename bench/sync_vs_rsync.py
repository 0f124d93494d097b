"""The result puller (``client.sync.pull``) against ``rsync -a`` over ssh, on loopback.

Both pull from the same head-side trees through the same OpenSSH sshd on 127.0.0.1 (the
test suite's server, tests/sshdserver.py), with the same include rules (tether's defaults)
and size cap, into their own destination folders, interleaved, in the same run:

  (a) initial pull of 2,000 files of ~10 KB (a fresh destination each time);
  (b) no-op pull of 10,000 files (destination already in sync);
  (c) pull after 1% of those 10,000 files changed (the same 100 files changed for both);
  (d) pull of a 50 MiB log grown by 1 MiB (both destinations hold the 50 MiB before; each
      run appends another 1 MiB). rsync's delta transfer checksums the whole file on both
      sides; tether hashes the prefix on the head and sends only the tail.

Each timing includes opening the SSH connection (rsync spawns ssh; tether opens a fresh
SSHRemote), like a ``tether pull`` from the command line. Medians of ``--repeats`` runs.
Goals: (a) and (c) within 1.5x of rsync, (b) and (d) no slower than rsync; for (d) also
the bytes tether's agent sent (its whole stdout: manifest, frame, trailer) at most 1.2x the
appended bytes.

    .venv/bin/python bench/sync_vs_rsync.py [--repeats 5] [--cases abcd]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from sshdserver import find_sshd, start_sshd, stop_sshd  # noqa: E402

from tether.client.config import SyncRules  # noqa: E402
from tether.client.remote import SSHRemote  # noqa: E402
from tether.client.sync import PullResult, pull  # noqa: E402

MIB = 1024 * 1024


@dataclass
class Row:
    name: str
    rsync: list[float]
    ours: list[float]
    goal: float
    notes: list[str] = field(default_factory=list)


class _Counted:
    """A reader that counts what the agent's stdout carried."""

    def __init__(self, stream: BinaryIO, counter: list[int]) -> None:
        self._stream, self._counter = stream, counter

    def read(self, n: int = -1) -> bytes:
        data = self._stream.read(n)
        self._counter[0] += len(data)
        return data

    def readline(self, limit: int = -1) -> bytes:
        data = self._stream.readline(limit)
        self._counter[0] += len(data)
        return data


class CountingRemote(SSHRemote):
    """An SSHRemote whose binary streams count the bytes that came from the head."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.received = [0]

    @contextmanager
    def open_binary(self, command, *, stdin=None, timeout=None) -> Iterator[BinaryIO]:
        with super().open_binary(command, stdin=stdin, timeout=timeout) as stream:
            yield _Counted(stream, self.received)  # type: ignore[misc]


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


def log_lines(rng: random.Random, nbytes: int, start: int) -> bytes:
    """About ``nbytes`` of event-log lines (JSON), numbered from ``start``."""
    out, size, seq = [], 0, start
    while size < nbytes:
        line = (
            f'{{"seq":{seq},"kind":"progress","step":{seq * 4},'
            f'"loss":{rng.random():.6f},"lr":{rng.random() * 1e-3:.3e},"worker":"w-{seq % 8}"}}\n'
        ).encode()
        out.append(line)
        size += len(line)
        seq += 1
    return b"".join(out)[:nbytes]


def rsync_args(rules: SyncRules, ssh_config: Path, alias: str, src: Path, dst: Path) -> list[str]:
    args = ["rsync", "-a", "--stats", "-e", f"ssh -F {ssh_config}", "--include=*/"]
    args += [f"--include={g}" for g in rules.include] + ["--exclude=*"]
    args += [f"--max-size={int(rules.max_file_mb)}m", "--prune-empty-dirs"]
    return [*args, f"{alias}:{src}/", f"{dst}/"]


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class Bench:
    def __init__(self, work: Path, sshd) -> None:
        self.work, self.sshd = work, sshd
        self.last: PullResult | None = None
        self.last_received = 0
        self.rsync_received = 0

    def ours(self, src: Path, dst: Path, rules: SyncRules) -> None:
        remote = CountingRemote(host=self.sshd.host_alias, ssh_config=self.sshd.ssh_config)
        try:
            py = sys.executable
            self.last = pull(remote=remote, python=py, remote_root=str(src), dest=dst, rules=rules)
        finally:
            remote.close()
        self.last_received = remote.received[0]

    def theirs(self, src: Path, dst: Path, rules: SyncRules) -> None:
        dst.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            rsync_args(rules, self.sshd.ssh_config, self.sshd.host_alias, src, dst),
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        found = re.search(r"Total bytes received: ([\d,.]+)", proc.stdout)
        self.rsync_received = int(re.sub(r"[,.]", "", found.group(1))) if found else -1


def case_a(b: Bench, repeats: int) -> list[Row]:
    rules = SyncRules()
    small = b.work / "small"
    make_tree(small, files=2000, size=10_000, seed=1)
    a_ours, a_rsync = [], []
    for i in range(repeats):
        a_rsync.append(timed(lambda i=i: b.theirs(small, b.work / f"a-rsync-{i}", rules)))
        a_ours.append(timed(lambda i=i: b.ours(small, b.work / f"a-ours-{i}", rules)))
    return [Row("(a) initial pull, 2,000 x 10 KB", a_rsync, a_ours, 1.5)]


def case_bc(b: Bench, repeats: int) -> list[Row]:
    rules = SyncRules()
    big = b.work / "big"
    files = make_tree(big, files=10_000, size=2_000, seed=2)
    d_ours, d_rsync = b.work / "b-ours", b.work / "b-rsync"
    b.theirs(big, d_rsync, rules)
    b.ours(big, d_ours, rules)
    b_ours, b_rsync, c_ours, c_rsync = [], [], [], []
    rng = random.Random(3)
    for _ in range(repeats):
        b_rsync.append(timed(lambda: b.theirs(big, d_rsync, rules)))
        b_ours.append(timed(lambda: b.ours(big, d_ours, rules)))
        for p in rng.sample(files, len(files) // 100):
            p.write_bytes(rng.randbytes(2_000))
        c_rsync.append(timed(lambda: b.theirs(big, d_rsync, rules)))
        c_ours.append(timed(lambda: b.ours(big, d_ours, rules)))
    for d in (d_ours, d_rsync):  # both destinations hold the same files
        assert sorted(p.relative_to(d) for p in d.rglob("*") if p.is_file() and
                      not p.name.startswith(".tether-sync")) == sorted(
            p.relative_to(big) for p in files
        ), d  # fmt: skip
    return [
        Row("(b) no-op pull, 10,000 files", b_rsync, b_ours, 1.0),
        Row("(c) 1% of 10,000 changed", c_rsync, c_ours, 1.5),
    ]


def case_d(b: Bench, repeats: int) -> list[Row]:
    rules = SyncRules(max_file_mb=256)  # the default cap (50) would leave the log out
    rng = random.Random(4)
    src = b.work / "grow"
    src.mkdir()
    log = src / "train.log"
    log.write_bytes(log_lines(rng, 50 * MIB, 0))
    d_ours, d_rsync = b.work / "d-ours", b.work / "d-rsync"
    b.theirs(src, d_rsync, rules)
    b.ours(src, d_ours, rules)
    d_ours_s, d_rsync_s, sent, payload, theirs_in = [], [], [], [], []
    for i in range(repeats):
        with log.open("ab") as f:
            f.write(log_lines(rng, MIB, 1_000_000 * (i + 1)))
        d_rsync_s.append(timed(lambda: b.theirs(src, d_rsync, rules)))
        theirs_in.append(b.rsync_received)
        d_ours_s.append(timed(lambda: b.ours(src, d_ours, rules)))
        assert b.last is not None and b.last.appended == ["train.log"], b.last
        sent.append(b.last_received)
        payload.append(b.last.sent_bytes)
        for d in (d_ours, d_rsync):
            assert (d / "train.log").read_bytes() == log.read_bytes(), d
    ratio = statistics.median(sent) / MIB
    notes = [
        f"tether: agent stdout {statistics.median(sent):,.0f} B per pull (payload "
        f"{statistics.median(payload):,.0f} B) for 1 MiB appended = {ratio:.3f}x "
        f"(goal <= 1.2x: {'yes' if ratio <= 1.2 else 'NO'}); rsync received "
        f"{statistics.median(theirs_in):,.0f} B"
    ]
    return [Row("(d) 50 MiB log grown by 1 MiB", d_rsync_s, d_ours_s, 1.0, notes)]


CASES = {"a": case_a, "bc": case_bc, "d": case_d}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cases", default="abcd", help="which cases to run, e.g. 'd'")
    args = parser.parse_args()
    if shutil.which("rsync") is None:
        raise SystemExit("rsync is not installed: apt-get install -y rsync (benchmark only)")
    binary = find_sshd()
    if binary is None:
        raise SystemExit("no sshd: apt-get install -y openssh-server")
    work = Path(tempfile.mkdtemp(prefix="tb-sync-", dir="/tmp"))
    (work / "sshd").mkdir()
    sshd, proc = start_sshd(work / "sshd", binary)
    bench = Bench(work, sshd)
    rows: list[Row] = []
    try:
        for key, case in CASES.items():
            if set(key) & set(args.cases):
                rows += case(bench, args.repeats)
    finally:
        stop_sshd(proc)
        shutil.rmtree(work, ignore_errors=True)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; {args.repeats} runs each")
    print("| case | rsync median s | tether median s | tether / rsync | goal | met |")
    print("|---|---:|---:|---:|---:|---|")
    for row in rows:
        mr, mo = statistics.median(row.rsync), statistics.median(row.ours)
        met = "yes" if mo <= row.goal * mr else "NO"
        pairs = sorted(o / r for o, r in zip(row.ours, row.rsync, strict=True))
        print(
            f"| {row.name} | {mr:.3f} | {mo:.3f} | {mo / mr:.2f}x "
            f"(pairs {pairs[0]:.2f}-{pairs[-1]:.2f}) | <= {row.goal:g}x | {met} |"
        )
    for row in rows:
        for note in row.notes:
            print(f"{row.name}: {note}")


if __name__ == "__main__":
    main()
