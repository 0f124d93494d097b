"""Reports from real training results: numbers checked against the confusion matrix, the
HTML opened in headless Chromium, and the `tether analyze` / `tether diagnose` commands."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tether.client.cli import main
from tether.ml.data import TrackConfig
from tether.ml.models import ExtractorConfig
from tether.ml.report import analyze_results
from tether.ml.train import TrainConfig, fit

DATA = Path(__file__).parent / "data"
MATRIX = [[40, 10], [5, 45]]  # accuracy 0.85; macro P 0.8535, R 0.85, F1 0.8496


@pytest.fixture(scope="module")
def real_results(tmp_path_factory) -> Path:
    """A training_results.json from a real (tiny) run."""
    out = tmp_path_factory.mktemp("run")
    fit(
        config=TrainConfig(
            extractor=ExtractorConfig(name="i3d", size="tiny"),
            track=TrackConfig(train_size=48, val_size=16, test_size=16),
            epochs=3,
            batch_size=16,
        ),
        out_dir=out,
    )
    return out / "training_results.json"


def _with_matrix(src: Path, dst_dir: Path, *, stored: dict[str, float]) -> Path:
    data = json.loads(src.read_text())
    data["test_results"]["confusion_matrix"] = MATRIX
    data["test_results"].update(stored)
    dst_dir.mkdir(parents=True, exist_ok=True)
    path = dst_dir / "training_results.json"
    path.write_text(json.dumps(data))
    return path


TRUE = {"accuracy": 0.85, "precision": 0.853535, "recall": 0.85, "f1": 0.849624}


def test_report_numbers_equal_the_confusion_matrix(real_results, tmp_path):
    path = _with_matrix(real_results, tmp_path / "run", stored=TRUE)
    a = analyze_results(results_path=path, out_dir=tmp_path / "out")
    assert {k: round(v, 2) for k, v in a.metrics.items()} == {
        "accuracy": 0.85, "precision": 0.85, "recall": 0.85, "f1": 0.85
    }  # fmt: skip
    assert all(c.agrees for c in a.checks)
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| test accuracy | 85.00% |" in md
    assert "| accuracy | 0.8500 | 0.8500 |" in md
    assert "| precision | 0.8535 | 0.8535 |" in md
    assert "agree with the confusion matrix" in md
    for name in ("analysis_report.txt", "report.html", "diagnosis.json", "training_curves.png",
                 "confusion_matrix.png", "metrics_summary.png", "early_decision.png",
                 "attention.png"):  # fmt: skip
        assert (tmp_path / "out" / name).stat().st_size > 0, name


def test_disagreeing_stored_metrics_are_shown_and_the_matrix_is_trusted(real_results, tmp_path):
    path = _with_matrix(real_results, tmp_path / "run", stored={**TRUE, "accuracy": 0.95})
    a = analyze_results(results_path=path, out_dir=tmp_path / "out")
    assert a.metrics["accuracy"] == pytest.approx(0.85)
    bad = [c for c in a.checks if not c.agrees]
    assert [(c.name, c.stored, round(c.recomputed, 2)) for c in bad] == [("accuracy", 0.95, 0.85)]
    md = (tmp_path / "out" / "report.md").read_text()
    assert "accuracy stored 0.9500, matrix gives 0.8500" in md
    assert "uses the values computed from the matrix" in md
    assert "| test accuracy | 85.00% |" in md  # the summary uses the matrix
    txt = (tmp_path / "out" / "analysis_report.txt").read_text()
    assert "accuracy stored 0.9500, matrix gives 0.8500" in txt
    assert any("disagrees with the confusion matrix (0.8500)" in s for s in a.summary)


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    reason = "NO CHROMIUM: install Debian's chromium (`make test` does it when root)"
    if os.environ.get("CI") or os.environ.get("TETHER_REQUIRE_SSHD") == "1":
        pytest.fail(f"{reason}; CI requires it")
    pytest.skip(reason)


_CHROME_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-quic", "--virtual-time-budget=5000",
]  # fmt: skip
_PROBE = """<script>
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.setAttribute('data-images', ok + '/' + imgs.length);
});
</script></body>"""


def test_html_report_renders_every_image_in_chromium_and_fetches_nothing(real_results, tmp_path):
    chrome = _chromium()
    out = tmp_path / "out"
    analyze_results(results_path=real_results, out_dir=out)
    html = (out / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "http://" not in html and "https://" not in html
    n_images = html.count("<img ")
    assert n_images >= 5
    # The same page plus a probe that counts images Chromium actually decoded.
    probe = out / "probe.html"
    probe.write_text(html.replace("</body>", _PROBE))
    profile = tmp_path / "profile"
    dom = subprocess.run(
        [chrome, *_CHROME_FLAGS, f"--user-data-dir={profile}", "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert f'data-images="{n_images}/{n_images}"' in dom.stdout, dom.stderr[-2000:]
    shot = tmp_path / "report.png"
    subprocess.run(
        [chrome, *_CHROME_FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}",
         "--window-size=1100,2400", (out / "report.html").as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert shot.stat().st_size > 20_000  # a page of tables and plots, not a blank one


def test_tether_analyze_and_diagnose_commands(real_results, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    out = tmp_path / "a"
    code = main(["analyze", str(real_results), "--out", str(out),
                 "--target", "accuracy=0.85:0.95", "--llm"])  # fmt: skip
    text = capsys.readouterr().out
    assert code == 0
    assert "test accuracy" in text and f"{out / 'report.html'}" in text
    assert "ANTHROPIC_API_KEY is not set" in text  # --llm without a key: one line, exit 0
    assert "Performance vs targets" in (out / "report.md").read_text()

    hist = tmp_path / "history.json"
    plateau = [max(0.36, 1.0 - 0.08 * e) for e in range(30)]
    hist.write_text(json.dumps({"loss": plateau, "val_loss": [v + 0.005 for v in plateau]}))
    code = main(["diagnose", str(hist), "--target", "val_loss<0.01"])
    text = capsys.readouterr().out
    assert code == 0
    assert "plateaued" in text and "is 36.5x the 0.01 target" in text
    assert "increase capacity" in text
    assert json.loads((tmp_path / "diagnosis.json").read_text())["status"] == "plateaued"


def test_bad_inputs_are_one_clear_line_not_a_traceback(tmp_path, capsys):
    bad = tmp_path / "training_results.json"
    bad.write_text(json.dumps({"task": "x"}))
    assert main(["analyze", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "missing key 'best_epoch'" in err and "Traceback" not in err
    assert main(["diagnose", str(bad), "--target", "acc~1"]) == 2
    assert "cannot read target" in capsys.readouterr().err
    assert main(["analyze"]) == 2
    assert "nothing to analyze" in capsys.readouterr().err


def test_analyze_wandb_csv_reports_the_cosine_schedule(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    src = DATA / "wandb" / "history_export.csv"
    code = main(["analyze", "--csv", str(src), "--out", str(tmp_path)])
    text = capsys.readouterr().out
    assert code == 0, text
    assert ": cosine" in text
    md = (tmp_path / "report.md").read_text()
    assert "cosine" in md and "| metric | n | mean |" in md
    for name in ("metrics_overview.png", "trends.png", "correlations.png", "csv_summary.json"):
        assert (tmp_path / name).stat().st_size > 0


def test_analyze_with_llm_writes_commentary_through_the_real_sdk(real_results, tmp_path,
                                                                  capsys, monkeypatch):  # fmt: skip
    from fakellm import FakeAnthropic, message_reply

    key = "sk-ant-test-" + "q" * 30
    data = json.loads(real_results.read_text())
    acc = data["test_results"]["accuracy"]
    answer = (
        "## Performance assessment\n"
        f"Test accuracy is {acc:.4f} after {data['num_epochs']} epochs; we estimate 73.9 "
        "on a held-out set.\n"
    )
    monkeypatch.setenv("ANTHROPIC_API_KEY", key)
    with FakeAnthropic(default=message_reply(answer)) as server:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
        code = main(["analyze", str(real_results), "--out", str(tmp_path), "--llm"])
        sent = [r.text for r in server.requests]
    assert code == 0
    assert len(sent) == 1 and key not in sent[0]
    assert f"{acc}" in sent[0] or f"{acc:.4f}" in sent[0]
    llm_md = (tmp_path / "llm_analysis.md").read_text()
    assert "73.9 [unverified]" in llm_md and key not in llm_md
    report = (tmp_path / "report.md").read_text()
    assert "## LLM commentary" in report and "1 number(s) in it could not be verified" in report
    assert str(tmp_path / "llm_analysis.md") in capsys.readouterr().out
