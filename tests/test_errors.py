"""One error tree: every error tether shows a user is a ``TetherError`` (``tether.ml.errors``),
and the real ``tether`` command prints it as ``error: <message>`` then ``  hint: <what to do>``,
never a traceback. Errors of the libraries below are mapped where they cross into tether, and
the dashboard's refusal of tether's credentials is a public error class."""

from __future__ import annotations

import http.server
import json
import os
import pickle
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import git

from tether.client import errors as client_errors
from tether.client.errors import (
    ClusterError,
    ConfigError,
    DashboardRefused,
    RemoteError,
    TetherError,
    from_library_error,
)
from tether.cluster.errors import ClusterRuntimeError
from tether.cluster.spec import SpecError
from tether.ml import errors as ml_errors
from tether.ml.diagnose import DiagnosisError
from tether.ml.errors import ConfigValueError, MLError
from tether.ml.metrics_csv import MetricsCSVError
from tether.ml.results import RESULTS_HINT, ResultsError

TETHER = str(Path(sys.executable).with_name("tether"))


def _tether(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [TETHER, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "300", **env},
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def _rendered(res: subprocess.CompletedProcess, *, message: str, hint: str) -> None:
    """Exit 2; stderr is ``error: <message>`` (maybe over several lines), then the hint line."""
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.splitlines()
    assert lines and lines[0].startswith("error: "), res.stderr
    assert message in res.stderr, res.stderr
    assert lines[-1] == f"  hint: {hint}", res.stderr
    assert sum(ln.startswith("  hint: ") for ln in lines) == 1, res.stderr


# --------------------------------------------------------------------------- the tree


def test_every_package_error_is_a_tether_error_with_a_hint():
    assert client_errors.TetherError is ml_errors.TetherError  # one base, not two
    for cls in (MLError, ConfigValueError, ResultsError, MetricsCSVError, DiagnosisError,
                ClusterRuntimeError, SpecError, ConfigError, RemoteError, ClusterError,
                DashboardRefused):  # fmt: skip
        assert issubclass(cls, TetherError), cls
    err = MLError("the curve is empty", hint="give one value per epoch")
    assert (err.message, err.hint) == ("the curve is empty", "give one value per epoch")
    assert str(err) == "the curve is empty\n  hint: give one value per epoch"
    assert str(ClusterRuntimeError("no hint")) == "no hint"
    # Ray pickles errors raised in tasks: message and hint survive the trip.
    back = pickle.loads(pickle.dumps(SpecError("bad spec", hint="fix it")))
    assert type(back) is SpecError and (back.message, back.hint) == ("bad spec", "fix it")
    # A config value error is still a ValueError (pydantic reports it at its field).
    assert issubclass(ConfigValueError, ValueError)
    assert ConfigValueError("size must be > 0", key="size").key == ("size",)


def test_library_errors_are_mapped_and_anything_else_is_left_alone(tmp_path):
    import paramiko
    import pydantic

    missing = tmp_path / "nope.json"
    try:
        missing.read_text()
    except OSError as exc:
        mapped = from_library_error(exc)
    assert isinstance(mapped, TetherError)
    assert mapped.message == f"{missing}: No such file or directory" and "check the path" in (
        mapped.hint or ""
    )
    try:
        json.loads("{ nope")
    except ValueError as exc:
        mapped = from_library_error(exc)
    assert mapped is not None and "not valid JSON (line 1, column 3" in mapped.message

    class Model(pydantic.BaseModel):
        epochs: int

    try:
        Model.model_validate({"epochs": "many"})
    except pydantic.ValidationError as exc:
        mapped = from_library_error(exc)
    assert mapped is not None and mapped.message.startswith("Model is invalid: epochs: ")
    ssh = from_library_error(paramiko.SSHException("Error reading SSH protocol banner"))
    assert isinstance(ssh, RemoteError) and "tether doctor" in (ssh.hint or "")
    assert "Error reading SSH protocol banner" in ssh.message
    assert from_library_error(ConnectionResetError(104, "Connection reset by peer")).hint
    same = ConfigError("x", hint="y")
    assert from_library_error(same) is same
    # A bug is not a user's mistake: the CLI lets it through with its traceback.
    assert from_library_error(RuntimeError("bug")) is None
    assert from_library_error(KeyError("bug")) is None


# --------------------------------------------------------------------------- through the CLI


def test_an_error_of_the_laptop_side_is_rendered_with_its_hint(tmp_path):
    outside = tmp_path / "not-a-repo"
    outside.mkdir()
    res = _tether("demo", cwd=outside)
    _rendered(
        res,
        message=f"error: {outside} is not inside a git repository",
        hint="run tether from your project's repository (or `git init` there)",
    )


def test_an_error_of_the_ml_layer_is_rendered_with_its_hint(tmp_path):
    res = _tether("analyze", "missing.json", cwd=tmp_path)
    _rendered(res, message="error: missing.json: not found", hint=RESULTS_HINT)
    bad = tmp_path / "training_results.json"
    bad.write_text(json.dumps({"task": "x"}))
    res = _tether("analyze", str(bad), cwd=tmp_path)
    _rendered(res, message=f"{bad}: missing key 'best_epoch'", hint=RESULTS_HINT)


def test_a_cluster_spec_error_is_rendered_line_precise_with_its_hint(git_repo):
    repo = git_repo.path
    (repo / "bad.toml").write_text('name = "x"\n[[stages]]\nname = "tset"\n')
    res = _tether("submit", "bad.toml", cwd=repo)
    _rendered(
        res,
        message="error: bad.toml:3: stages[0].name: stage 'tset' is not built in",
        hint="fix the spec; nothing was submitted",
    )


def test_an_os_error_below_tether_is_mapped_not_a_traceback(tmp_path):
    history = tmp_path / "history.json"
    history.write_text(json.dumps({"loss": [1.0, 0.5, 0.4], "val_loss": [1.1, 0.6, 0.5]}))
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("")
    res = _tether("diagnose", str(history), "--out", str(not_a_folder), cwd=tmp_path)
    _rendered(
        res,
        message=f"error: {not_a_folder}: File exists",
        hint="give a file where a file is expected and a folder where a folder is",
    )
    # With TETHER_DEBUG=1 the same failure shows its traceback, for a bug report.
    res = _tether("diagnose", str(history), "--out", str(not_a_folder), cwd=tmp_path,
                  TETHER_DEBUG="1")  # fmt: skip
    assert res.returncode != 0 and "Traceback" in res.stderr and "FileExistsError" in res.stderr


class _RefusingDashboard(http.server.BaseHTTPRequestHandler):
    """Answers every request as Ray's dashboard does with token auth and no token: 401."""

    def do_GET(self) -> None:  # http.server's name for it
        body = b"Missing authentication token"
        self.send_response(401)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def refusing_dashboard():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RefusingDashboard)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_a_dashboard_that_refuses_the_credentials_is_a_public_error_with_a_hint(
    git_repo, refusing_dashboard
):
    repo = git_repo.path
    (repo / "tether.toml").write_text(
        f'[profiles.local]\nkind = "local"\ndashboard_port = {refusing_dashboard}\n'
    )
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "profile", cwd=repo)
    url = f"http://127.0.0.1:{refusing_dashboard}"
    res = _tether("runs", cwd=repo)
    _rendered(
        res,
        message=f"error: the Ray dashboard at {url} refused tether's request while connecting",
        hint="the cluster uses token auth: pass its token (`ray get-auth-token` on the head "
        "node); run `tether doctor`",
    )
    # The type a traceback (TETHER_DEBUG=1) names is the public one, never a private class.
    res = _tether("runs", cwd=repo, TETHER_DEBUG="1")
    assert "tether.client.errors.DashboardRefused" in res.stderr, res.stderr[-3000:]
    assert "_Refused" not in res.stderr
