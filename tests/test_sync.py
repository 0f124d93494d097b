"""The result puller (client/sync.py + client/sync_agent.py) against a real head.

SSH tests use the real sshd fixture, the others LocalRemote; no mocks. A dropped connection
is the sshd process serving it, killed; a broken or hostile head is an agent script that
sends what a real one never would; "never opened" is proved with Linux inotify.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from sshdserver import client_port, kill_connection

from tether.client.config import SyncRules
from tether.client.errors import CommandFailed, ConnectionLost, RemoteError, SyncError
from tether.client.remote import LocalRemote
from tether.client.sync import LOCK_NAME, MARKER_NAME, PART_SUFFIX, STATE_NAME, PullResult, pull

PY = sys.executable
RULES = SyncRules(max_file_mb=1)  # _results_tree's huge.log is over it
REPO_ROOT = Path(__file__).resolve().parents[1]
TETHER_FILES = {STATE_NAME, LOCK_NAME}


def _pull(remote, head: Path, dest: Path, **kw) -> PullResult:
    kw.setdefault("rules", SyncRules())
    return pull(remote=remote, python=PY, remote_root=str(head), dest=dest, **kw)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _files(root: Path) -> dict[str, str]:
    """sha256 of every regular file below ``root`` but tether's own, by relative path."""
    out = {}
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink() or not path.is_file() or rel in TETHER_FILES:
            continue
        out[rel] = _sha(path.read_bytes())
    return out


def _leftovers(root: Path) -> list[str]:
    return [p.name for p in root.rglob("*") if p.name.endswith(PART_SUFFIX)]


def _write(path: Path, data: bytes) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def _results_tree(head: Path, *, n: int = 300) -> tuple[dict[str, bytes], list[str]]:
    """A run's results: json/csv/png/txt/md in nested folders, plus checkpoints and one file
    over a 1 MB cap. Returns (included files, excluded files)."""
    rng = random.Random(7)
    included: dict[str, bytes] = {}
    for i in range(n):
        folder = f"stage{i % 4}/epoch{i % 9:02d}" if i % 3 else f"plots/p{i % 5}"
        kind = i % 5
        if kind == 0:
            rel, data = f"{folder}/metrics{i}.json", json.dumps({"i": i, "acc": i / n}).encode()
        elif kind == 1:
            rel, data = (
                f"{folder}/curve{i}.csv",
                "".join(f"{j},{j * i}\n" for j in range(50)).encode(),
            )
        elif kind == 2:
            rel, data = (
                f"{folder}/fig{i}.png",
                b"\x89PNG\r\n\x1a\n" + rng.randbytes(rng.randrange(10, 40_000)),
            )
        elif kind == 3:
            rel, data = f"{folder}/notes {i}.txt", f"note {i}\n".encode() * rng.randrange(1, 100)
        else:
            rel, data = f"{folder}/REPORT{i}.md", f"# report {i}\n".encode()
        included[rel] = _write(head / rel, data)
    included["empty.log"] = _write(head / "empty.log", b"")
    excluded = []
    for i in range(6):
        for ext in ("pt", "ckpt", "safetensors"):
            rel = f"stage{i % 4}/checkpoints/model{i}.{ext}"
            _write(head / rel, rng.randbytes(50_000))
            excluded.append(rel)
    _write(head / "stage0/weights.npz", rng.randbytes(1000))
    _write(head / "train.py", b"print('not included')\n")  # matches no include glob
    _write(head / "stage1/huge.log", rng.randbytes(1_500_000))  # over the 1 MB cap below
    excluded += ["stage0/weights.npz", "train.py", "stage1/huge.log"]
    return included, excluded


# --------------------------------------------------------------------------- inotify

_IN_OPEN = 0x20
_IN_ISDIR = 0x40000000
_IN_Q_OVERFLOW = 0x4000
_IN_NONBLOCK = 0o4000
_IN_CLOEXEC = 0o2000000


class OpenWatch:
    """Records every open(2) of a file below ``root`` (inotify IN_OPEN on each folder)."""

    def __init__(self, root: Path) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self._libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        assert self.fd >= 0, os.strerror(ctypes.get_errno())
        self._folders: dict[int, Path] = {}
        for folder, _dirs, _files in os.walk(root):
            wd = self._libc.inotify_add_watch(self.fd, os.fsencode(folder), _IN_OPEN)
            assert wd >= 0, os.strerror(ctypes.get_errno())
            self._folders[wd] = Path(folder)

    def opened(self) -> list[Path]:
        paths = []
        while True:
            try:
                buf = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return paths
            off = 0
            while off < len(buf):
                wd, mask, _cookie, length = struct.unpack_from("iIII", buf, off)
                name = buf[off + 16 : off + 16 + length].rstrip(b"\0")
                off += 16 + length
                assert not mask & _IN_Q_OVERFLOW, "inotify queue overflowed: events lost"
                if name and not mask & _IN_ISDIR:
                    paths.append(self._folders[wd] / os.fsdecode(name))

    def close(self) -> None:
        os.close(self.fd)


# --------------------------------------------------------------------------- open_binary


def test_open_binary_streams_bytes_both_ways_and_reports_failure(remote):
    data = os.urandom(3 * 1024 * 1024) + b"\x00\r\n\xff"
    with remote.open_binary("cat", stdin=data) as out:
        assert out.read() == data
    with remote.open_binary("printf 'a\\nb'") as out:
        assert out.readline() == b"a\n"  # leaving early: the rest is drained, exit checked
    with (
        pytest.raises(CommandFailed) as err,
        remote.open_binary("echo out; echo 'it broke' >&2; exit 4") as out,
    ):
        assert out.read() == b"out\n"
    assert err.value.exit_code == 4 and "it broke" in str(err.value)
    with pytest.raises(RemoteError) as silent, remote.open_binary("sleep 5.3", timeout=0.3) as out:
        out.read()
    assert "no output for 0.3s" in silent.value.message


# --------------------------------------------------------------------------- first pull


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux-only")
def test_first_pull_brings_exactly_the_included_files_and_never_opens_the_rest(remote, tmp_path):
    head, dest = tmp_path / "head", tmp_path / "laptop" / "results" / "run-1"
    included, excluded = _results_tree(head)
    watch = OpenWatch(head)
    try:
        res = _pull(remote, head, dest, rules=RULES)
        opened = watch.opened()
    finally:
        watch.close()
    assert _files(dest) == {rel: _sha(data) for rel, data in included.items()}
    assert sorted(res.transferred) == sorted(included)
    assert res.bytes == sum(len(d) for d in included.values())
    assert res.unchanged == 0 and res.refused == [] and res.deleted == []
    assert res.skipped == [("stage1/huge.log", "over max_file_mb (1)")]
    opened_rel = {p.relative_to(head).as_posix() for p in opened}
    assert not opened_rel & set(excluded), f"excluded files opened: {opened_rel & set(excluded)}"
    assert set(included) <= opened_rel  # control: the watch does see the agent's opens
    assert not _leftovers(dest) and not (dest / MARKER_NAME).exists()


def test_second_pull_moves_nothing_then_only_what_changed(remote, tmp_path):
    head, dest = tmp_path / "head", tmp_path / "dest"
    included, _ = _results_tree(head, n=120)
    assert len(_pull(remote, head, dest, rules=RULES).transferred) == len(included)

    again = _pull(remote, head, dest, rules=RULES)
    assert again.transferred == [] and again.bytes == 0
    assert again.unchanged == len(included) and again.skipped == [
        ("stage1/huge.log", "over max_file_mb (1)")
    ]

    names = sorted(included)
    grown, same_size, rewritten, touched = names[3], names[10], names[20], names[30]
    (head / grown).write_bytes(included[grown] + b"more\n")
    (head / same_size).write_bytes(bytes(b ^ 1 for b in included[same_size]))  # same size
    (head / rewritten).write_bytes(b"entirely new")
    later = time.time_ns() + 5_000_000_000
    for rel in (grown, same_size, rewritten, touched):  # mtimes surely differ from before
        os.utime(head / rel, ns=(later, later))
    res = _pull(remote, head, dest, rules=RULES)
    assert sorted(res.transferred) == sorted([grown, same_size, rewritten])
    assert res.bytes == sum((head / r).stat().st_size for r in (grown, same_size, rewritten))
    assert res.unchanged == len(included) - 3
    expected = {rel: _sha((head / rel).read_bytes()) for rel in included}
    assert _files(dest) == expected
    assert (dest / touched).stat().st_mtime_ns == later  # the new mtime was adopted, no bytes

    quiet = _pull(remote, head, dest, rules=RULES)
    assert quiet.transferred == [] and quiet.unchanged == len(included)


def test_a_local_copy_changed_or_deleted_here_is_pulled_again(tmp_path):
    head, dest = tmp_path / "head", tmp_path / "dest"
    _write(head / "a.json", b'{"a": 1}')
    _write(head / "b.txt", b"bee")
    _pull(LocalRemote(), head, dest)
    (dest / "a.json").write_bytes(b"edited here")
    (dest / "b.txt").unlink()
    res = _pull(LocalRemote(), head, dest)
    assert sorted(res.transferred) == ["a.json", "b.txt"]
    assert _files(dest) == _files(head)


# --------------------------------------------------------------------------- interruptions


def test_a_connection_cut_mid_file_leaves_no_partial_file_and_the_next_pull_completes(
    sshd, ssh_remote, tmp_path
):
    head, dest = tmp_path / "head", tmp_path / "dest"
    rng = random.Random(3)
    for i in range(40):  # sorted before big.log: they arrive first
        _write(head / f"a_small/m{i:02d}.json", json.dumps({"i": i}).encode())
    _write(head / "big.log", rng.randbytes(36 * 1024 * 1024))
    _write(head / "zz/after.txt", b"comes after the big one")
    rules = SyncRules(max_file_mb=64)
    port = client_port(ssh_remote)
    seen: list[tuple[str, int]] = []

    def cut_midway(path: str, done: int, total: int) -> None:
        seen.append((path, done))
        if path == "big.log" and done >= 4 * 1024 * 1024 and not killed.is_set():
            killed.set()
            kill_connection(sshd, port)

    killed = threading.Event()
    with pytest.raises(ConnectionLost) as err:
        _pull(ssh_remote, head, dest, rules=rules, progress=cut_midway)
    assert killed.is_set() and sshd.host_alias in err.value.message
    assert "the sync agent" in err.value.message and len(err.value.message) < 300
    assert not (dest / "big.log").exists() and not (dest / "zz/after.txt").exists()
    assert not _leftovers(dest), "a temp file outlived the failed pull"
    arrived = _files(dest)
    assert arrived and all(arrived[rel] == _sha((head / rel).read_bytes()) for rel in arrived)

    res = _pull(ssh_remote, head, dest, rules=rules)  # reconnects by itself
    assert "big.log" in res.transferred and set(res.transferred).isdisjoint(arrived)
    assert _files(dest) == _files(head)
    assert not _leftovers(dest) and not (dest / MARKER_NAME).exists()


_KILLED_PULL = """
import os, signal, sys
from pathlib import Path
from tether.client.config import SyncRules
from tether.client.remote import LocalRemote
from tether.client.sync import pull

def die(path, done, total):
    if path == "big.txt" and done >= 3 * 1024 * 1024:
        os.kill(os.getpid(), signal.SIGKILL)

pull(remote=LocalRemote(), python=sys.executable, remote_root=sys.argv[1], dest=Path(sys.argv[2]),
     rules=SyncRules(), progress=die)
"""


def test_temp_files_of_a_killed_pull_are_cleaned_by_the_next_one(tmp_path):
    head, dest = tmp_path / "head", tmp_path / "dest"
    _write(head / "a/first.json", b"{}")
    _write(head / "big.txt", random.Random(5).randbytes(12 * 1024 * 1024))
    proc = subprocess.run(
        [PY, "-c", _KILLED_PULL, str(head), str(dest)], cwd=REPO_ROOT, capture_output=True
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    assert _leftovers(dest) and (dest / MARKER_NAME).exists()  # what a killed pull leaves
    assert not (dest / "big.txt").exists()
    res = _pull(LocalRemote(), head, dest)
    assert "big.txt" in res.transferred
    assert not _leftovers(dest) and not (dest / MARKER_NAME).exists()
    assert _files(dest) == _files(head)


def test_a_file_being_written_is_never_copied_torn(remote, tmp_path):
    head, dest = tmp_path / "head", tmp_path / "dest"
    _write(head / "steady.json", b"{}")
    grow = head / "train.log"
    grow.write_bytes(b"")
    stop = threading.Event()
    lines = [0]

    def writer() -> None:
        with grow.open("ab", buffering=0) as f:
            while not stop.is_set():
                f.write(b"%08d %s\n" % (lines[0], b"x" * 200))
                lines[0] += 1
                time.sleep(0.002)

    def snapshot(n: int) -> bytes:
        return b"".join(b"%08d %s\n" % (i, b"x" * 200) for i in range(n))

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    outcomes = []
    try:
        for _ in range(4):
            res = _pull(remote, head, dest)
            if "train.log" in res.transferred:
                got = (dest / "train.log").read_bytes()
                assert got == snapshot(len(got) // 210), "a torn copy of a growing file"
                outcomes.append("consistent")
            else:
                assert ("train.log", "changing") in res.skipped, res.skipped
                outcomes.append("skipped")
            assert not _leftovers(dest)
    finally:
        stop.set()
        thread.join()
    assert lines[0] > 20
    res = _pull(remote, head, dest)
    assert "train.log" in res.transferred
    assert (dest / "train.log").read_bytes() == snapshot(lines[0]) == grow.read_bytes()
    assert len(outcomes) == 4, outcomes


# --------------------------------------------------------------------------- growing files


def _lines(rng: random.Random, n: int) -> bytes:
    return b"".join(
        b'{"seq": %d, "x": "%s"}\n' % (i, rng.randbytes(40).hex().encode()) for i in range(n)
    )


def _later(path: Path, seconds: int = 5) -> None:
    """Move ``path``'s mtime surely past what the last pull saw."""
    later = time.time_ns() + seconds * 1_000_000_000
    os.utime(path, ns=(later, later))


def test_a_grown_file_comes_by_its_tail_only_and_ends_byte_identical(remote, tmp_path):
    head, dest = tmp_path / "head", tmp_path / "dest"
    rng = random.Random(11)
    log = head / "events.jsonl"
    _write(log, _lines(rng, 30_000))  # about 3 MB
    _write(head / "steady.json", b"{}")
    first = _pull(remote, head, dest)
    assert first.appended == [] and first.sent_bytes == first.bytes == log.stat().st_size + 2

    for round_ in range(2):  # a tail on a tail
        old_size = log.stat().st_size
        with log.open("ab") as f:
            f.write(_lines(rng, 1000 + round_))
        _later(log, 5 + round_)
        calls: list[tuple[str, int, int]] = []
        res = _pull(remote, head, dest, progress=lambda *a, calls=calls: calls.append(a))
        added = log.stat().st_size - old_size
        assert res.transferred == ["events.jsonl"] and res.appended == ["events.jsonl"]
        assert res.sent_bytes == added  # only the appended bytes crossed
        assert res.bytes == log.stat().st_size and res.unchanged == 1
        assert calls[-1] == ("events.jsonl", added, added)
        assert (dest / "events.jsonl").read_bytes() == log.read_bytes()
        assert (dest / "events.jsonl").stat().st_mtime_ns == log.stat().st_mtime_ns
        state = json.loads((dest / STATE_NAME).read_text())["files"]["events.jsonl"]
        assert state[:3] == [log.stat().st_size, log.stat().st_mtime_ns, _sha(log.read_bytes())]
        assert not _leftovers(dest) and not (dest / MARKER_NAME).exists()
    quiet = _pull(remote, head, dest)
    assert quiet.transferred == [] and quiet.sent_bytes == 0 and quiet.unchanged == 2


def test_a_rewritten_file_or_a_changed_prefix_is_sent_whole(remote, tmp_path):
    head, dest = tmp_path / "head", tmp_path / "dest"
    rng = random.Random(12)
    names = ("same_size.log", "prefix_changed.log", "shrunk.log", "grown.log")
    for name in names:
        _write(head / name, _lines(rng, 2000))
    _pull(remote, head, dest)
    same = head / "same_size.log"
    same.write_bytes(bytes([same.read_bytes()[0] ^ 1]) + same.read_bytes()[1:])
    changed = head / "prefix_changed.log"
    data = changed.read_bytes()
    changed.write_bytes(data[:100] + b"X" + data[101:] + _lines(rng, 50))  # grew, prefix not kept
    shrunk = head / "shrunk.log"
    shrunk.write_bytes(shrunk.read_bytes()[:-500])
    extra = _lines(rng, 10)
    with (head / "grown.log").open("ab") as f:
        f.write(extra)
    for name in names:
        _later(head / name)
    res = _pull(remote, head, dest)
    assert res.transferred == sorted(names) and res.appended == ["grown.log"]
    whole = sum((head / n).stat().st_size for n in names[:3])
    assert res.sent_bytes == whole + len(extra)
    assert res.refused == [] and res.skipped == []
    assert _files(dest) == _files(head)


def test_a_tail_onto_a_copy_altered_here_in_place_fails_verification_then_comes_whole(
    tmp_path,
):
    head, dest = tmp_path / "head", tmp_path / "dest"
    log = _write(head / "train.log", b"epoch 1 loss 0.9\n" * 4000)
    _pull(LocalRemote(), head, dest)
    copy = dest / "train.log"
    st = copy.stat()
    with copy.open("r+b") as f:  # same size, same mtime: still looks as pulled
        f.write(b"EPOCH")
    os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns))
    with (head / "train.log").open("ab") as f:
        f.write(b"epoch 2 loss 0.5\n" * 10)
    _later(head / "train.log")
    res = _pull(LocalRemote(), head, dest)
    assert res.transferred == [] and res.refused == [
        ("'train.log'", "sha256 differs from the head's")
    ]
    assert copy.read_bytes()[:5] == b"EPOCH" and not _leftovers(dest)  # untouched
    again = _pull(LocalRemote(), head, dest)
    assert again.transferred == ["train.log"] and again.appended == []
    assert again.sent_bytes == len(log) + 170
    assert copy.read_bytes() == (head / "train.log").read_bytes()


_KILLED_TAIL = """
import os, signal, sys
from pathlib import Path
from tether.client.config import SyncRules
from tether.client.remote import LocalRemote
from tether.client.sync import pull

def die(path, done, total):
    if path == "big.log" and done >= 2 * 1024 * 1024:
        os.kill(os.getpid(), signal.SIGKILL)

pull(remote=LocalRemote(), python=sys.executable, remote_root=sys.argv[1], dest=Path(sys.argv[2]),
     rules=SyncRules(), progress=die)
"""


def test_a_tail_pull_killed_midway_leaves_the_old_copy_and_the_next_completes(tmp_path):
    head, dest = tmp_path / "head", tmp_path / "dest"
    rng = random.Random(13)
    old = _write(head / "big.log", rng.randbytes(6 * 1024 * 1024))
    _pull(LocalRemote(), head, dest)
    with (head / "big.log").open("ab") as f:
        f.write(rng.randbytes(5 * 1024 * 1024))
    _later(head / "big.log")
    proc = subprocess.run(
        [PY, "-c", _KILLED_TAIL, str(head), str(dest)], cwd=REPO_ROOT, capture_output=True
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    assert _leftovers(dest) and (dest / "big.log").read_bytes() == old
    res = _pull(LocalRemote(), head, dest)
    assert res.appended == ["big.log"] and res.sent_bytes == 5 * 1024 * 1024
    assert (dest / "big.log").read_bytes() == (head / "big.log").read_bytes()
    assert not _leftovers(dest) and not (dest / MARKER_NAME).exists()


# --------------------------------------------------------------------------- hostile head

_HOSTILE_AGENT = textwrap.dedent(
    """
    import hashlib, json, sys, zlib
    def read():
        header = sys.stdin.buffer.readline()
        if not header.strip():
            return None
        return json.loads(zlib.decompress(sys.stdin.buffer.read(int(header))))
    out = sys.stdout.buffer
    def line(obj):
        out.write(json.dumps(obj).encode() + b"\\n")
    FILES = {
        "../escape.txt": b"evil",
        OUTSIDE + "/abs.txt": b"evil",
        "a\\nb.txt": b"evil",
        "nul\\x00.txt": b"evil",
        "x/../../escape2.txt": b"evil",
        "./dot.txt": b"evil",
        "linked/inside.txt": b"evil",
        "model.pt": b"evil",
        ".tether-sync.json": b"{}",
        "sized.txt": b"0123456789",
        "ok.txt": b"fine",
        "sub/ok2.json": b"{}",
    }
    read()
    for path, data in FILES.items():
        line({"p": path, "s": len(data), "m": 1})
    line({"p": "etc", "t": "symlink"})
    line({"end": {}})
    out.flush()
    read()  # what the laptop asked for; this head sends what it likes
    sent = 0
    for path, data in list(FILES.items()) + [("../unasked.txt", b"evil")]:
        body = data * 2 if path == "sized.txt" else data  # more than announced
        out.write(json.dumps({"f": path, "n": len(body)}).encode() + b"\\n" + body)
        line({"h": hashlib.sha256(body).hexdigest(), "ok": True})
        sent += 1
    line({"end": sent})
    """
)


def test_a_hostile_head_cannot_write_outside_the_destination(remote, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "linked").symlink_to(outside, target_is_directory=True)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    agent = f"OUTSIDE = {str(outside)!r}\n" + _HOSTILE_AGENT
    res = pull(
        remote=remote,
        python=PY,
        remote_root=str(tmp_path),
        dest=dest,
        rules=SyncRules(),
        agent=agent,
    )
    assert sorted(res.transferred) == ["ok.txt", "sub/ok2.json"]
    refused = dict(res.refused)
    expected = {
        "../escape.txt": "'..' in the path",
        f"{outside}/abs.txt": "absolute path",
        "a\nb.txt": "name contains a line break",
        "nul\x00.txt": "name contains a NUL byte",
        "x/../../escape2.txt": "'..' in the path",
        "./dot.txt": "not a plain relative path",
        "linked/inside.txt": "goes through a local symlink ('linked')",
        "model.pt": "excluded by the sync rules",
        ".tether-sync.json": "name reserved by tether sync",
        "sized.txt": "20 bytes sent, 10 announced",
        "etc": "symlink on the head (never copied)",
        "../unasked.txt": "sent without being asked for",
    }
    assert refused == {repr(path): reason for path, reason in expected.items()}
    after = sorted(str(p) for p in tmp_path.rglob("*"))
    new = sorted(set(after) - set(before))
    assert new == sorted(
        str(dest / n) for n in (STATE_NAME, LOCK_NAME, "ok.txt", "sub", "sub/ok2.json")
    )
    assert [p.name for p in outside.iterdir()] == ["keep.txt"]
    assert (dest / "linked").is_symlink() and not (dest / "sized.txt").exists()
    assert json.loads((dest / STATE_NAME).read_text())["files"].keys() == {"ok.txt", "sub/ok2.json"}


_HOSTILE_TAILS = textwrap.dedent(
    """
    import hashlib, json, os, sys, zlib
    def read():
        header = sys.stdin.buffer.readline()
        return json.loads(zlib.decompress(sys.stdin.buffer.read(int(header))))
    out = sys.stdout.buffer
    def line(obj):
        out.write(json.dumps(obj).encode() + b"\\n")
    root = read()["root"]
    names = ["a.log", "b.txt", "c.log", "d.log"]
    for n in names:
        st = os.stat(os.path.join(root, n))
        line({"p": n, "s": st.st_size, "m": st.st_mtime_ns})
    line({"end": {}})
    out.flush()
    asked = {f[0]: f for f in read()["files"]}
    def frame(n, offset, trailer=None):
        with open(os.path.join(root, n), "rb") as f:
            data = f.read()
        header = {"f": n, "n": len(data) - offset}
        if offset:
            header["o"] = offset
        out.write(json.dumps(header).encode() + b"\\n" + data[offset:])
        line({"h": trailer or hashlib.sha256(data).hexdigest(), "ok": True})
    frame("a.log", asked["a.log"][3] - 1)  # not from where it was asked
    frame("b.txt", 2)  # asked for whole
    tail = asked["c.log"][3]
    with open(os.path.join(root, "c.log"), "rb") as f:
        wrong = hashlib.sha256(f.read()[tail:]).hexdigest()  # the tail's, not the file's
    frame("c.log", tail, trailer=wrong)
    frame("d.log", asked["d.log"][3])
    line({"end": 4})
    """
)


def test_a_hostile_head_cannot_misplace_a_tail(remote, tmp_path):
    head, dest = tmp_path / "head", tmp_path / "dest"
    before = {n: _write(head / n, n.encode() * 1000) for n in ("a.log", "c.log", "d.log")}
    _pull(remote, head, dest)
    for n in before:
        with (head / n).open("ab") as f:
            f.write(b"appended\n" * 10)
        _later(head / n)
    _write(head / "b.txt", b"new on the head")
    res = pull(
        remote=remote,
        python=PY,
        remote_root=str(head),
        dest=dest,
        rules=SyncRules(),
        agent=_HOSTILE_TAILS,
    )
    assert res.transferred == ["d.log"] and res.appended == ["d.log"] and res.sent_bytes == 90
    assert dict(res.refused) == {
        repr("a.log"): "tail from byte 4999 sent, asked from byte 5000",
        repr("b.txt"): "tail from byte 2 sent, asked from the start",
        repr("c.log"): "sha256 differs from the head's",
    }
    assert (dest / "d.log").read_bytes() == (head / "d.log").read_bytes()
    for n in ("a.log", "c.log"):
        assert (dest / n).read_bytes() == before[n]  # the copies here are untouched
    assert not (dest / "b.txt").exists() and not _leftovers(dest)
    state = json.loads((dest / STATE_NAME).read_text())["files"]
    assert state.keys() == {"a.log", "d.log"}  # c.log comes whole next time
    again = _pull(remote, head, dest)
    assert again.transferred == ["a.log", "b.txt", "c.log"] and again.appended == ["a.log"]
    assert _files(dest) == _files(head)


def test_symlinks_odd_names_and_fifos_on_a_real_head_are_refused(remote, tmp_path):
    head, dest = tmp_path / "head", tmp_path / "dest"
    _write(head / "ok.json", b"[]")
    _write(head / "deep/er/fine.txt", b"fine")
    _write(head / "bad\nname.txt", b"newline in the name")
    (head / "etc_link").symlink_to("/etc", target_is_directory=True)
    (head / "deep/passwd.txt").symlink_to("/etc/passwd")
    os.mkfifo(head / "pipe.log")
    res = _pull(remote, head, dest)
    assert sorted(res.transferred) == ["deep/er/fine.txt", "ok.json"]
    assert sorted(res.refused) == sorted(
        [
            (repr("bad\nname.txt"), "name contains a line break"),
            (repr("etc_link"), "symlink on the head (never copied)"),
            (repr("deep/passwd.txt"), "symlink on the head (never copied)"),
            (repr("pipe.log"), "fifo on the head (never copied)"),
        ]
    )
    assert not any(p.is_symlink() for p in dest.rglob("*"))
    assert _files(dest) == {"ok.json": _sha(b"[]"), "deep/er/fine.txt": _sha(b"fine")}


def test_a_missing_results_folder_is_a_clear_error(remote, tmp_path):
    with pytest.raises(SyncError) as err:
        _pull(remote, tmp_path / "pruned-run", tmp_path / "dest")
    assert f"{tmp_path / 'pruned-run'} does not exist on {remote.name}" in err.value.message
    assert "tether fetch" in (err.value.hint or "")
    with pytest.raises(SyncError) as err:
        pull(
            remote=remote,
            python="/nowhere/python3",
            remote_root=str(tmp_path),
            dest=tmp_path / "d",
            rules=SyncRules(),
        )
    assert "/nowhere/python3 not found" in err.value.message


# --------------------------------------------------------------------------- mirror, lock


def test_mirror_deletes_only_files_gone_on_the_head(tmp_path):
    head, dest = tmp_path / "head", tmp_path / "dest"
    for rel in ("keep.json", "old/gone.json", "old/also.txt", "stays.txt"):
        _write(head / rel, rel.encode())
    _pull(LocalRemote(), head, dest)
    _write(dest / "mine.md", b"written on the laptop")
    _write(tmp_path / "sibling.txt", b"outside dest")
    for rel in ("old/gone.json", "old/also.txt"):
        (head / rel).unlink()
    (head / "stays.txt").unlink()
    (dest / "stays.txt").unlink()  # gone on both sides: nothing to do

    kept = _pull(LocalRemote(), head, dest)
    assert kept.deleted == [] and (dest / "old/gone.json").exists()
    assert (dest / "old/also.txt").read_bytes() == b"old/also.txt"

    mirrored = _pull(LocalRemote(), head, dest, mirror=True)
    assert mirrored.deleted == ["old/also.txt", "old/gone.json"]
    assert not (dest / "old").exists()  # left empty: removed too
    assert (dest / "mine.md").exists() and (tmp_path / "sibling.txt").exists()
    assert json.loads((dest / STATE_NAME).read_text())["files"].keys() == {"keep.json"}
    assert _files(dest) == {
        "keep.json": _sha(b"keep.json"),
        "mine.md": _sha(b"written on the laptop"),
    }
    assert _pull(LocalRemote(), head, dest, mirror=True).deleted == []


def test_two_pulls_into_one_folder_take_turns(tmp_path):
    head, dest = tmp_path / "head", tmp_path / "dest"
    included, _ = _results_tree(head, n=200)
    results: list[PullResult] = []
    errors: list[BaseException] = []

    def one() -> None:
        try:
            results.append(_pull(LocalRemote(), head, dest, rules=RULES))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    first, second = sorted(results, key=lambda r: -len(r.transferred))
    assert sorted(first.transferred) == sorted(included)
    assert second.transferred == [] and second.unchanged == len(included)  # it waited its turn
    assert _files(dest) == {rel: _sha(d) for rel, d in included.items()}


def test_a_held_lock_times_out_with_a_clear_error(tmp_path):
    head, dest = tmp_path / "head", tmp_path / "dest"
    _write(head / "a.json", b"{}")
    dest.mkdir()
    with open(dest / LOCK_NAME, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        start = time.monotonic()
        with pytest.raises(SyncError) as err:
            _pull(LocalRemote(), head, dest, lock_timeout_s=0.3)
        assert 0.3 <= time.monotonic() - start < 3
    assert "another pull" in err.value.message
    assert _pull(LocalRemote(), head, dest).transferred == ["a.json"]


def test_progress_reports_every_file_and_chunk(tmp_path):
    head, dest = tmp_path / "head", tmp_path / "dest"
    _write(head / "a.json", b"{}")
    _write(head / "b.log", os.urandom(3 * 1024 * 1024 + 5))
    calls: list[tuple[str, int, int]] = []
    _pull(LocalRemote(), head, dest, progress=lambda *a: calls.append(a))
    total = 2 + 3 * 1024 * 1024 + 5
    assert calls[0] == ("a.json", 2, total) and calls[-1] == ("b.log", total, total)
    assert [c[0] for c in calls].count("b.log") == 4  # 1 MiB chunks
    assert [c[1] for c in calls] == sorted(c[1] for c in calls)


def test_a_failed_pull_leaves_the_state_file_as_it_was(tmp_path):
    head, dest = tmp_path / "head", tmp_path / "dest"
    _write(head / "x.json", b"1")
    _pull(LocalRemote(), head, dest)
    state = json.loads((dest / STATE_NAME).read_text())
    assert state["files"]["x.json"][0] == 1 and state["remote_root"] == str(head)
    shutil.rmtree(head)
    with pytest.raises(SyncError):
        _pull(LocalRemote(), head, dest)
    assert json.loads((dest / STATE_NAME).read_text()) == state
