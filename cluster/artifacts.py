"""Artifact sink and checkpoint store: how files reach the head without a shared disk.

Tasks may run on nodes whose disk the head cannot see, so they never write into the head's
run directory. ``ArtifactSink`` is a Ray actor pinned to the head node, one per run: a task
streams each lightweight file to it in chunks; the sink writes a temp file beside the target,
checks size and SHA-256, fsyncs and renames it into place. A path that would leave the run
directory (absolute, ``..``, through a symlink) is refused.

Checkpoints go to a ``CheckpointStore``: the head's disk through the same kind of actor
(``HeadCheckpointStore``, the default) or an ``s3://`` / ``file://`` URI through
``pyarrow.fs`` (``UriCheckpointStore``). A retried task, on any node, fetches the latest
checkpoint from the store before it resumes.
"""

from __future__ import annotations

import fnmatch
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import ray

from tether.ml.atomic import file_digest, write_bytes_atomic

from .errors import ClusterRuntimeError
from .events import HEAD_ACTOR_KINDS, NAMESPACE, head_actor_name

CHUNK_BYTES = 1 << 20
HEAD = {"node:__internal_head__": 0.001}


class ArtifactError(ClusterRuntimeError):
    """A file could not be shipped or stored."""


def safe_relpath(rel: str) -> PurePosixPath:
    """``rel`` as a relative POSIX path that stays inside its root, else ArtifactError."""
    if not rel or "\x00" in rel or "\n" in rel:
        raise ArtifactError(f"refused artifact path {rel!r}: empty or with NUL/newline")
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or rel.startswith("~"):
        raise ArtifactError(f"refused artifact path {rel!r}: must be relative, without '..'")
    return p


class _FileReceiver:
    """Chunked, verified, atomic writes under one root directory (runs inside an actor)."""

    def __init__(self, root: str) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._open: dict[int, tuple[Path, Path, object, int, str]] = {}
        self._next = 0

    def _target(self, rel: str) -> Path:
        target = (self.root / safe_relpath(rel)).resolve()
        if self.root not in target.parents:
            raise ArtifactError(f"refused artifact path {rel!r}: resolves outside the run dir")
        return target

    def begin(self, rel: str, size: int, sha256: str) -> int:
        target = self._target(rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        self._next += 1
        self._open[self._next] = (target, Path(tmp), os.fdopen(fd, "wb"), size, sha256)
        return self._next

    def write(self, handle: int, chunk: bytes) -> None:
        self._open[handle][2].write(chunk)

    def commit(self, handle: int) -> str:
        target, tmp, f, size, sha = self._open.pop(handle)
        f.flush()
        os.fsync(f.fileno())
        f.close()
        if file_digest(tmp, chunk_bytes=CHUNK_BYTES) != (size, sha):
            tmp.unlink(missing_ok=True)
            raise ArtifactError(f"{target.name}: size or hash mismatch after transfer; not stored")
        os.replace(tmp, target)
        return str(target.relative_to(self.root))

    def abort(self, handle: int) -> None:
        entry = self._open.pop(handle, None)
        if entry:
            entry[2].close()
            entry[1].unlink(missing_ok=True)

    def read(self, rel: str) -> bytes | None:
        target = self._target(rel)
        return target.read_bytes() if target.is_file() else None

    def listdir(self, rel: str) -> list[str]:
        folder = self._target(rel) if rel else self.root
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


@ray.remote(num_cpus=0, resources=HEAD, max_restarts=-1)
class ArtifactSink(_FileReceiver):
    """Head-pinned receiver for a run's lightweight files (and head-disk checkpoints)."""

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()


def get_sink(*, run_id: str, root: Path, kind: str = "sink"):
    """The run's head-pinned receiver ``<kind>:<run_id>`` (created on first use)."""
    return ArtifactSink.options(
        name=head_actor_name(kind=kind, run_id=run_id),
        namespace=NAMESPACE,
        get_if_exists=True,
        lifetime="detached",
    ).remote(str(root))


def release_sinks(*, run_id: str) -> int:
    """End the run's sink and head checkpoint-store actors (their files stay on disk; a
    resumed run makes new ones). Returns how many were running."""
    n = 0
    for kind in HEAD_ACTOR_KINDS:
        try:
            actor = ray.get_actor(head_actor_name(kind=kind, run_id=run_id), namespace=NAMESPACE)
        except ValueError:
            continue
        ray.kill(actor, no_restart=True)
        n += 1
    return n


def _send(sink, rel: str, path: Path) -> tuple[str, tuple[int, str]]:
    """Stream ``path`` to ``sink`` as ``rel``; returns where the sink stored it and the
    ``(size, sha256)`` the sink verified it against."""
    digest = file_digest(path, chunk_bytes=CHUNK_BYTES)
    handle = ray.get(sink.begin.remote(rel, *digest))
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
                ray.get(sink.write.remote(handle, chunk))
        return ray.get(sink.commit.remote(handle)), digest
    except BaseException:
        sink.abort.remote(handle)
        raise


@dataclass(frozen=True)
class ShipResult:
    sent: list[str]
    skipped: list[str]  # excluded by the rules or over the size cap
    # sent path -> (size, sha256), as the sink verified it: the artifact events' digest
    digests: dict[str, tuple[int, str]] = field(default_factory=dict)


def ship_artifacts(
    *,
    sink,
    root: Path,
    prefix: str = "",
    include: Sequence[str] = ("*",),
    exclude: Sequence[str] = (),
    max_file_mb: float = 50.0,
) -> ShipResult:
    """Stream every file under ``root`` that the rules allow to ``sink`` (under ``prefix``).
    Symlinks are not followed; excluded and oversized files are never read."""
    root = Path(root)
    sent, skipped, digests = [], [], {}
    cap = max_file_mb * 1024 * 1024
    for path in sorted(root.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        rel = path.relative_to(root).as_posix()
        name = path.name
        allowed = any(fnmatch.fnmatch(name, g) for g in include) and not any(
            fnmatch.fnmatch(name, g) or fnmatch.fnmatch(rel, g) for g in exclude
        )
        if not allowed or path.stat().st_size > cap:
            skipped.append(rel)
            continue
        stored, digest = _send(sink, f"{prefix}/{rel}" if prefix else rel, path)
        sent.append(stored)
        digests[stored] = digest
    return ShipResult(sent=sent, skipped=skipped, digests=digests)


# --------------------------------------------------------------------------- checkpoints


class HeadCheckpointStore:
    """Checkpoints on the head's disk, through a head-pinned actor (no shared filesystem)."""

    def __init__(self, *, run_id: str, root: Path) -> None:
        self._actor = get_sink(run_id=run_id, root=root, kind="ckpt")

    def save(self, *, key: str, path: Path) -> None:
        _send(self._actor, key, Path(path))

    def fetch(self, *, key: str, dest: Path) -> bool:
        data = ray.get(self._actor.read.remote(key))
        if data is None:
            return False
        _write_local(Path(dest), data)
        return True


class UriCheckpointStore:
    """Checkpoints under an ``s3://`` or ``file://`` URI, through ``pyarrow.fs``."""

    def __init__(self, *, uri: str) -> None:
        from pyarrow import fs

        try:
            self._fs, self._base = fs.FileSystem.from_uri(uri)
        except Exception as exc:  # pyarrow raises ArrowInvalid and friends
            raise ArtifactError(f"cannot open checkpoint store {uri!r}: {exc}") from None
        self.uri = uri

    def save(self, *, key: str, path: Path) -> None:
        rel = safe_relpath(key).as_posix()
        target = f"{self._base.rstrip('/')}/{rel}"
        tmp = f"{target}.part"
        self._fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
        with open(path, "rb") as src, self._fs.open_output_stream(tmp) as out:
            for chunk in iter(lambda: src.read(CHUNK_BYTES), b""):
                out.write(chunk)
        self._fs.move(tmp, target)

    def fetch(self, *, key: str, dest: Path) -> bool:
        from pyarrow import fs

        target = f"{self._base.rstrip('/')}/{safe_relpath(key).as_posix()}"
        if self._fs.get_file_info(target).type != fs.FileType.File:
            return False
        with self._fs.open_input_stream(target) as src:
            _write_local(Path(dest), src.read())
        return True


def _write_local(dest: Path, data: bytes) -> None:
    write_bytes_atomic(dest, data)


def checkpoint_store(*, run_id: str, head_root: Path, uri: str | None = None):
    """The spec's store: a URI when set, else the head's disk under ``head_root``."""
    return (
        UriCheckpointStore(uri=uri) if uri else HeadCheckpointStore(run_id=run_id, root=head_root)
    )
