"""Job entrypoint: ``python -m cluster.entrypoint --run-id ID --run-dir DIR [options]``.

Submitted as an ordinary Ray job; connects to the cluster it runs in and compares the four
built-in feature extractors on the track-persistence task, one Ray task each (one GPU each
when the cluster has GPUs). The stage pipeline (issue 6) grows from here.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import ray

from ml.data import TrackConfig
from ml.models import EXTRACTOR_NAMES, ExtractorConfig
from ml.train import TrainConfig

from .compare import compare_extractors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.entrypoint")
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--run-dir", required=True, type=Path, help="lightweight results")
    parser.add_argument(
        "--checkpoint-dir", type=Path, help="default: .tether/checkpoints/<run-id> (git-ignored)"
    )
    parser.add_argument("--extractors", nargs="+", default=list(EXTRACTOR_NAMES))
    parser.add_argument("--size", default="small", help="model size: tiny, small, base")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--train-size", type=int, default=1500)
    parser.add_argument("--gpus-per-trial", type=float, default=None)
    args = parser.parse_args(argv)

    start = time.time()
    ray.init(log_to_driver=True)
    n = args.train_size
    base = TrainConfig(
        extractor=ExtractorConfig(name=args.extractors[0], size=args.size),
        track=TrackConfig(train_size=n, val_size=max(16, n // 5), test_size=max(16, n // 5)),
        epochs=args.epochs,
    )
    if args.checkpoint_dir is None:
        tether_dir = Path(".tether")
        tether_dir.mkdir(exist_ok=True)
        ignore = tether_dir / ".gitignore"
        if not ignore.exists():
            ignore.write_text("# tether's local state (checkpoints): never committed\n*\n")
    # Absolute: the trials run in Ray worker processes, whose working directory is not ours.
    ckpt = (args.checkpoint_dir or Path(".tether") / "checkpoints" / args.run_id).resolve()
    run_dir = args.run_dir.resolve()
    print(
        f"run {args.run_id}: comparing {', '.join(args.extractors)} "
        f"({args.size}, {args.epochs} epochs, {n} training clips)",
        flush=True,
    )
    rows = compare_extractors(
        base=base,
        extractors=args.extractors,
        run_dir=run_dir,
        checkpoint_dir=ckpt,
        gpus_per_trial=args.gpus_per_trial,
    )
    for r in rows:
        print(
            f"result {r['model']}: test_accuracy={r['accuracy']:.3f} f1={r['f1']:.3f} "
            f"({r['train_seconds']:.0f}s)",
            flush=True,
        )
    print(f"done in {time.time() - start:.0f}s; wrote {run_dir / 'comparison.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
