"""Job entrypoint, submitted as an ordinary Ray job; connects to the cluster it runs in.

``python -m tether.cluster.entrypoint --run-id ID --spec SPEC [--resume] [--no-commit] [...]`` runs
an experiment spec's stages (``cluster.pipeline``) in the run's worktree (the working
directory), with results in ``results/<run-id>/`` there, committed stage by stage on the run
branch. Exit status: 0 succeeded, 1 a stage failed, 2 the spec or the worktree is wrong.
A comparison of feature extractors is a spec with a ``compare`` stage (``cluster.compare_spec``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import ray


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tether.cluster.entrypoint")
    parser.add_argument("--run-id", required=True)
    parser.add_argument(
        "--run-dir", type=Path, help="lightweight results (default: results/<run-id>)"
    )
    parser.add_argument(
        "--spec", type=Path, required=True, help="experiment spec (TOML): run its stages"
    )
    parser.add_argument("--resume", action="store_true", help="re-run only unfinished stages")
    parser.add_argument("--no-commit", action="store_true", help="no stage commits")
    parser.add_argument("--heartbeat-s", type=float, default=30.0)
    parser.add_argument("--stall-timeout-s", type=float, default=300.0)
    parser.add_argument(
        "--secrets-file",
        type=Path,
        help="KEY=VALUE lines (mode 600) for the stages, e.g. ANTHROPIC_API_KEY; deleted at exit",
    )
    parser.add_argument(
        "--checkpoint-dir", type=Path, help="default: .tether/checkpoints/<run-id> (git-ignored)"
    )
    args = parser.parse_args(argv)
    if args.run_dir is None:
        args.run_dir = Path("results") / args.run_id
    return _run_spec(args)


def _checkpoint_dir(args: argparse.Namespace) -> Path:
    """``--checkpoint-dir``, else ``.tether/checkpoints/<run-id>`` (git-ignored), absolute:
    tasks run in Ray worker processes, whose working directory is not ours."""
    if args.checkpoint_dir is not None:
        return args.checkpoint_dir.resolve()
    tether_dir = Path(".tether")
    tether_dir.mkdir(exist_ok=True)
    ignore = tether_dir / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# tether's local state (checkpoints): never committed\n*\n")
    return (tether_dir / "checkpoints" / args.run_id).resolve()


def read_secrets(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines of a file only its owner may read (mode 600); never printed."""
    from .errors import ClusterRuntimeError

    try:
        mode = path.stat().st_mode & 0o777
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ClusterRuntimeError(f"cannot read the secrets file {path}: {exc.strerror}") from None
    if mode & 0o077:
        raise ClusterRuntimeError(
            f"the secrets file {path} is readable by others (mode {mode:o}): chmod 600 it"
        )
    out = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ClusterRuntimeError(f"{path}:{n}: expected KEY=VALUE (the value is not shown)")
        out[key.strip()] = value
    return out


def _run_spec(args: argparse.Namespace) -> int:
    from .errors import ClusterRuntimeError
    from .pipeline import run_pipeline
    from .spec import load_spec

    try:
        secrets = read_secrets(args.secrets_file) if args.secrets_file else {}
        spec = load_spec(args.spec)
        ckpt = _checkpoint_dir(args)
        ray.init(log_to_driver=True)
        print(
            f"run {args.run_id}: {spec.name}, stages {', '.join(s.name for s in spec.stages)}"
            + (" (resuming)" if args.resume else ""),
            flush=True,
        )
        result = run_pipeline(
            run_id=args.run_id,
            spec=spec,
            run_dir=args.run_dir,
            worktree=Path.cwd(),
            checkpoint_dir=ckpt,
            commit=not args.no_commit,
            resume=args.resume,
            heartbeat_s=args.heartbeat_s,
            stall_timeout_s=args.stall_timeout_s,
            secrets=secrets,
        )
    except ClusterRuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    finally:
        if args.secrets_file is not None:
            args.secrets_file.unlink(missing_ok=True)
    for rec in result.state.stages.values():
        commit = f" [{rec.commit[:10]}]" if rec.commit else ""
        print(f"stage {rec.name}: {rec.status}{commit} {rec.summary or rec.error or ''}")
    if result.status != "succeeded":
        print(f"run {args.run_id} failed: {result.error}", file=sys.stderr, flush=True)
        return 1
    print(f"run {args.run_id} succeeded; results in {args.run_dir}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
