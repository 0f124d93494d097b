"""Comparison fan-out: tether's compare stage against Ray Tune and plain Ray tasks.

Sleep-bound trials of equal length (5 s) on the embedded local Ray cluster with logical GPUs
(127.0.0.1 only, 16 logical CPUs so that CPU is never what limits the fan-out). Scenarios:

* ``4 on 4``: 4 trials of 1 GPU on a 4-GPU cluster (all at once: goal <= 1.2x one trial);
* ``8 on 4``: 8 trials of 1 GPU on the same 4-GPU cluster (two waves: goal <= 1.2x two trials);
* ``8 on 8``: 8 trials of 1 GPU on an 8-GPU cluster (all at once: goal <= 1.2x one trial).

Each is measured, in the same cluster and the same run, for three systems:

* **tether**: ``run_pipeline`` with a spec whose only stage is ``compare`` (``run =
  "<module>:sleep_trial"`` in a temp git repository, ``commit=False``), end to end: run
  monitor start, one ``remote_stage_task`` per trial (``max_calls=1``), artifact shipping,
  the comparison report rewritten after each trial, the monitor's finish. Also the trials'
  span (first ``started`` to last ``finished`` stage event) and the start-up before it.
* **Ray Tune**: ``tune.Tuner(tune.with_resources(fn, {"gpu": 1}), param_space=grid over the
  same trial names)``, ``fit()``; Tune's files in a temp ``storage_path``, ``verbose=0``.
* **plain Ray tasks**: ``ray.remote(num_gpus=1)`` sleep tasks (Ray's default for GPU tasks is
  ``max_calls=1`` too), ``ray.get`` on all.

Wall time is read in this process around each call, with ``time.time()`` (the clock the
run's events and the sleep tasks' own instants carry, so the start-up before the first trial
and the tail after the last can be told apart); all three drive the same already-connected
cluster, so a whole-process timing would only add the driver's ``ray.init``. Each cluster
first gets one untimed round of every system (1 s trials) so the driver's imports and Tune's
set-up are warm; the systems' order rotates per repetition. Prints markdown tables: min and
median wall time per system with the ratios the goals name (against Ray Tune paired within each
repetition, so a load change between repetitions moves both sides), then where the time went:
start-up before the first trial started, the trials' span, the tail after the last ended, the
CPU seconds each trial's worker process had used when the trial's body began (its boot and
imports: load-independent, unlike the wall times) and this driver process's CPU seconds.

    .venv/bin/python bench/compare_fanout.py [--reps 3] [--trial-s 5] [--systems tether,ray]
    .venv/bin/python bench/compare_fanout.py --quick     # 1 s trials, 1 repetition (smoke run)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import platform
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from tether.client.localcluster import (
    LOOPBACK_ENV,
    free_port,
    start_local_cluster,
    stop_local_cluster,
)

os.environ.update(LOOPBACK_ENV)  # before ray is imported: the driver stays on 127.0.0.1
os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # as the embedded cluster is started
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's legacy reporter: verbose=0 is silent

MB = 1024 * 1024
SYSTEMS = ("tether", "tune", "ray")
NAMES = {"tether": "tether compare stage", "tune": "Ray Tune", "ray": "plain Ray tasks"}
CPUS_PER_TRIAL = 0.25
USER_CODE = """
import resource
import time

def sleep_trial(ctx):
    use = resource.getrusage(resource.RUSAGE_SELF)  # the worker's CPU before the trial's body
    time.sleep({sleep_s})
    return {{
        "test": {{"accuracy": 0.5 + 0.01 * ctx.trial.seed}},
        "worker_cpu_s": use.ru_utime + use.ru_stime,
    }}
"""


@dataclass(frozen=True)
class Scenario:
    trials: int
    gpus: int  # of the cluster; every trial asks for 1

    @property
    def label(self) -> str:
        return f"{self.trials} on {self.gpus}"

    @property
    def waves(self) -> int:
        return -(-self.trials // self.gpus)


# startup: call to 1st trial start; span: first trial start to last trial end; tail: after the
# last trial's end until the call returns; worker_cpu: CPU seconds a trial's worker process
# spent before the trial's body ran (mean over the trials); driver_cpu: this process's CPU
PHASES = ("wall", "startup", "span", "tail", "worker_cpu", "driver_cpu")


def _phases(
    *, t0: float, t1: float, starts: list[float], ends: list[float], cpus: list[float], cpu: float
) -> dict:
    """The phases of one run from wall-clock instants (time.time()) of its trials; ``cpu``:
    the driver's CPU seconds during the call."""
    return {
        "wall": t1 - t0,
        "startup": min(starts) - t0 if starts else None,
        "span": max(ends) - min(starts) if starts else None,
        "tail": t1 - max(ends) if ends else None,
        "worker_cpu": statistics.mean(cpus),
        "driver_cpu": cpu,
    }


def _worker_cpu() -> float:
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


# --------------------------------------------------------------------------- the systems


def _sleep(sleep_s: float) -> tuple[float, float, float]:
    t, cpu = time.time(), _worker_cpu()
    time.sleep(sleep_s)
    return t, time.time(), cpu


def _tune_trial(config: dict) -> None:
    from ray import tune

    cpu = _worker_cpu()
    time.sleep(config["sleep_s"])
    tune.report({"accuracy": 0.5, "worker_cpu_s": cpu})


class Bench:
    def __init__(self, *, work: Path) -> None:
        self.work = work
        self.repo = work / "repo"
        self.modules: dict[float, str] = {}
        env = {
            **os.environ,
            "GIT_AUTHOR_NAME": "bench",
            "GIT_AUTHOR_EMAIL": "bench@tether.invalid",
            "GIT_COMMITTER_NAME": "bench",
            "GIT_COMMITTER_EMAIL": "bench@tether.invalid",
        }
        self.repo.mkdir(parents=True)
        subprocess.run(["git", "init", "-q", "-b", "main"], cwd=self.repo, check=True, env=env)
        (self.repo / "README.md").write_text("# fan-out bench\n")
        subprocess.run(["git", "add", "-A"], cwd=self.repo, check=True, env=env)
        subprocess.run(["git", "commit", "-q", "-m", "bench"], cwd=self.repo, check=True, env=env)

    def _module(self, sleep_s: float) -> str:
        if sleep_s not in self.modules:
            name = f"fanout_{len(self.modules)}_{uuid.uuid4().hex[:6]}"
            (self.repo / f"{name}.py").write_text(USER_CODE.format(sleep_s=sleep_s))
            self.modules[sleep_s] = name
        return self.modules[sleep_s]

    def tether(self, *, trials: int, sleep_s: float) -> dict:
        """One compare stage run end to end; its trials' instants from the run's events."""
        from tether.cluster.monitor import stop_monitor
        from tether.cluster.pipeline import run_pipeline
        from tether.cluster.spec import parse_spec

        names = ", ".join(f'"t{i}"' for i in range(trials))
        spec = parse_spec(
            'name = "fanout"\n[compare]\n'
            f"extractors = [{names}]\nseeds = [0]\ngpus_per_trial = 1\n"
            f'cpus_per_trial = {CPUS_PER_TRIAL}\nrun = "{self._module(sleep_s)}:sleep_trial"\n'
            '[[stages]]\nname = "compare"\n'
        )
        run_id = f"fan-{uuid.uuid4().hex[:8]}"
        run_dir = self.repo / "results" / run_id
        t0, c0 = time.time(), time.process_time()
        with contextlib.redirect_stdout(io.StringIO()):  # the comparison's text, as in a job log
            result = run_pipeline(
                run_id=run_id, spec=spec, run_dir=run_dir, worktree=self.repo,
                checkpoint_dir=self.work / "ckpt", commit=False,
            )  # fmt: skip
        t1, cpu = time.time(), time.process_time() - c0
        stop_monitor(run_id=run_id)
        if result.status != "succeeded":
            raise SystemExit(f"tether's compare stage failed: {result.error}")
        starts, ends = [], []
        for line in (run_dir / "events.jsonl").read_text().splitlines():
            e = json.loads(line) if line.strip() else {}
            if e.get("kind") == "stage" and e.get("trial"):
                if e["status"] == "started":
                    starts.append(e["time"])
                elif e["status"] == "finished":
                    ends.append(e["time"])
        if len(starts) != trials or len(ends) != trials:
            raise SystemExit(f"expected {trials} trial starts/ends, got {len(starts)}/{len(ends)}")
        cpus = [
            json.loads(p.read_text())["metrics"]["worker_cpu_s"]
            for p in (run_dir / "compare" / "trials").glob("*/trial.json")
        ]
        return _phases(t0=t0, t1=t1, starts=starts, ends=ends, cpus=cpus, cpu=cpu)

    def tune(self, *, trials: int, sleep_s: float) -> dict:
        from ray import tune

        logging.getLogger("ray.tune").setLevel(logging.ERROR)  # no "TensorboardX missing"
        tuner = tune.Tuner(
            tune.with_resources(_tune_trial, {"gpu": 1}),
            param_space={
                "trial": tune.grid_search([f"t{i}" for i in range(trials)]),
                "sleep_s": sleep_s,
            },
            run_config=tune.RunConfig(
                storage_path=str(self.work / "tune"),
                name=f"fan-{uuid.uuid4().hex[:8]}",
                verbose=0,
            ),
        )
        t0, c0 = time.time(), time.process_time()
        results = tuner.fit()
        t1, cpu = time.time(), time.process_time() - c0
        if results.errors or len(results) != trials:
            raise SystemExit(f"Ray Tune: {len(results)} results, errors {results.errors}")
        cpus = [r.metrics["worker_cpu_s"] for r in results]
        return _phases(t0=t0, t1=t1, starts=[], ends=[], cpus=cpus, cpu=cpu)  # no trial instants

    def ray(self, *, trials: int, sleep_s: float) -> dict:
        import ray

        nap = ray.remote(num_gpus=1)(_sleep)
        t0, c0 = time.time(), time.process_time()
        spans = ray.get([nap.remote(sleep_s) for _ in range(trials)])
        t1, cpu = time.time(), time.process_time() - c0
        starts, ends, cpus = (list(x) for x in zip(*spans, strict=True))
        return _phases(t0=t0, t1=t1, starts=starts, ends=ends, cpus=cpus, cpu=cpu)


# --------------------------------------------------------------------------- the run


def measure(
    *, scenarios: list[Scenario], reps: int, sleep_s: float, num_cpus: int, systems: tuple
) -> dict:
    import ray

    results: dict[str, dict] = {}
    for gpus in sorted({s.gpus for s in scenarios}):
        work = Path(tempfile.mkdtemp(prefix="tb-fan-", dir="/tmp"))
        temp_dir = work / "ray"
        cluster = start_local_cluster(
            temp_dir=temp_dir, dashboard_port=free_port(), num_cpus=num_cpus, num_gpus=gpus,
            object_store_bytes=200 * MB,
        )  # fmt: skip
        try:
            ray.init(
                address=cluster.gcs_address, log_to_driver=False, logging_level=logging.WARNING
            )
            bench = Bench(work=work)
            for system in systems:  # warm-up, untimed: worker pool, imports, Tune's set-up
                getattr(bench, system)(trials=gpus, sleep_s=1.0)
            for sc in (s for s in scenarios if s.gpus == gpus):
                t = results[sc.label] = {s: {p: [] for p in PHASES} for s in systems}
                for rep in range(reps):
                    k = rep % len(systems)
                    for system in systems[k:] + systems[:k]:
                        time.sleep(1.0)  # let the last run's workers exit
                        out = getattr(bench, system)(trials=sc.trials, sleep_s=sleep_s)
                        for phase, value in out.items():
                            t[system][phase].append(value)
                    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
                    print(
                        f"  {sc.label} rep {rep + 1}: "
                        + ", ".join(f"{s} {t[s]['wall'][-1]:.2f} s" for s in systems)
                        + f" (load average {load})",
                        flush=True,
                    )
        finally:
            ray.shutdown()
            stop_local_cluster(temp_dir=temp_dir)
            shutil.rmtree(work, ignore_errors=True)
    return results


def _median(xs: list) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def report(
    *, scenarios: list[Scenario], results: dict, sleep_s: float, reps: int, systems: tuple
) -> None:
    import ray

    med = statistics.median
    print(
        f"\nmachine: {platform.machine()}, {os.cpu_count()} cores; Python "
        f"{platform.python_version()}, Ray {ray.__version__}; trials of {sleep_s:g} s, "
        f"{reps} repetition(s); load average at the end "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}\n"
    )
    print(
        "| scenario | system | min s | median s | median / ideal (waves x trial) "
        "| vs Ray Tune, paired by repetition: median (range) |\n|---|---|---:|---:|---:|---:|"
    )
    verdicts = []
    for sc in scenarios:
        t = results[sc.label]
        ideal = sc.waves * sleep_s
        for system in systems:
            xs = t[system]["wall"]
            vs_tune = "-"
            if "tune" in systems:
                pairs = [a / b for a, b in zip(xs, t["tune"]["wall"], strict=True)]
                vs_tune = f"{med(pairs):.2f}x ({min(pairs):.2f}-{max(pairs):.2f})"
            print(
                f"| {sc.label} | {NAMES[system]} | {min(xs):.2f} | {med(xs):.2f} | "
                f"{med(xs) / ideal:.2f}x | {vs_tune} |"
            )
        if "tether" in systems:
            ours = med(t["tether"]["wall"])
            waves = "one trial" if sc.waves == 1 else f"{sc.waves} trials"
            line = (
                f"{sc.label}: tether <= 1.2x {waves} ({ideal:g} s): "
                f"{'met' if ours <= 1.2 * ideal else 'NOT met'} ({ours / ideal:.2f}x)"
            )
            if "tune" in systems:
                pairs = [a / b for a, b in zip(t["tether"]["wall"], t["tune"]["wall"], strict=True)]
                line += (
                    f"; tether <= Ray Tune: {'met' if med(pairs) <= 1.0 else 'NOT met'} "
                    f"({med(pairs):.2f}x, median of the paired ratios)"
                )
            verdicts.append(line)
    print(
        "\n| scenario | system | wall s | start-up s | trials' span s | tail s "
        "| CPU s per trial worker before its body | driver CPU s |"
        "\n|---|---|---:|---:|---:|---:|---:|---:|"
    )
    for sc in scenarios:
        for system in systems:
            p = {k: _median(v) for k, v in results[sc.label][system].items()}
            print(
                f"| {sc.label} | {NAMES[system]} | " + " | ".join(_num(p[k]) for k in PHASES) + " |"
            )
    if verdicts:
        print("\ngoals (medians):")
        for v in verdicts:
            print(f"  {v}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--trial-s", type=float, default=5.0, help="seconds each trial sleeps")
    parser.add_argument("--num-cpus", type=int, default=16, help="logical CPUs of the cluster")
    parser.add_argument("--quick", action="store_true", help="1 s trials, 1 repetition")
    parser.add_argument(
        "--systems", default=",".join(SYSTEMS), help="comma-separated subset of tether,tune,ray"
    )
    args = parser.parse_args()
    systems = tuple(s for s in SYSTEMS if s in args.systems.split(","))
    reps, sleep_s = (1, 1.0) if args.quick else (args.reps, args.trial_s)
    scenarios = [Scenario(4, 4), Scenario(8, 4), Scenario(8, 8)]
    results = measure(
        scenarios=scenarios, reps=reps, sleep_s=sleep_s, num_cpus=args.num_cpus, systems=systems
    )
    report(scenarios=scenarios, results=results, sleep_s=sleep_s, reps=reps, systems=systems)


if __name__ == "__main__":
    main()
