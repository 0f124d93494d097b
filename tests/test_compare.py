"""The compare stage on a real local Ray cluster with logical GPUs: one Ray task per trial,
placed by Ray; a failing trial leaves the others; resume re-runs only what did not finish;
the comparison is rewritten and committed as trials finish."""

from __future__ import annotations

import json
import textwrap
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import ray
from conftest import git

from tether.cluster.monitor import stop_monitor
from tether.cluster.pipeline import read_state, run_pipeline
from tether.cluster.spec import parse_spec
from tether.ml.comparison_report import read_trial

NAP_S = 2  # each user trial sleeps this long after the barrier

# A trial waits (at most 120 s) until as many trials have started as ``barrier.txt`` in the
# worktree says: proof that Ray ran that many at once, whatever the machine's load.
USER_CODE = f"""
import time

ACCURACY = {{"a": 0.90, "b": 0.80, "c": 0.70, "d": 0.60, "bad": 0.5}}

def nap(ctx):
    t = ctx.trial
    ctx.reporter.report(step=1, metrics={{"loss": 1.0}})
    print(f"trial {{t.name}} naps", flush=True)
    barrier = ctx.worktree / "barrier.txt"
    if barrier.exists():
        need = int(barrier.read_text())
        (ctx.worktree / f"started-{{t.name}}").write_text("")
        deadline = time.monotonic() + 120
        while len(list(ctx.worktree.glob("started-*"))) < need:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only some of {{need}} trials ever ran at once")
            time.sleep(0.05)
    time.sleep({NAP_S})
    if t.extractor == "bad" and not (ctx.worktree / "fixed.flag").exists():
        print("step 3: loss=nan", flush=True)
        raise ValueError("loss is nan at step 3")
    (ctx.out_dir / "note.json").write_text('{{"ok": true}}')
    return {{"test": {{"accuracy": ACCURACY[t.extractor] + 0.01 * t.seed}}, "device": "cpu"}}
"""


@dataclass
class Run:
    run_id: str
    worktree: Path
    run_dir: Path
    ckpt: Path
    module: str
    branch: str

    def spec(self, body: str):
        text = 'name = "cmp"\n' + textwrap.dedent(body).replace("MOD", self.module)
        return parse_spec(text)

    def go(self, spec, **kw):
        return run_pipeline(
            run_id=self.run_id, spec=spec, run_dir=self.run_dir, worktree=self.worktree,
            checkpoint_dir=self.ckpt, heartbeat_s=1, **kw,
        )  # fmt: skip

    def events(self) -> list[dict]:
        lines = (self.run_dir / "events.jsonl").read_text().splitlines()
        return [json.loads(x) for x in lines if x.strip()]

    def trial(self, name: str):
        return read_trial(self.run_dir / "compare" / "trials" / name / "trial.json")

    def log(self) -> list[str]:
        out = git("log", "--format=%s", f"main..{self.branch}", cwd=self.worktree)
        return list(reversed(out.splitlines())) if out else []


@pytest.fixture
def run(git_repo, tmp_path):
    module = f"tc_{uuid.uuid4().hex[:8]}"
    (git_repo.path / f"{module}.py").write_text(USER_CODE)
    git("add", "-A", cwd=git_repo.path)
    git("commit", "-q", "-m", "user code", cwd=git_repo.path)
    run_id = f"c-{uuid.uuid4().hex[:8]}"
    branch = f"tether/cmp/{run_id}"
    wt = tmp_path / "wt"
    git("worktree", "add", "-q", "-b", branch, str(wt), "main", cwd=git_repo.path)
    r = Run(run_id, wt, wt / "results" / run_id, tmp_path / "ckpt", module, branch)
    yield r
    if ray.is_initialized():
        stop_monitor(run_id=r.run_id)


def _intervals(events: list[dict]) -> dict[str, tuple[float, float]]:
    """Each trial's (start, end) from its own stage events."""
    out: dict[str, list[float]] = {}
    for e in events:
        if e["kind"] == "stage" and e.get("trial") and e["status"] in ("started", "finished"):
            out.setdefault(e["trial"], []).append(e["time"])
    return {t: (min(ts), max(ts)) for t, ts in out.items()}


def _most_at_once(intervals) -> int:
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    most = now = 0
    for _, step in edges:  # an end before a start at the same instant
        now += step
        most = max(most, now)
    return most


def test_four_trials_on_four_logical_gpus_each_get_their_own_and_run_at_once(ray_driver, run):
    spec = run.spec(
        """
        [compare]
        extractors = ["a", "b", "c", "d"]
        seeds = [0]
        gpus_per_trial = 1
        cpus_per_trial = 0.25
        run = "MOD:nap"
        [[stages]]
        name = "compare"
        """
    )
    (run.worktree / "barrier.txt").write_text("4")  # all four must run at the same time
    result = run.go(spec)
    assert result.status == "succeeded", result.error
    records = {n: run.trial(f"{n}-s0") for n in "abcd"}
    assert all(r.status == "finished" for r in records.values())
    gpu_ids = [r.gpu_ids for r in records.values()]
    assert all(len(g) == 1 for g in gpu_ids), gpu_ids
    assert {g[0] for g in gpu_ids} == {"0", "1", "2", "3"}  # distinct, as Ray assigned them
    events = run.events()
    spans = _intervals(events)
    assert sorted(spans) == ["a-s0", "b-s0", "c-s0", "d-s0"]
    starts = {e["trial"]: e for e in events if e["kind"] == "stage" and e["status"] == "started"}
    assert {t: starts[f"{t}-s0"]["gpu_ids"] for t in "abcd"} == {
        t: r.gpu_ids for t, r in records.items()
    }  # the events say which GPU each trial got, as the records do
    results = {e["trial"]: e["value"] for e in events if e["kind"] == "metric"}
    assert results == {f"{t}-s0": v for t, v in zip("abcd", (0.9, 0.8, 0.7, 0.6), strict=True)}
    t0 = min(s for s, _ in spans.values())
    shown = {t: (round(s - t0, 2), round(e - t0, 2)) for t, (s, e) in spans.items()}
    assert max(s for s, _ in spans.values()) < min(e for _, e in spans.values()), shown
    assert records["a"].value("test.accuracy") == pytest.approx(0.90)
    # Each trial's files reached the head run directory beside its record.
    assert (run.run_dir / "compare" / "trials" / "c-s0" / "note.json").exists()
    # One commit for the empty comparison, then one per batch of trials that ended together,
    # each with more finished than the one before, the last naming the best.
    log = run.log()
    assert 2 <= len(log) <= 5 and all(m.startswith("compare: ") for m in log), log
    assert log[0] == "compare: 0/4 trials finished"
    done = [int(m.split()[1].split("/")[0]) for m in log]
    assert done == sorted(set(done)), log
    assert log[-1].startswith("compare: 4/4 trials, best a 0.9")
    state = read_state(run.run_dir)
    assert state.stages["compare"].status == "finished"
    assert state.stages["compare"].commit == git("rev-parse", "HEAD", cwd=run.worktree)


def test_four_trials_of_two_gpus_each_on_four_gpus_never_run_more_than_two_at_once(ray_driver, run):
    spec = run.spec(
        """
        [compare]
        extractors = ["a", "b"]
        seeds = [0, 1]
        gpus_per_trial = 2
        cpus_per_trial = 0.25
        run = "MOD:nap"
        [[stages]]
        name = "compare"
        """
    )
    (run.worktree / "barrier.txt").write_text("2")  # two do run at once
    result = run.go(spec, commit=False)
    assert result.status == "succeeded", result.error
    spans = _intervals(run.events())
    assert len(spans) == 4
    assert _most_at_once(spans.values()) == 2  # and never more
    for name in ("a-s0", "a-s1", "b-s0", "b-s1"):
        rec = run.trial(name)
        assert rec.status == "finished" and len(rec.gpu_ids) == 2


def test_a_failing_trial_leaves_the_others_and_tether_resume_reruns_only_it(
    git_repo, ray_cluster, monkeypatch, capsys
):
    """Through the CLI, as a researcher runs it: `tether submit`, then `tether resume`."""
    from conftest import write_local_profile
    from test_resume import _json_out, _wait

    repo = git_repo.path
    write_local_profile(repo, ray_cluster)
    monkeypatch.chdir(repo)
    monkeypatch.setenv("COLUMNS", "200")
    module = f"tc_{uuid.uuid4().hex[:8]}"
    (repo / f"{module}.py").write_text(USER_CODE)
    (repo / "cmp.toml").write_text(
        textwrap.dedent(
            f"""
            name = "cmp"
            [compare]
            extractors = ["a", "b", "bad"]
            seeds = [0]
            gpus_per_trial = 1
            cpus_per_trial = 0.25
            run = "{module}:nap"
            [[stages]]
            name = "compare"
            """
        )
    )
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "trials and spec", cwd=repo)
    sub = _json_out(capsys, ["submit", "cmp.toml", "--json"])
    run_id, branch, wt = sub["run_id"], sub["branch"], Path(sub["worktree"])
    compare = wt / "results" / run_id / "compare"
    assert _wait(ray_cluster.dashboard_url, sub["job_id"]) == "FAILED"
    bad = read_trial(compare / "trials" / "bad-s0" / "trial.json")
    assert bad.status == "failed" and bad.error == "ValueError: loss is nan at step 3"
    assert "step 3: loss=nan" in bad.last_lines
    kept = {n: read_trial(compare / "trials" / n / "trial.json") for n in ("a-s0", "b-s0")}
    assert [r.status for r in kept.values()] == ["finished", "finished"]
    comparison = json.loads((compare / "comparison.json").read_text())
    assert comparison["counts"] == {**comparison["counts"], "finished": 2, "failed": 1}
    assert "loss is nan at step 3" in json.dumps(comparison["trials"])  # never dropped
    md = (compare / "comparison.md").read_text()
    assert "bad" in md and "loss is nan at step 3" in md
    log = git("log", "--format=%s", f"main..{branch}", cwd=repo).splitlines()
    assert log[0].startswith("compare: 2/3 trials, best a 0.9"), log
    state = json.loads((wt / "results" / run_id / "run_state.json").read_text())
    assert state["stages"]["compare"]["status"] == "failed"
    assert "1 of 3 trials failed (bad-s0: ValueError: loss is nan at step 3)" in state["error"]

    (wt / "fixed.flag").write_text("fixed")
    mark = len((wt / "results" / run_id / "events.jsonl").read_text().splitlines())
    res = _json_out(capsys, ["resume", run_id, "--json"])
    assert res["rerun"] == ["compare"]
    assert _wait(ray_cluster.dashboard_url, res["job_id"]) == "SUCCEEDED"
    lines = (wt / "results" / run_id / "events.jsonl").read_text().splitlines()[mark:]
    new = [json.loads(x) for x in lines]
    started = {
        e["trial"] for e in new if e["kind"] == "stage" and e["status"] == "started" and e["trial"]
    }
    assert started == {"bad-s0"}  # only the failed trial ran again
    for name, rec in kept.items():  # the finished ones are kept as they were
        assert read_trial(compare / "trials" / name / "trial.json") == rec
    assert read_trial(compare / "trials" / "bad-s0" / "trial.json").status == "finished"
    assert any(
        e["kind"] == "alert" and e["code"] == "compare:resumed"
        and "2 of 3 trials already finished: only bad-s0 run" in e["message"]
        for e in new
    )  # fmt: skip
    log = git("log", "--format=%s", f"main..{branch}", cwd=repo).splitlines()
    assert log[0].startswith("compare: 3/3 trials, best a 0.9"), log


def test_a_node_removed_mid_trial_the_trial_resumes_on_the_other_node_from_its_checkpoint(
    multinode_cluster, run
):
    import threading

    cluster = multinode_cluster
    spec = run.spec(
        """
        [train]
        epochs = 8
        batch_size = 16
        patience = 20
        extractor = { name = "i3d", size = "tiny" }
        track = { train_size = 96, val_size = 16, test_size = 16 }
        [compare]
        extractors = ["i3d"]
        seeds = [0, 1]
        gpus_per_trial = 1
        cpus_per_trial = 1
        [[stages]]
        name = "compare"
        max_retries = 2
        """
    )
    out: dict = {}
    driver = threading.Thread(target=lambda: out.update(result=run.go(spec, commit=False)))
    driver.start()
    victim_node = None
    deadline = time.monotonic() + 180
    while victim_node is None:
        assert time.monotonic() < deadline and driver.is_alive(), "trial i3d-s0 never got going"
        time.sleep(0.2)
        events = run.events() if (run.run_dir / "events.jsonl").exists() else []
        epochs = [
            e for e in events
            if e["kind"] == "progress" and e.get("trial") == "i3d-s0" and e.get("epoch_end")
        ]  # fmt: skip
        if len(epochs) >= 2:
            start = next(
                e for e in events
                if e["kind"] == "stage" and e.get("trial") == "i3d-s0" and e["status"] == "started"
            )  # fmt: skip
            victim_node = start["node"]
    victim = next(n for n in cluster.worker_nodes if n.node_id == victim_node)
    cluster.remove_node(victim)
    driver.join(timeout=300)
    assert not driver.is_alive()
    result = out["result"]
    assert result.status == "succeeded", result.error
    rec = run.trial("i3d-s0")
    assert rec.status == "finished" and rec.node != victim_node
    assert rec.attempts >= 2 and rec.resumed_from_epoch is not None and rec.resumed_from_epoch >= 2
    starts = [
        e for e in run.events()
        if e["kind"] == "stage" and e.get("trial") == "i3d-s0" and e["status"] == "started"
    ]  # fmt: skip
    assert any(e.get("resumed_from_epoch", 0) >= 2 for e in starts), starts
    # Its artifacts reached the head's run directory; the comparison completed with both.
    results = json.loads(
        (run.run_dir / "compare" / "trials" / "i3d-s0" / "training_results.json").read_text()
    )
    assert results["num_epochs"] == 8
    assert run.trial("i3d-s1").status == "finished"
    assert (run.run_dir / "compare" / "comparison.html").exists()


def test_a_real_comparison_of_four_extractors_and_two_seeds_on_cpu(ray_driver, run):
    import warnings

    import numpy as np
    from scipy import stats

    spec = run.spec(
        """
        [train]
        epochs = 2
        batch_size = 16
        extractor = { name = "i3d", size = "tiny" }
        track = { train_size = 64, val_size = 32, test_size = 64 }
        [compare]
        extractors = ["i3d", "slowfast", "magvit", "transformer"]
        seeds = [0, 1]
        gpus_per_trial = 0.5
        cpus_per_trial = 1
        [compare.overrides.magvit]
        lr = 1e-3
        [[stages]]
        name = "compare"
        """
    )
    result = run.go(spec)
    assert result.status == "succeeded", result.error
    names = ["i3d", "slowfast", "magvit", "transformer"]
    trials = run.run_dir / "compare" / "trials"
    values: dict[str, list[float]] = {}
    for name in names:
        for seed in (0, 1):
            res = json.loads((trials / f"{name}-s{seed}" / "training_results.json").read_text())
            assert res["model"] == name and res["model_config"]["seed"] == seed
            assert res["model_config"]["lr"] == (1e-3 if name == "magvit" else 2e-3)
            values.setdefault(name, []).append(res["test_results"]["accuracy"])
    starts = [e for e in run.events() if e["kind"] == "stage" and e["status"] == "started"]
    assert sorted(e["epochs"] for e in starts if e["trial"]) == [2] * 8  # planned: for an ETA
    comparison = json.loads((run.run_dir / "compare" / "comparison.json").read_text())
    assert comparison["counts"]["finished"] == 8 and comparison["counts"]["failed"] == 0
    assert comparison["provenance"]["branch"] == run.branch
    assert comparison["provenance"]["commit"] == git("rev-parse", "main", cwd=run.worktree)
    by_name = {e["extractor"]: e for e in comparison["extractors"]}
    # The intervals and spreads, recomputed here from the trials' own results.
    for name in names:
        v = np.array(values[name])
        e = by_name[name]
        assert e["n"] == 2 and [p["value"] for p in e["points"]] == list(v)
        assert e["mean"] == pytest.approx(v.mean()) and e["std"] == pytest.approx(v.std(ddof=1))
        assert e["warning"] == "2 seeds: the spread is not known"
        assert v.min() <= e["ci_low"] <= e["ci_high"] <= v.max()
        if np.ptp(v) == 0:
            assert e["ci_low"] == e["ci_high"] == v[0]
            continue
        for method in ("BCa", "percentile"):  # BCa, or percentile where BCa is undefined
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ci = stats.bootstrap(
                    (v,), np.mean, n_resamples=9999, confidence_level=0.95, method=method,
                    rng=np.random.default_rng(0),
                ).confidence_interval  # fmt: skip
            if np.isfinite(ci.low) and np.isfinite(ci.high):
                break
        assert (e["ci_low"], e["ci_high"]) == pytest.approx((ci.low, ci.high), abs=1e-12)
    # The tiers: Welch t-tests over all pairs, Holm-corrected, a new tier where the next is
    # significantly worse than the best of the current one.
    order = sorted(names, key=lambda n: (-np.mean(values[n]), n))
    assert comparison["ranking"]["order"] == order
    pairs = [(a, b) for i, a in enumerate(order) for b in order[i + 1 :]]
    p = {}
    for a, b in pairs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            welch = float(stats.ttest_ind(values[a], values[b], equal_var=False).pvalue)
        p[(a, b)] = welch if np.isfinite(welch) else 1.0  # both constant: nothing to tell
    ranked = sorted(p, key=p.get)
    holm, running = {}, 0.0
    for k, pair in enumerate(ranked):
        running = max(running, min(1.0, (len(ranked) - k) * p[pair]))
        holm[pair] = running
    tests = {(t["a"], t["b"]): t for t in comparison["tests"]}
    tiers, current = [], [order[0]]
    for name in order[1:]:
        if holm[(current[0], name)] < 0.05:
            tiers.append(current)
            current = [name]
        else:
            current.append(name)
    tiers.append(current)
    for pair in pairs:
        got = tests.get(pair) or tests.get(pair[::-1])
        assert got["p_holm"] == pytest.approx(holm[pair], abs=1e-9), (pair, got)
    assert [t["extractors"] for t in comparison["ranking"]["tiers"]] == tiers
    md = (run.run_dir / "compare" / "comparison.md").read_text()
    assert all(name in md for name in names) and "2 seeds: the spread is not known" in md
    assert run.log()[-1].startswith(f"compare: 8/8 trials, best {order[0]} ")
