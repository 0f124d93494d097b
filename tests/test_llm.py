"""LLM commentary: the real anthropic SDK against a Messages API server on 127.0.0.1.

No test reaches the internet: every call gets ``base_url`` of the loopback server, and the
fixture points ``ANTHROPIC_BASE_URL`` there too and removes proxies and stored credentials.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from fakellm import FAKE_MODEL, FakeAnthropic, Reply, error_reply, message_reply

from tether.ml.llm import (
    ANALYSIS_NAME,
    DEFAULT_MODEL,
    REDACTED,
    SECTIONS,
    CommentaryStatus,
    LLMError,
    build_prompt,
    estimate_cost_usd,
    extract_numbers,
    generate_commentary,
    scrub_secrets,
    verify_numbers,
)

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "sk-ant-api03-TESTKEY-do-not-leak-0123456789"
PLANTED = "sk-ant-PLANTED-secret-in-results-987654"
NO_KEY_MESSAGE = "LLM commentary skipped: ANTHROPIC_API_KEY is not set; export it to enable --llm"
FIXED_NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def _results(epochs: int = 40, best: int = 31) -> dict:
    loss = [round(1.0 / (e + 1) + 0.001 * e, 6) for e in range(epochs)]
    val = [round(1.1 / (e + 1) + 0.002 * abs(e - best + 1), 6) for e in range(epochs)]
    return {
        "schema_version": 1,
        "task": "track_persistence",
        "model": "i3d",
        "num_epochs": epochs,
        "best_epoch": best,
        "best_val_loss": 0.2871,
        "stopped_early": False,
        "train_history": {
            "loss": loss,
            "accuracy": [round(0.5 + e / 100, 4) for e in range(epochs)],
            "lr": [0.002] * epochs,
        },
        "val_history": {"loss": val, "accuracy": [round(0.5 + e / 90, 4) for e in range(epochs)]},
        "test_results": {
            "kind": "classification",
            "accuracy": 0.9123,
            "precision": 0.9051,
            "recall": 0.8997,
            "f1": 0.9024,
            "confusion_matrix": [[45, 5], [4, 46]],
            "class_names": ["transient", "persistent"],
            "per_class": {
                "transient": {"precision": 0.918, "recall": 0.9, "f1": 0.909, "support": 50},
                "persistent": {"precision": 0.902, "recall": 0.92, "f1": 0.911, "support": 50},
            },
            "latency_ms_per_clip": 4.37,
        },
        "model_config": {
            "lr": 0.002,
            "batch_size": 32,
            "extractor": {"name": "i3d", "hidden_size": 128},
            "api_key": PLANTED,
            "notes": f"launched with ANTHROPIC_API_KEY={PLANTED}",
            "Auth": {"Password": "hunter2-planted"},
        },
        "dataset_info": {"split_sizes": {"train": 800, "val": 100, "test": 100}},
        "parameters": 1234567,
        "device": "cpu",
        "timings": {
            "train_seconds": 120.5,
            "eval_seconds": 3.2,
            "epoch_seconds": [3.0] * epochs,
            "samples_per_second": 333.3,
        },
    }


DIAGNOSIS = {
    "monitor": "val_loss",
    "status": "plateaued",
    "fit": "capacity_limited",
    "findings": [
        {
            "code": "capacity_limited",
            "text": "plateaued at 0.365, 36.5x worse than the 0.01 target",
            "severity": "warning",
            "epoch": 25,
        }
    ],
    "recommendations": [{"action": "double the hidden size", "evidence": "train loss flat"}],
    "token": "diag-secret-token",
}

CSV_SUMMARY = {
    "path": "metrics.csv",
    "rows": 4000,
    "metrics": {
        "train/loss": {"count": 4000, "min": 0.0213, "max": 1.02, "mean": 0.31, "last": 0.0222},
        "val/acc": {"count": 40, "min": 0.5, "max": 0.93, "mean": 0.8, "last": 0.93},
    },
}

# A plausible answer: real numbers, rounded and as percentages, identifiers, list markers,
# and two invented figures (42.7% and 0.731).
ANSWER = """\
## Performance assessment
Test accuracy is 0.912 (test_results.accuracy), i.e. 91.2%, with macro F1 of 0.90 \
(test_results.f1). The i3d model has 1,234,567 parameters (parameters), about 1.23M.
## Training dynamics
1. The best epoch is 37 (best_epoch) with validation loss 0.287 (best_val_loss).
2. The diagnosis says it plateaued at 0.365, 36.5x worse than the target.
## Architecture insights
A recall of 42.7% on the hardest clips would suggest the 3rd layer is a bottleneck.
## Failure-mode hypotheses
Hypothesis: the learning rate of 2e-3 (model_config.lr) is too high late in training.
## Improvement suggestions
- Double the hidden size (model_config.extractor.hidden_size = 128).
## Research questions
- Would a ResNet-50 backbone beat the current calibration score of 0.731?
"""


@pytest.fixture
def fake_api(monkeypatch, tmp_path):
    """The Messages API on 127.0.0.1; the SDK cannot find a real endpoint or credentials."""
    for var in (
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_AUTH_TOKEN",
        "ANTHROPIC_PROFILE",
        "ANTHROPIC_CUSTOM_HEADERS",
        "ANTHROPIC_LOG",
        "ANTHROPIC_IDENTITY_TOKEN",
        "ANTHROPIC_IDENTITY_TOKEN_FILE",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("ANTHROPIC_CONFIG_DIR", str(tmp_path / "anthropic-config"))
    with FakeAnthropic(default=message_reply(ANSWER)) as server:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
        yield server


def _call(server: FakeAnthropic, out: Path, **kw):
    args = {
        "results": _results(),
        "diagnosis": DIAGNOSIS,
        "csv_summary": CSV_SUMMARY,
        "out_path": out,
        "api_key": API_KEY,
        "base_url": server.base_url,
        "max_retries": 0,
        "timeout_s": 10,
        "clock": lambda: FIXED_NOW,
        **kw,
    }
    return generate_commentary(**args)


# --------------------------------------------------------------------------- the prompt


def test_prompt_has_the_key_metrics_first_and_asks_for_the_six_sections():
    p = build_prompt(results=_results(), diagnosis=DIAGNOSIS, csv_summary=CSV_SUMMARY)
    for line in (
        "test_results.accuracy = 0.9123",
        "test_results.f1 = 0.9024",
        "test_results.confusion_matrix = [[45, 5], [4, 46]]",
        "best_epoch = 31",
        "best_val_loss = 0.2871",
        "num_epochs = 40",
        "model = i3d",
        "parameters = 1234567",
    ):
        assert line in p.user, line
    order = [p.user.index(f"<{t}>") for t in ("key_metrics", "diagnosis", "training_history")]
    assert order == sorted(order)
    assert "plateaued at 0.365, 36.5x worse" in p.user
    assert "metrics.val/acc: count=40" in p.user
    assert "31 " in p.user and "<- best epoch" in p.user
    for s in SECTIONS:
        assert s in p.system
    assert "only numbers that appear in the input" in p.system
    assert "Cite the source of every number" in p.system
    assert "Nothing was shortened." in p.user


@pytest.mark.parametrize("max_chars", [1000, 2500, 6000, 12000])
def test_prompt_is_bounded_and_says_what_it_shortened(max_chars):
    results = _results(epochs=400, best=250)
    csv = {
        "metrics": {f"metric_{i}": {"min": i / 7, "max": i / 3, "mean": i / 5} for i in range(300)}
    }
    p = build_prompt(results=results, diagnosis=DIAGNOSIS, csv_summary=csv, max_chars=max_chars)
    assert len(p.user) <= max_chars
    assert "test_results.accuracy = 0.9123" in p.user  # key metrics survive any budget
    assert "best_epoch = 250" in p.user
    assert p.truncated and "Shortened to fit the prompt:" in p.user
    if max_chars >= 6000:
        assert "<- best epoch" in p.user and "\n400 " in p.user  # best and last epochs
        assert "epochs not shown" in p.user
        assert "more CSV lines omitted" in p.user


def test_prompt_refuses_nothing_and_tiny_budgets():
    with pytest.raises(LLMError, match="nothing to analyse"):
        build_prompt(results=None, diagnosis=None, csv_summary=None)
    with pytest.raises(LLMError, match="at least"):
        build_prompt(results=_results(), diagnosis=None, csv_summary=None, max_chars=100)


def test_prompt_and_numbers_carry_no_secrets():
    p = build_prompt(
        results=_results(), diagnosis=DIAGNOSIS, csv_summary=CSV_SUMMARY, secrets=["hunter2"]
    )
    text = p.system + p.user
    for secret in (PLANTED, "sk-ant-", "hunter2", "diag-secret-token"):
        assert secret not in text
    assert f"model_config.api_key = {REDACTED}" in p.user
    assert 987654 not in p.numbers  # digits of a redacted key are not "input numbers"


def test_scrub_secrets_by_key_name_and_key_shape():
    obj = {
        "API_KEY": "a",
        "nested": [{"authToken": "b"}, {"x-api-key": "c"}, {"aws_secret_access_key": "d"}],
        "Authorization": "Bearer e",
        "db": {"PASSWORD": "f", "passwd": "g", "credentials": {"user": "u"}},
        "log": "key sk-ant-api03-abc_DEF-123 in text",
        "max_tokens": 2000,
        "input_tokens": 5,
        "tokenizer": "bpe",
        "author": "me",
        "other": "contains literal-xyz here",
    }
    out = scrub_secrets(obj=obj, secrets=["literal-xyz"])
    assert out["API_KEY"] == out["Authorization"] == REDACTED
    assert out["nested"] == [
        {"authToken": REDACTED},
        {"x-api-key": REDACTED},
        {"aws_secret_access_key": REDACTED},
    ]
    assert out["db"] == {"PASSWORD": REDACTED, "passwd": REDACTED, "credentials": REDACTED}
    assert out["log"] == f"key {REDACTED} in text"
    assert out["other"] == f"contains {REDACTED} here"
    assert (out["max_tokens"], out["input_tokens"], out["tokenizer"], out["author"]) == (
        2000,
        5,
        "bpe",
        "me",
    )
    assert obj["API_KEY"] == "a"  # a copy


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("accuracy 0.912 and 91.2% and 12,345 samples", [0.912, 91.2, 12345]),
        ("lr 3e-4, 1.5E+3 steps, 36.5x worse, 1.2M params, 45ms", [3e-4, 1500, 36.5, 1.2e6, 45]),
        ("F1 of i3d and conv3d, ResNet-50, top-1, 3D, 3rd, 2nd, v1.2.3", []),
        ("1. first\n2) second\n- 3. third\n### 4. heading\nepoch 10. done", [10]),
        ("see https://arxiv.org/abs/2101.12345 on 2026-03-01", []),
        ("epochs 1-5 and (0.91, 0.88)", [1, 5, 0.91, 0.88]),
    ],
)
def test_extract_numbers(text, values):
    assert [m.value for m in extract_numbers(text=text)] == pytest.approx(values)


@pytest.mark.parametrize(
    ("answer", "unverified"),
    [
        ("0.9123 0.912 0.91 0.9 1", []),
        ("91.2% and 91% and 91.23 percent", []),
        ("91.2 without a percent sign", ["91.2"]),
        ("0.913 is not 0.9123 rounded", ["0.913"]),
        ("12,345 and 12k and 1.2e4 and 12345.0", []),
        ("12,346", ["12,346"]),
        ("lr 2e-3 and 0.002 and 2.0e-3; 36.5x", []),
        ("a ratio of 40x, a gap of 0.0123", ["40x", "0.0123"]),
        ("loss -0.2871", []),
    ],
)
def test_verify_numbers_accepts_rounding_and_flags_the_rest(answer, unverified):
    source = [0.9123, 12345, 0.002, 0.2871, "plateaued 36.5x worse"]
    found = verify_numbers(answer=answer, source_numbers=source)
    assert [u.text for u in found] == unverified
    for u in found:
        assert answer[u.start : u.end] == u.text and u.line == 1 and u.context == answer


# --------------------------------------------------------------------------- the call


def test_commentary_is_written_with_model_usage_cost_and_flags(fake_api, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    c = _call(fake_api, tmp_path)  # a directory: llm_analysis.md inside

    assert c.status is CommentaryStatus.OK and c.status == "ok"
    assert c.path == tmp_path / ANALYSIS_NAME
    assert (c.model, c.input_tokens, c.output_tokens) == (FAKE_MODEL, 1234, 567)
    assert c.cost_usd == pytest.approx((1234 * 2.0 + 567 * 10.0) / 1e6)
    assert [u.text for u in c.unverified] == ["42.7%", "0.731"]
    assert c.verified_count >= 10  # 0.912, 91.2%, 0.90, 1,234,567, 1.23M, 37, 0.287, ...
    assert "\n" not in c.message and str(c.path) in c.message

    [req] = fake_api.requests
    assert (req.method, req.path) == ("POST", "/v1/messages")
    body = req.body
    assert body["model"] == DEFAULT_MODEL and body["max_tokens"] == 2000
    user = body["messages"][0]["content"]
    assert body["messages"][0]["role"] == "user"
    assert "test_results.accuracy = 0.9123" in user and "best_epoch = 31" in user
    for s in SECTIONS:
        assert s in body["system"]

    doc = c.path.read_text()
    assert f"- Model: {FAKE_MODEL} (requested {DEFAULT_MODEL})" in doc
    assert "- Date: 2026-03-01 12:00 UTC" in doc
    assert "- Tokens: 1234 input, 567 output" in doc
    assert "- Cost: $0.0081 (estimate at list price $2 / $10 per million" in doc
    assert "42.7% [unverified] on the hardest clips" in doc
    assert "0.731 [unverified]?" in doc
    assert "0.912 (test_results.accuracy)" in doc  # verified numbers are not marked
    assert "91.2% [unverified]" not in doc and "36.5x [unverified]" not in doc
    tail = doc.split("## Unverified numbers", 1)[1]
    assert "`42.7%` (line 7)" in tail and "`0.731` (line 13)" in tail
    assert "Sections missing" not in doc

    # The key only ever travels in the auth header; planted secrets nowhere.
    for secret in (API_KEY, PLANTED, "hunter2-planted", "diag-secret-token"):
        assert secret not in req.text
        assert secret not in doc
        assert secret not in repr(c)
        assert secret not in caplog.text
    assert not any(PLANTED in v for v in req.headers.values())
    key_headers = {k: v for k, v in req.headers.items() if API_KEY in v}
    assert len(key_headers) == 1 and set(key_headers) <= {"authorization", "x-api-key"}


def test_all_numbers_verified_and_unknown_model_cost(fake_api, tmp_path):
    fake_api.default = message_reply(
        "\n\n".join(f"{s}\nAccuracy 0.912 at epoch 31." for s in SECTIONS),
        model="claude-unreleased-9",
    )
    out = tmp_path / "reports" / "commentary.md"
    c = _call(fake_api, out, model="claude-unreleased-9")
    assert c.status == "ok" and c.path == out and c.cost_usd is None
    assert c.unverified == () and c.verified_count == 12
    doc = out.read_text()
    assert "- Model: claude-unreleased-9\n" in doc
    assert "cost unknown (no price on file for claude-unreleased-9)" in doc
    assert "None: all 12 numbers in the commentary were found in the input." in doc
    assert "cost unknown" in c.message


def test_overloaded_529_is_retried_by_the_sdk(fake_api, tmp_path):
    fake_api.enqueue(
        error_reply(529, "overloaded_error", "Overloaded", headers={"retry-after-ms": "10"})
    )
    c = _call(fake_api, tmp_path, max_retries=2)
    assert c.status == "ok", c.message
    assert len(fake_api.requests) == 2
    assert [r.headers.get("x-stainless-retry-count") for r in fake_api.requests] == ["0", "1"]
    assert fake_api.requests[0].body == fake_api.requests[1].body


def test_persistent_500_fails_with_a_clear_message(fake_api, tmp_path):
    fake_api.default = error_reply(
        500, "api_error", "Internal server error", headers={"retry-after-ms": "1"}
    )
    c = _call(fake_api, tmp_path, max_retries=2)
    assert c.status is CommentaryStatus.FAILED
    assert len(fake_api.requests) == 3  # one try and two retries
    assert "HTTP 500" in c.message and "after 2 retries" in c.message
    assert "retry later" in c.message and "\n" not in c.message
    assert "Traceback" not in c.message and API_KEY not in c.message
    assert c.path is None and not (tmp_path / ANALYSIS_NAME).exists()


def test_slow_api_times_out(fake_api, tmp_path):
    fake_api.default = Reply(200, message_reply(ANSWER).body, delay_s=10)
    t0 = time.monotonic()
    c = _call(fake_api, tmp_path, timeout_s=1, max_retries=0)
    assert time.monotonic() - t0 < 8  # gave up long before the reply
    assert c.status == "failed"
    assert "did not answer within 1 s" in c.message and "retry later" in c.message
    assert len(fake_api.requests) == 1 and c.path is None


def test_invalid_key_401_is_not_retried(fake_api, tmp_path):
    fake_api.default = error_reply(401, "authentication_error", "invalid x-api-key")
    c = _call(fake_api, tmp_path, max_retries=3)
    assert c.status == "failed" and len(fake_api.requests) == 1
    assert "HTTP 401" in c.message and "API key is invalid" in c.message
    assert "ANTHROPIC_API_KEY" in c.message and API_KEY not in c.message


@pytest.mark.parametrize(
    ("status", "kind", "expected"),
    [
        (429, "rate_limit_error", "rate limited"),
        (529, "overloaded_error", "overloaded"),
        (404, "not_found_error", "pass a current model id"),
        (400, "invalid_request_error", "check the model id"),
    ],
)
def test_other_http_errors_name_status_and_next_step(fake_api, tmp_path, status, kind, expected):
    fake_api.default = error_reply(status, kind, "nope")
    c = _call(fake_api, tmp_path)
    assert c.status == "failed"
    assert f"HTTP {status} (nope) [request-id req_fake_{status}]" in c.message
    assert expected in c.message


def test_unreachable_api_fails_with_a_connection_message(fake_api, tmp_path):
    from tether.client.localcluster import free_port

    closed = f"http://127.0.0.1:{free_port()}"
    c = _call(fake_api, tmp_path, base_url=closed)
    assert c.status == "failed"
    assert f"could not connect to {closed}" in c.message


def test_no_key_skips_without_calling_or_writing(fake_api, tmp_path):
    c = generate_commentary(results=_results(), out_path=tmp_path)
    assert c.status is CommentaryStatus.SKIPPED
    assert c.message == NO_KEY_MESSAGE
    assert fake_api.requests == [] and c.path is None
    assert list(tmp_path.iterdir()) == []


def test_key_from_the_environment_is_used(fake_api, tmp_path, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)
    run_dir = tmp_path / "run"  # not there yet, no suffix: a directory
    c = generate_commentary(results=_results(), out_path=run_dir)  # base_url from the env
    assert c.status == "ok", c.message
    assert c.path == run_dir / ANALYSIS_NAME
    assert len(fake_api.requests) == 1
    assert API_KEY not in fake_api.requests[0].text and API_KEY not in c.path.read_text()


def test_nothing_to_analyse_fails_before_calling(fake_api, tmp_path):
    c = _call(fake_api, tmp_path, results=None, diagnosis=None, csv_summary=None)
    assert c.status == "failed" and "nothing to analyse" in c.message
    assert fake_api.requests == []


def test_cost_table():
    assert estimate_cost_usd(
        model="claude-sonnet-4-5-20250929", input_tokens=1_000_000, output_tokens=0
    ) == pytest.approx(3.0)
    assert estimate_cost_usd(
        model="claude-opus-4-1", input_tokens=0, output_tokens=1_000_000
    ) == pytest.approx(75.0)
    assert estimate_cost_usd(model="gpt-9", input_tokens=1, output_tokens=1) is None


def test_importing_llm_loads_no_torch_nor_the_sdk():
    code = (
        "import sys, tether.ml.llm; "
        "bad = {'torch', 'ray', 'fabric', 'textual', 'anthropic'} & set(sys.modules); "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)
