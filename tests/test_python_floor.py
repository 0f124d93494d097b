"""``requires-python = ">=3.10"`` is true: the torch-free laptop commands run on the floor
interpreter (``tether --help``, ``tether analyze --csv``, spec and config validation), and
every module of ``client/``, ``cluster/`` and ``ml/`` imports there unless a third-party
package the floor venv leaves out is missing (no 3.11-only stdlib module or syntax).

The floor venv holds tether (editable, ``--no-deps``) plus only what those commands import.
It is built once per set of dependencies under ``~/.cache/tether-tests/`` (in a temp folder,
then renamed into place) and reused. Without a Python 3.10 the tests skip with the reason;
``TETHER_REQUIRE_FLOOR=1`` makes that a failure (for CI).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # the suite itself running on Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "wandb"
FLOOR = (3, 10)
# What `tether --help`, `tether analyze --csv` and spec/config validation import.
FLOOR_DEPS = ("pydantic", "rich", "matplotlib", "seaborn", "scipy", "tomli")

pytestmark = pytest.mark.slow


def _floor_python() -> tuple[str | None, list[str]]:
    """The first candidate that really runs as Python 3.10 (a pyenv shim may exist and
    refuse to run); also what was tried, for the skip reason."""
    name = "python{}.{}".format(*FLOOR)
    candidates = [shutil.which(name)]
    for root in (Path.home() / ".pyenv" / "versions", Path("/root/.pyenv/versions")):
        candidates += sorted(glob.glob(str(root / "{}.{}*".format(*FLOOR) / "bin" / name)))
    tried = []
    for c in dict.fromkeys(c for c in candidates if c):
        tried.append(c)
        try:
            res = subprocess.run(
                [c, "-c", "import sys; print(sys.version_info[:2] == (3, 10))"],
                capture_output=True,
                text=True,
                timeout=30,
            )
        except OSError:
            continue
        if res.returncode == 0 and res.stdout.strip() == "True":
            return c, tried
    return None, tried


def _deps() -> list[str]:
    """The FLOOR_DEPS requirement strings exactly as pyproject.toml declares them."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    picked = [d for d in declared if re.match(r"[A-Za-z0-9_.-]+", d)[0].lower() in FLOOR_DEPS]
    names = {re.match(r"[A-Za-z0-9_.-]+", d)[0].lower() for d in picked}
    assert names == set(FLOOR_DEPS), f"pyproject.toml no longer declares {set(FLOOR_DEPS) - names}"
    return picked


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, **kw)


@pytest.fixture(scope="module")
def floor() -> Path:
    """The floor venv's python."""
    python, tried = _floor_python()
    if python is None:
        reason = (
            "no Python {}.{} found (tried: {}); the requires-python floor is untested. "
            "Install one (e.g. pyenv install 3.10) to run these tests.".format(
                *FLOOR, ", ".join(tried) or "python3.10 on PATH, ~/.pyenv/versions/3.10*"
            )
        )
        if os.environ.get("TETHER_REQUIRE_FLOOR") == "1":
            pytest.fail(reason)
        print(f"SKIPPED: {reason}", file=sys.stderr)
        pytest.skip(reason)
    deps = _deps()
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    key = json.dumps([python, str(ROOT), deps, setup], sort_keys=True)
    cache = Path.home() / ".cache" / "tether-tests"
    venv = cache / f"py310-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    if not (venv / "bin" / "python").exists():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = cache / f".{venv.name}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            steps = (
                [python, "-m", "venv", str(tmp)],
                [str(tmp / "bin" / "python"), "-m", "pip", "install", "-q", *deps],
                # Editable: the venv follows the source tree; --no-deps: no torch, no ray.
                [str(tmp / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps",
                 "-e", str(ROOT)],
            )  # fmt: skip
            for step in steps:
                res = _run(step)
                assert res.returncode == 0, f"{' '.join(step)}:\n{res.stdout}\n{res.stderr}"
            try:
                tmp.rename(venv)  # a venv runs from its new path through bin/python
            except OSError:  # another run finished first: use its venv
                assert (venv / "bin" / "python").exists()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return venv / "bin" / "python"


def _ok(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    return res.stdout


def test_the_floor_venv_is_python_3_10_without_torch_or_ray(floor):
    out = _ok(
        _run(
            [
                str(floor),
                "-c",
                "import importlib.util as u, sys; print(sys.version_info[:2], "
                "[m for m in ('torch', 'ray', 'tomllib') if u.find_spec(m)])",
            ]
        )
    )
    assert out.strip() == "(3, 10) []"


def test_tether_help_and_version_on_the_floor(floor):
    cli = [str(floor), "-m", "tether.client.cli"]
    assert "usage: tether" in _ok(_run([*cli, "--help"]))
    assert _ok(_run([*cli, "--version"])).startswith("tether ")


def test_analyze_a_wandb_csv_on_the_floor(floor, tmp_path):
    csv, out_dir = DATA / "history_export.csv", tmp_path / "analysis"
    cmd = [
        str(floor),
        "-m",
        "tether.client.cli",
        "analyze",
        "--csv",
        str(csv),
        "--out",
        str(out_dir),
    ]
    out = _ok(_run(cmd))
    assert "wrote:" in out
    assert json.loads((out_dir / "csv_summary.json").read_text())
    assert (out_dir / "diagnosis.json").is_file()


VALIDATE = """
import sys
from pathlib import Path
from tether.cluster.spec import SpecError, load_spec
from tether.client.config import load_config
from tether.client.errors import TetherError
for path in sys.argv[1:]:
    try:
        if path.endswith("tether.toml"):
            print("config ok:", sorted(load_config(path=Path(path), cwd=Path.cwd())[0].profiles))
        else:
            print("spec ok:", load_spec(Path(path)).name)
    except (SpecError, TetherError) as exc:
        print("error:", str(exc).splitlines()[-1].strip())
"""


def test_spec_and_config_validation_on_the_floor(floor, tmp_path):
    (tmp_path / "good.toml").write_text('name = "exp"\n[[stages]]\nname = "test"\n')
    (tmp_path / "typo.toml").write_text('name = "exp"\n[[stages]]\nname = "train"\nnum_gpu = 1\n')
    (tmp_path / "broken.toml").write_text('name = "exp"\n[[stages]\n')
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "tether.toml").write_text('[profiles.gpu]\nkind = "ssh"\nhost = "head"\n')
    args = [str(tmp_path / n) for n in ("good.toml", "typo.toml", "broken.toml")]
    out = _ok(_run([str(floor), "-c", VALIDATE, *args, str(conf / "tether.toml")], cwd=tmp_path))
    lines = out.splitlines()
    assert lines[0] == "spec ok: exp"
    assert lines[1].startswith("error: ") and "typo.toml:4: stages" in lines[1]
    assert "num_gpu" in lines[1]
    assert lines[2].startswith("error: ") and "broken.toml:2" in lines[2]
    assert lines[3] == "config ok: ['gpu']"


SWEEP = """
import importlib, json, pkgutil, sys
newer_stdlib = set(json.loads(sys.argv[1]))
bad = []
for pkg in ("tether.client", "tether.cluster", "tether.ml", "tether.ml.models"):
    mod = importlib.import_module(pkg)
    for info in pkgutil.iter_modules(mod.__path__, pkg + "."):
        try:
            importlib.import_module(info.name)
        except ModuleNotFoundError as exc:
            top = (exc.name or "").split(".")[0]
            if top == "tether" or top in newer_stdlib:  # ours, or a stdlib module newer than 3.10
                bad.append(f"{info.name}: {exc!r}")
        except Exception as exc:
            bad.append(f"{info.name}: {exc!r}")
print(json.dumps(bad))
"""


def test_every_module_imports_on_the_floor_but_for_absent_third_party_packages(floor):
    """Syntax and module-level use of 3.11+ APIs (``tomllib``, ``datetime.UTC``,
    ``enum.StrEnum``, ``typing.Self`` ...) fail this; a missing torch or ray does not."""
    newer = sorted(sys.stdlib_module_names)
    out = _ok(_run([str(floor), "-c", SWEEP, json.dumps(newer)], cwd=ROOT / "tests"))
    assert json.loads(out.strip().splitlines()[-1]) == []


SCAN = """
import ast, importlib, json, sys
from pathlib import Path
stdlib = set(json.loads(sys.argv[1]))  # the newer interpreter's stdlib: a superset of 3.10's
bad = []


def guarded(tree):
    \"\"\"Nodes under `try: ... except ImportError` or `if sys.version_info ...`.\"\"\"
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
            "ImportError" in ast.unparse(h.type or ast.Name("")) or "ModuleNotFoundError"
            in ast.unparse(h.type or ast.Name("")) for h in node.handlers
        ):
            out |= {id(n) for part in node.body for n in ast.walk(part)}
        if isinstance(node, ast.If) and "version_info" in ast.unparse(node.test):
            out |= {id(n) for part in node.body + node.orelse for n in ast.walk(part)}
    return out


def load(name):
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


for root in sys.argv[2:]:
    for path in sorted(Path(root).rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        safe, modules = guarded(tree), {}
        for node in ast.walk(tree):
            where = f"{path}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] in stdlib:
                        if load(a.name) is None and id(node) not in safe:
                            bad.append(f"{where}: import {a.name}")
                        modules[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                if node.module.split(".")[0] in stdlib and id(node) not in safe:
                    mod = load(node.module)
                    for a in node.names:
                        if mod is None or not (hasattr(mod, a.name) or load(f"{node.module}.{a.name}")):
                            bad.append(f"{where}: from {node.module} import {a.name}")
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in modules and id(node) not in safe):
                mod = load(modules[node.value.id])
                if mod is not None and not hasattr(mod, node.attr):
                    bad.append(f"{path}:{node.lineno}: {node.value.id}.{node.attr}")
print(json.dumps(bad))
"""


def test_no_stdlib_name_newer_than_3_10_is_used(floor):
    """Every stdlib module, ``from``-import and ``module.attribute`` our code names exists on
    3.10 (``datetime.UTC``, ``enum.StrEnum``, ``typing.Self``, ``hashlib.file_digest``,
    ``asyncio.TaskGroup`` ... would not), unless guarded by ``except ImportError`` or a
    ``sys.version_info`` check. Covers the modules the import sweep cannot load."""
    dirs = [str(ROOT / d) for d in ("client", "cluster", "ml")]
    out = _ok(_run([str(floor), "-c", SCAN, json.dumps(sorted(sys.stdlib_module_names)), *dirs]))
    assert json.loads(out.strip().splitlines()[-1]) == []
