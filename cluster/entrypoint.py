"""Job entrypoint: ``python -m cluster.entrypoint --run-id ID --run-dir DIR``.

Submitted as a Ray job; connects to the cluster it runs in and fans trials out as Ray
tasks. Until the stage pipeline lands this runs the smallest real pipeline: one
``ml.quickfit`` training per trial (different capacities), in parallel, then writes
``results.json`` into the run directory.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import ray

from ml.atomic import write_json_atomic
from ml.quickfit import QuickFitConfig, fit


@ray.remote
def _train_trial(config: QuickFitConfig) -> dict:
    result = fit(config=config).to_dict()
    result["node"] = ray.get_runtime_context().get_node_id()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.entrypoint")
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument("--hidden", type=int, nargs="+", default=[4, 16, 64])
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--gpus-per-trial", type=float, default=0.0)
    args = parser.parse_args(argv)

    start = time.time()
    ray.init(log_to_driver=True)
    task = _train_trial.options(num_gpus=args.gpus_per_trial, num_cpus=1)
    configs = [QuickFitConfig(hidden=h, epochs=args.epochs, seed=0) for h in args.hidden]
    print(f"run {args.run_id}: {len(configs)} trials on the cluster", flush=True)
    refs = {task.remote(c): c for c in configs}
    trials = []
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        res = ray.get(done[0])
        trials.append(res)
        print(
            f"trial hidden={res['config']['hidden']}: test_accuracy={res['test_accuracy']:.3f} "
            f"final train_loss={res['train_loss'][-1]:.4f} ({res['seconds']:.1f}s)",
            flush=True,
        )
    trials.sort(key=lambda r: r["config"]["hidden"])
    best = max(trials, key=lambda r: r["test_accuracy"])
    write_json_atomic(
        args.run_dir / "results.json",
        {
            "run": args.run_id,
            "trials": trials,
            "best": {"hidden": best["config"]["hidden"], "test_accuracy": best["test_accuracy"]},
            "seconds": time.time() - start,
        },
    )
    print(f"wrote {args.run_dir / 'results.json'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
