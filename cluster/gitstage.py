"""Stage commits: after each stage the driver commits that stage's lightweight outputs on
the run branch, in the run's worktree.

One committer per worktree (the driver), and the branch moves by compare-and-swap
(``git update-ref REF NEW OLD``), so a concurrent writer can never be silently overwritten:
GitPython's own ``index.commit`` moves the branch without that check. Files matching the
exclude globs (checkpoints) or over the size cap are never staged.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import git

from .errors import ClusterRuntimeError

CHECKPOINT_GLOBS = ("*.pt", "*.pth", "*.ckpt", "*.safetensors", "*.bin", "*.npz")
STAGE_PREFIX = {
    "setup": "chore",
    "test": "test",
    "train": "train",
    "evaluate": "eval",
    "visualize": "viz",
    "analyze": "analysis",
    "report": "docs",
    "compare": "compare",
}


class StageCommitError(ClusterRuntimeError):
    """A stage commit could not be made (the branch moved under us, git failed)."""


def stage_message(stage: str, summary: str) -> str:
    """``train: extractor=magvit 20 epochs, val_acc=0.912``; the report stage is
    ``docs: final report``."""
    if stage == "report" and not summary:
        return "docs: final report"
    prefix = STAGE_PREFIX.get(stage, stage)
    return f"{prefix}: {summary}" if summary else f"{prefix}: {stage} stage"


@dataclass(frozen=True)
class PushResult:
    ok: bool
    message: str


class StageCommitter:
    """Commits lightweight files under ``worktree`` onto ``branch`` (checked out there)."""

    def __init__(
        self,
        *,
        worktree: Path,
        branch: str,
        exclude: Sequence[str] = CHECKPOINT_GLOBS,
        max_file_mb: float = 50.0,
    ) -> None:
        self.worktree = Path(worktree)
        self.branch = branch
        self.exclude = tuple(exclude)
        self.max_bytes = int(max_file_mb * 1024 * 1024)
        try:
            self.repo = git.Repo(self.worktree)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError) as exc:
            raise StageCommitError(f"{worktree} is not a git worktree: {exc}") from None
        head = "a detached HEAD" if self.repo.head.is_detached else self.repo.active_branch.name
        if head != branch:
            raise StageCommitError(f"{worktree} has {head} checked out, not {branch}")
        # The tip this committer last saw; each commit must move the branch from exactly here.
        self.tip = self.repo.heads[branch].commit.hexsha

    def _wanted(self, rel: str, path: Path) -> bool:
        name = path.name
        if any(fnmatch.fnmatch(name, g) or fnmatch.fnmatch(rel, g) for g in self.exclude):
            return False
        return path.is_file() and not path.is_symlink() and path.stat().st_size <= self.max_bytes

    def candidates(self, paths: Sequence[Path]) -> list[str]:
        """Files under ``paths`` (files or folders inside the worktree) that may be committed."""
        out = []
        for p in paths:
            p = (self.worktree / p) if not Path(p).is_absolute() else Path(p)
            files = [p] if p.is_file() else sorted(x for x in p.rglob("*") if x.is_file())
            for f in files:
                rel = f.resolve().relative_to(self.worktree.resolve()).as_posix()
                if rel.startswith(".git/") or "/.git/" in rel:
                    continue
                if self._wanted(rel, f):
                    out.append(rel)
        return sorted(set(out))

    def commit_stage(self, *, stage: str, summary: str, paths: Sequence[Path]) -> str | None:
        """Commit the lightweight files under ``paths``; returns the new commit id, or None
        when nothing changed. Raises ``StageCommitError`` if the branch is no longer where this
        committer left it (someone else moved it): nothing is overwritten."""
        files = self.candidates(paths)
        if not files:
            return None
        ref = f"refs/heads/{self.branch}"
        old = self.tip
        index = self.repo.index
        index.add(files)
        index.write()
        tree = index.write_tree()
        parent = self.repo.commit(old)
        if tree.hexsha == parent.tree.hexsha:
            return None
        commit = git.Commit.create_from_tree(
            self.repo, tree, stage_message(stage, summary), parent_commits=[parent], head=False
        )
        try:
            self.repo.git.update_ref(ref, commit.hexsha, old)  # compare-and-swap
        except git.GitCommandError as exc:
            raise StageCommitError(
                f"{self.branch} moved while committing the {stage} stage "
                f"(expected {old[:10]}): {exc.stderr.strip()}"
            ) from None
        self.tip = commit.hexsha
        return commit.hexsha

    def push(self) -> PushResult:
        """Push the branch if it has an upstream; a failure is reported, never raised."""
        branch = self.repo.heads[self.branch]
        tracking = branch.tracking_branch()
        if tracking is None:
            return PushResult(ok=True, message="no upstream: nothing to push")
        remote = tracking.remote_name
        try:
            self.repo.git.push(remote, f"{self.branch}:{tracking.remote_head}")
        except git.GitCommandError as exc:
            last = (exc.stderr or str(exc)).strip().splitlines()[-1:] or [""]
            return PushResult(ok=False, message=f"push to {remote} failed: {last[0]}")
        return PushResult(ok=True, message=f"pushed {self.branch} to {remote}")
