"""The comparison report: its JSON checked against ``comparison_stats`` and against scipy
directly, failures kept with their error, Markdown and HTML telling the same ranking, the HTML
self-contained with each plot decoded by headless Chromium, same inputs giving the same bytes,
and ``tether analyze --compare`` rebuilding it from a pulled run's trial folders."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from tether.client.cli import main
from tether.ml import comparison_stats as cs
from tether.ml.atomic import write_json_atomic
from tether.ml.comparison_report import (
    ComparisonRecordError,
    Provenance,
    TrialRecord,
    metrics_from_training_results,
    read_trials,
    val_curves_from_training_results,
    write_comparison,
)
from tether.ml.results import parse_training_results

# Test accuracy per extractor and seed: i3d and magvit close (one tier), slowfast and lstm
# clearly below; slowfast-s2 fails, lstm-s2 is still pending.
ACCURACY = {
    "i3d": [0.980, 0.984, 0.979],
    "magvit": [0.976, 0.981, 0.974],
    "slowfast": [0.930, 0.936, None],
    "lstm": [0.851, 0.858, None],
}
LATENCY = {"i3d": 12.0, "magvit": 20.0, "slowfast": 9.0, "lstm": 3.0}
ERROR = "ValueError: loss is nan at epoch 3"
LAST_LINES = ["epoch 2: val_loss=0.41", "epoch 3: loss=nan"]
PROVENANCE = Provenance(run="r-1a2b", spec="cmp", branch=None, commit="abc1234", dirty=True)


def training_results(*, model: str, seed: int, accuracy: float, latency: float) -> dict:
    """A training_results.json as ml.train writes it (validated by its own schema below)."""
    epochs = 4
    val_loss = [round(0.9 - 0.15 * e - 0.01 * seed, 4) for e in range(epochs)]
    data = {
        "schema_version": 1,
        "task": "track_persistence",
        "model": model,
        "num_epochs": epochs,
        "best_epoch": epochs,
        "best_val_loss": val_loss[-1],
        "stopped_early": False,
        "train_history": {
            "loss": [round(v - 0.05, 4) for v in val_loss],
            "accuracy": [round(accuracy - 0.1 + 0.03 * e, 4) for e in range(epochs)],
            "lr": [0.002] * epochs,
        },
        "val_history": {
            "loss": val_loss,
            "accuracy": [round(accuracy - 0.12 + 0.04 * e, 4) for e in range(epochs)],
        },
        "test_results": {
            "kind": "classification",
            "accuracy": accuracy,
            "precision": accuracy - 0.004,
            "recall": accuracy - 0.002,
            "f1": accuracy - 0.003,
            "confusion_matrix": [[48, 2], [1, 49]],
            "class_names": ["transient", "persistent"],
            "per_class": {
                "transient": {"precision": 0.98, "recall": 0.96, "f1": 0.97, "support": 50},
                "persistent": {"precision": 0.96, "recall": 0.98, "f1": 0.97, "support": 50},
            },
            "early_decision": {
                "threshold": 0.9,
                "frames": 16,
                "early_stop_rate": 0.6 + 0.01 * seed,
                "mean_decision_frame": 9.5,
                "compute_savings_pct": 40.6,
                "accuracy_at_decision": accuracy - 0.01,
                "decision_frames": [8, 10, 16],
            },
            "latency_ms_per_clip": latency + 0.3 * seed,
        },
        "model_config": {"extractor": {"name": model}, "seed": seed, "test_weights": "best"},
        "dataset_info": {"split_sizes": {"train": 96, "val": 16, "test": 16}},
        "parameters": 120_000 + len(model),
        "device": "cuda",
        "timings": {
            "train_seconds": 300.0 + seed,
            "eval_seconds": 2.0,
            "epoch_seconds": [75.0] * epochs,
            "samples_per_second": 50.0,
        },
    }
    parse_training_results(data, source="builder")  # the real schema: a valid file
    return data


def build_records() -> tuple[list[TrialRecord], dict[str, dict]]:
    """Twelve trials (4 extractors x 3 seeds): 10 finished, slowfast-s2 failed, lstm-s2 pending."""
    records, results = [], {}
    for extractor, values in ACCURACY.items():
        for seed, acc in enumerate(values):
            name = f"{extractor}-s{seed}"
            common = dict(
                trial=name, extractor=extractor, seed=seed, config_hash=f"{seed:016x}", gpus=1.0,
                overrides={"extractor.name": extractor, "seed": seed},
            )  # fmt: skip
            if acc is not None:
                res = training_results(
                    model=extractor, seed=seed, accuracy=acc, latency=LATENCY[extractor]
                )
                results[name] = res
                rec = TrialRecord(
                    **common, status="finished", device="cuda:0", gpu_ids=[str(seed)],
                    node="node-a", host="gpu-1", attempts=1, started=1000.0, ended=1300.0,
                    metrics=metrics_from_training_results(res, gpus=1.0),
                    val_curves=val_curves_from_training_results(res),
                )  # fmt: skip
            elif extractor == "slowfast":
                rec = TrialRecord(
                    **common, status="failed", error=ERROR, last_lines=LAST_LINES, attempts=1,
                    node="node-b", gpu_ids=["3"],
                )  # fmt: skip
            else:
                rec = TrialRecord(**common, status="pending")
            records.append(rec)
    return records, results


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    records, _ = build_records()
    out = tmp_path_factory.mktemp("cmp")
    comparison = write_comparison(
        records=records, metric="test.accuracy", mode="max", epoch="best",
        provenance=PROVENANCE, out_dir=out, expected_trials=12,
    )  # fmt: skip
    return comparison, out, json.loads((out / "comparison.json").read_text())


def _holm(p: list[float]) -> list[float]:
    """Holm's step-down adjustment, written out here to check the module's."""
    order = np.argsort(p, kind="stable")
    m, out, running = len(p), [0.0] * len(p), 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (m - k) * p[i]))
        out[i] = running
    return out


def test_json_agrees_with_comparison_stats_and_with_scipy(written):
    comparison, _, data = written
    finished = {e: [v for v in vals if v is not None] for e, vals in ACCURACY.items()}
    # Through the statistics module, as the report should have called it.
    trials = [
        cs.TrialResult(e, s, v, None if v is not None else ERROR)
        for e, vals in ACCURACY.items()
        for s, v in enumerate(vals)
        if not (e == "lstm" and v is None)  # pending: not a result
    ]
    ranking = cs.rank_tiers(trials=trials, metric="test.accuracy", mode="max")
    assert data["ranking"]["order"] == list(ranking.order) == ["i3d", "magvit", "slowfast", "lstm"]
    assert data["ranking"]["tiers"] == [
        {"rank": t.rank, "extractors": list(t.extractors), "tested": t.tested}
        for t in ranking.tiers
    ]
    assert data["ranking"]["tiers"][0]["extractors"] == ["i3d", "magvit"]
    summary = {
        s.extractor: s for s in cs.summarize(trials=trials, metric="test.accuracy", mode="max")
        .extractors
    }  # fmt: skip
    rows = {row["extractor"]: row for row in data["extractors"]}
    for name, values in finished.items():
        row, s = rows[name], summary[name]
        # comparison_stats ...
        assert (row["mean"], row["std"], row["median"]) == (s.mean, s.std, s.median)
        assert (row["ci_low"], row["ci_high"]) == (s.ci_low, s.ci_high)
        # ... and independently: numpy, and scipy's BCa bootstrap with the documented seed
        assert row["mean"] == pytest.approx(np.mean(values))
        assert row["std"] == pytest.approx(np.std(values, ddof=1))
        assert row["median"] == pytest.approx(np.median(values))
        ci = stats.bootstrap((np.array(values),), np.mean, n_resamples=9999,
                             confidence_level=0.95, method="BCa",
                             rng=np.random.default_rng(0)).confidence_interval  # fmt: skip
        if np.isfinite(ci.low):
            assert (row["ci_low"], row["ci_high"]) == pytest.approx((ci.low, ci.high))
        assert row["ci_low"] <= row["mean"] <= row["ci_high"]
        assert [p["value"] for p in row["points"]] == values
        assert row["metrics"]["test.latency_ms"]["mean"] == pytest.approx(
            np.mean([LATENCY[name] + 0.3 * s for s in range(len(values))])
        )
    # Welch's t-test per pair from scipy, Holm-corrected here.
    pairs = [(t["a"], t["b"]) for t in data["tests"]]
    raw = [stats.ttest_ind(finished[a], finished[b], equal_var=False).pvalue for a, b in pairs]
    assert [t["p"] for t in data["tests"]] == pytest.approx(raw)
    assert [t["p_holm"] for t in data["tests"]] == pytest.approx(_holm(raw))
    assert [t["significant"] for t in data["tests"]] == [q < 0.05 for q in _holm(raw)]
    # P(row beats column): Mann-Whitney U / (n_a n_b), from scipy.
    names = data["improvement"]["extractors"]
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            got = data["improvement"]["probability"][i][j]
            if a == b:
                assert got is None
            else:
                u = stats.mannwhitneyu(finished[a], finished[b]).statistic
                assert got == pytest.approx(u / (len(finished[a]) * len(finished[b])))
    # The warnings, the counts, the epoch and the provenance.
    assert (
        rows["slowfast"]["warning"] == rows["lstm"]["warning"] == "2 seeds: the spread is not known"
    )
    assert rows["i3d"]["warning"] is None
    assert data["counts"] == {"expected": 12, "recorded": 12, "finished": 10, "failed": 1,
                              "missing_metric": 0, "pending": 1, "running": 0}  # fmt: skip
    assert rows["lstm"]["pending_seeds"] == [2]
    assert data["settings"]["epoch_text"] == "test metrics of the best epoch by val loss"
    assert data["provenance"] == PROVENANCE.model_dump(mode="json")
    # Every trial record is kept, the failure with its error and last lines.
    assert len(data["trials"]) == 12
    failed = [t for t in data["trials"] if t["status"] == "failed"]
    assert [(t["trial"], t["error"], t["last_lines"]) for t in failed] == [
        ("slowfast-s2", ERROR, LAST_LINES)
    ]
    assert rows["slowfast"]["failed"] == [{"seed": 2, "error": ERROR}]
    best = summary["i3d"]
    line = f"10/12 trials, best i3d {best.mean:.4g} +- {best.std:.2g}; 1 failed"
    assert comparison.summary_line == data["summary_line"] == line


def _md_ranking(md: str) -> list[tuple[str, str]]:
    section = md.split("## Ranking", 1)[1].split("\n## ", 1)[0]
    rows = [ln for ln in section.splitlines() if ln.startswith("| ") and "---" not in ln]
    return [tuple(c.strip() for c in r.strip("|").split("|")[:2]) for r in rows[1:]]


def _html_ranking(html: str) -> list[tuple[str, str]]:
    section = html.split("<h2>Ranking</h2>", 1)[1]
    body = section.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return [tuple(re.findall(r"<td>(.*?)</td>", tr)[:2]) for tr in body.split("</tr>") if tr]


def test_markdown_and_html_tell_the_same_ranking_and_list_the_failure(written):
    comparison, out, data = written
    md = (out / "comparison.md").read_text()
    html = (out / "comparison.html").read_text()
    expected = [("1", "i3d"), ("1", "magvit"), ("2", "slowfast"), ("3", "lstm")]
    tiers = {e: str(t["rank"]) for t in data["ranking"]["tiers"] for e in t["extractors"]}
    assert [(tiers[e], e) for e in data["ranking"]["order"]] == expected
    assert _md_ranking(md) == _html_ranking(html) == expected
    for doc in (md, html):
        assert "slowfast-s2" in doc and ERROR in doc and "epoch 3: loss=nan" in doc
        assert "slowfast: 2 seeds: the spread is not known" in doc
        assert "test metrics of the best epoch by val loss" in doc
        assert "10/12 trials finished, 1 failed, 1 pending or running" in doc
    assert "| branch | unknown |" in md and "| dirty | yes (uncommitted changes) |" in md
    assert "| lstm-s2 | pending | — |" in md  # counted and listed, never ranked
    assert "| latency (ms/clip) | 12.3 | 20.3 | 9.15 | 3.15 |" in md
    tier_lines = [ln for ln in comparison.text.splitlines() if ln.startswith("  tier ")]
    assert [ln.split(":")[0] for ln in tier_lines] == ["  tier 1", "  tier 2", "  tier 3"]
    assert "i3d 0.981 +- 0.0026 (3 seeds), magvit" in tier_lines[0]
    assert "  failed: slowfast-s2: " + ERROR in comparison.text.splitlines()
    assert set(comparison.paths) == {"json", "markdown", "html", "val_curves", "metric_bars",
                                     "accuracy_vs_latency"}  # fmt: skip


def test_html_is_self_contained_and_chromium_decodes_each_plot(written, tmp_path):
    from test_report import _CHROME_FLAGS, _PROBE, _chromium  # the existing helper

    chrome = _chromium()
    _, out, data = written
    html = (out / "comparison.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "http://" not in html and "https://" not in html
    assert html.count('<img alt="') == 3 and html.count('src="data:image/png;base64,') == 3
    assert data["plots"] == {n: f"plots/{n}.png" for n in
                             ("val_curves", "metric_bars", "accuracy_vs_latency")}  # fmt: skip
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("</body>", _PROBE))
    dom = subprocess.run(
        [chrome, *_CHROME_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
         probe.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert 'data-images="3/3"' in dom.stdout, dom.stderr[-2000:]


def test_same_records_in_any_order_give_byte_identical_json(written, tmp_path):
    _, out, _ = written
    records, _ = build_records()
    random.Random(7).shuffle(records)
    write_comparison(
        records=records, metric="test.accuracy", mode="max", epoch="best",
        provenance=PROVENANCE, out_dir=tmp_path, expected_trials=12,
    )  # fmt: skip
    assert (tmp_path / "comparison.json").read_bytes() == (out / "comparison.json").read_bytes()
    assert (tmp_path / "comparison.md").read_bytes() == (out / "comparison.md").read_bytes()


def test_summary_lines_before_any_result_and_without_latency(tmp_path):
    def rec(extractor, seed, status="finished", acc=None, **kw):
        metrics = {"test.accuracy": acc} if acc is not None else {}
        return TrialRecord(trial=f"{extractor}-s{seed}", extractor=extractor, seed=seed,
                           status=status, metrics=metrics, **kw)  # fmt: skip

    def write(records, **kw):
        return write_comparison(
            records=records, metric="test.accuracy", mode=kw.pop("mode", "max"),
            epoch=kw.pop("epoch", "last"), provenance=Provenance(), out_dir=tmp_path, **kw,
        )  # fmt: skip

    pending = [rec(e, s, status="pending") for e in ("a", "b") for s in (0, 1)]
    c = write(pending, expected_trials=12)
    assert c.summary_line == "0/12 trials finished"
    assert set(c.paths) == {"json", "markdown", "html"}  # nothing to plot yet
    md = (tmp_path / "comparison.md").read_text()
    assert "no trial has finished yet: no metric plot" in md
    assert "test metrics of the last epoch" in md and "| run | unknown |" in md
    failed = [rec("a", 0, status="failed", error="OOM"), rec("a", 1, status="running")]
    assert write(failed).summary_line == "0/2 trials finished; 1 failed"
    # One seed each: a mean without a spread; no latency recorded: that plot is left out.
    (tmp_path / "plots").mkdir(exist_ok=True)
    (tmp_path / "plots" / "accuracy_vs_latency.png").write_bytes(b"stale")
    c = write([rec("a", 0, acc=0.9), rec("b", 0, acc=0.8), rec("c", 0)])
    assert c.summary_line == "2/3 trials, best a 0.9; 1 failed"  # c has no test.accuracy
    assert not (tmp_path / "plots" / "accuracy_vs_latency.png").exists()
    md = (tmp_path / "comparison.md").read_text()
    assert "no finished trial recorded a latency (test.latency_ms)" in md
    assert "finished without a value of test.accuracy: c-s0" in md
    assert "a single finished seed cannot be tested" in md
    assert "no value of test.accuracy: c-s0" in c.text
    # Lower is better: the lowest mean is best.
    c = write([rec("a", s, acc=v) for s, v in enumerate((0.3, 0.31))]
              + [rec("b", s, acc=v) for s, v in enumerate((0.1, 0.12))], mode="min")  # fmt: skip
    assert c.summary_line.startswith("4/4 trials, best b 0.11 +- 0.014")


# --------------------------------------------------------------------------- read_trials, CLI


@pytest.fixture(scope="module")
def pulled_source(tmp_path_factory) -> Path:
    """A pulled run folder as the compare stage leaves it: comparison.json, and per trial a
    trial.json (metrics left empty: the laptop must take them from training_results.json)
    beside its training_results.json; the pending trial has no folder yet."""
    records, results = build_records()
    run_dir = tmp_path_factory.mktemp("pulled") / "results" / "r-1a2b"
    compare = run_dir / "compare"
    write_comparison(
        records=records, metric="test.accuracy", mode="max", epoch="best",
        provenance=PROVENANCE, out_dir=compare, expected_trials=12,
    )  # fmt: skip
    for rec in records:
        if rec.status == "pending":
            continue
        folder = compare / "trials" / rec.trial
        stripped = rec.model_copy(update={"metrics": {}, "val_curves": {}})
        write_json_atomic(folder / "trial.json", stripped.model_dump(mode="json"))
        if rec.trial in results:
            write_json_atomic(folder / "training_results.json", results[rec.trial])
    return run_dir


@pytest.fixture
def pulled(pulled_source, tmp_path) -> Path:
    """A fresh copy of the pulled run folder for one test."""
    run_dir = tmp_path / "results" / pulled_source.name
    shutil.copytree(pulled_source, run_dir)
    return run_dir


def test_read_trials_takes_metrics_from_training_results_and_names_bad_folders(pulled):
    run_dir = pulled
    compare = run_dir / "compare"
    recs = {r.trial: r for r in read_trials(compare)}
    assert len(recs) == 11 and "lstm-s2" not in recs
    assert recs["i3d-s1"].value("test.accuracy") == 0.984
    assert recs["i3d-s1"].value("gpu_hours") == pytest.approx(301 / 3600)
    assert recs["i3d-s1"].val_curves["accuracy"][-1] == pytest.approx(0.984)
    assert recs["slowfast-s2"].status == "failed" and recs["slowfast-s2"].error == ERROR
    # Results without a record: finished, named by its folder; GPU-hours unknown.
    (compare / "trials" / "i3d-s1" / "trial.json").unlink()
    rec = {r.trial: r for r in read_trials(compare)}["i3d-s1"]
    assert (rec.extractor, rec.seed, rec.status) == ("i3d", 1, "finished")
    assert rec.value("gpu_hours") is None and rec.device == "cuda"
    (compare / "trials" / "empty").mkdir()
    with pytest.raises(ComparisonRecordError, match=r"empty has neither trial.json nor"):
        read_trials(compare)
    (compare / "trials" / "empty").rmdir()
    (compare / "trials" / "magvit-s0" / "trial.json").write_text('{"trial": ')
    with pytest.raises(ComparisonRecordError, match=r"magvit-s0/trial.json is not a trial record"):
        read_trials(compare)


def test_tether_analyze_compare_rebuilds_the_report_through_the_real_cli(pulled):
    run_dir = pulled
    compare = run_dir / "compare"
    before = json.loads((compare / "comparison.json").read_text())
    (compare / "comparison.md").unlink()
    script = (
        "import sys\nfrom tether.client.cli import main\n"
        f"rc = main(['analyze', '--compare', {str(run_dir)!r}])\n"
        "assert 'torch' not in sys.modules, 'the laptop command imported torch'\n"
        "sys.exit(rc)\n"
    )
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "COLUMNS": "200"})  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "10/12 trials finished, 1 failed, 1 pending or running" in res.stdout
    assert "tier 1: i3d" in res.stdout and "failed: slowfast-s2: " + ERROR in res.stdout
    assert str(compare / "comparison.html") in res.stdout
    after = json.loads((compare / "comparison.json").read_text())
    # From the trials' training_results.json (their trial.json had no metrics), the
    # settings, provenance and the pending trial from the stage's comparison.json: the same.
    assert after == before
    assert (compare / "comparison.md").exists()


def test_analyze_compare_options_and_errors(pulled, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    run_dir = pulled
    out = tmp_path / "elsewhere"
    assert main(["analyze", "--compare", str(run_dir / "compare"), "--metric",
                 "test.latency_ms", "--out", str(out)]) == 0  # fmt: skip
    data = json.loads((out / "comparison.json").read_text())
    assert (data["settings"]["metric"], data["settings"]["mode"]) == ("test.latency_ms", "min")
    assert data["ranking"]["order"][0] == "lstm"  # fastest first
    assert "comparison of test.latency_ms (lower is better)" in capsys.readouterr().out

    def error(*argv: str) -> str:
        assert main(["analyze", *argv]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err
        return err

    assert "no finished trial has a value of 'test.nope'" in error(
        "--compare", str(run_dir), "--metric", "test.nope"
    )
    assert "no such folder" in error("--compare", str(tmp_path / "missing"))
    (tmp_path / "not-a-run").mkdir()
    err = error("--compare", str(tmp_path / "not-a-run"))
    assert "has no comparison: no trials/ folder" in err and "tether pull RUN" in err
    assert "--csv cannot go with it" in error("--compare", str(run_dir), "--csv", "x.csv")
    assert "--metric and --mode apply to --compare" in error("--metric", "test.f1")
    (run_dir / "compare" / "trials" / "i3d-s0" / "trial.json").write_text("[1, 2]")
    err = error("--compare", str(run_dir))
    assert "i3d-s0/trial.json is not a trial record" in err and "hint:" in err


def test_the_summary_line_names_a_single_seed_leader_beside_the_tested_best(tmp_path):
    from tether.ml.comparison_report import Provenance, TrialRecord, write_comparison

    def rec(ext: str, seed: int, value: float) -> TrialRecord:
        return TrialRecord(
            trial=f"{ext}-s{seed}", extractor=ext, seed=seed, status="finished",
            metrics={"test.accuracy": value},
        )  # fmt: skip

    records = [rec("raw", 0, 0.60), rec("raw", 1, 0.61), rec("wavelet", 0, 0.80)]
    out = write_comparison(
        records=records, metric="test.accuracy", mode="max", epoch="trial",
        provenance=Provenance(), out_dir=tmp_path, expected_trials=4,
    )  # fmt: skip
    assert out.summary_line == "3/4 trials, best raw 0.605 +- 0.0071 (wavelet 0.8 from 1 seed)"
    assert "metrics as each trial function returned them" in out.text
