"""The layering rules of docs/architecture.md, checked on the source and at run time."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FORBIDDEN = {
    "ml": {"ray", "fabric", "textual", "paramiko", "invoke", "tether.client", "tether.cluster"},
    # client/ may use ml's torch-free analysis modules, never torch or the modules that load it
    "client": {
        "torch",
        "tether.ml.train",
        "tether.ml.models",
        "tether.ml.evaluate",
        "tether.ml.data",
    },
    "cluster": {"tether.client", "textual", "fabric"},
}
# The pieces of cluster/ the laptop uses: the spec schema, validated before a submit, and the
# event schema, which the event stream checks what the head sends against (both ray-free).
CLIENT_MAY_USE = {
    "tether.cluster",
    "tether.cluster.spec",
    "tether.cluster.errors",
    "tether.cluster.events",
}
# Modules the laptop CLI imports: they must not import torch at module level.
TORCH_FREE = tuple(f"tether.{m}" for m in (
    "ml.diagnose", "ml.report", "ml.plots", "ml.metrics", "ml.metrics_csv", "ml.llm",
    "ml.results", "ml.atomic", "ml.errors", "ml.tomlfile", "ml.train_config", "ml.workloads",
    "ml.models.config", "ml.comparison_stats", "ml.comparison_report", "ml.comparison_report.write",
    "cluster.spec", "cluster.compare_spec", "cluster.events", "client.analyze_compare"))  # fmt: skip


def _imports(path: Path, *, root: Path = ROOT) -> set[str]:
    """Top-level package names and full dotted names imported by ``path`` (module level and
    inside functions), relative imports resolved against the package of ``path`` below
    ``root`` (the repository)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    # client/x.py is tether.client.x: the folders are the tether namespace's subpackages
    package = ".".join(("tether", *path.relative_to(root).with_suffix("").parts[:-1]))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            mods = [mod] + [f"{mod}.{a.name}" for a in node.names]
        else:
            continue
        for m in mods:
            parts = m.split(".")
            names |= {".".join(parts[: i + 1]) for i in range(len(parts))}
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_respect_the_layers(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package}/ has no modules"
    bad = {}
    for f in files:
        names = _imports(f)
        wrong = names & FORBIDDEN[package]
        if package == "client":
            wrong |= {
                n
                for n in names
                if n.startswith("tether.cluster")
                and ".".join(n.split(".")[:3]) not in CLIENT_MAY_USE
            }
        if wrong:
            bad[str(f.relative_to(ROOT))] = sorted(wrong)
    assert not bad, f"layer violations: {bad}"


def test_the_checker_sees_a_violation(tmp_path):
    # A copy of the repository's layout under tmp_path: client/ there resolves as in the repo.
    f = tmp_path / "client" / "sub" / "_layer_probe.py"
    f.parent.mkdir(parents=True)
    f.write_text(
        "import ray.util\nfrom torch import nn\nfrom tether.ml.models import x\n"
        "from ...cluster import pipeline\nfrom . import sibling\n"
    )
    found = _imports(f, root=tmp_path)
    assert {"ray", "torch", "tether.ml.models", "tether.ml", "tether.cluster.pipeline"} <= found
    assert "tether.client.sub.sibling" in found  # relative to the package of the file


def _assert_fresh_imports_leave_out(*, modules: tuple[str, ...], banned: tuple[str, ...]):
    """In a fresh interpreter, importing ``modules`` loads no package named in ``banned``."""
    code = (
        "import sys, importlib\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {banned!r})\n"
        "assert not bad, bad[:5]\n"
        "print('ok')\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


def test_the_laptop_cli_and_analysis_never_load_torch():
    _assert_fresh_imports_leave_out(
        modules=("tether.client.cli", "tether.client.analyze", *TORCH_FREE),
        banned=("torch", "ray"),
    )


# An old top-level name after `from`, `import` (also later in a list: `import sys, <old>.x`)
# or `-m`.
OLD_NAMES = re.compile(
    r"(?:\b(?:from|import) (?:[\w.]+(?: as \w+)?, *)*|-m )(?:client|cluster|ml)(?:\.|\s|$)", re.M
)


def test_nothing_names_our_modules_by_the_old_top_level_names():
    """Our modules are tether.client/cluster/ml everywhere: code, strings run in
    subprocesses, docs, cluster.yaml. (An old name still imports from the repo root when the
    working directory is on sys.path, loading a second copy of a module beside tether's.)"""
    paths = [
        p
        for p in [
            *ROOT.glob("[!.]*/**/*.py"),
            *ROOT.glob("docs/*.md"),
            ROOT / "README.md",
            ROOT / "cluster.yaml",
            ROOT / "Makefile",
        ]
        if not {".venv", "build"} & set(p.parts)
        and p.name != "test_namespace.py"  # its strings are the user's own ml/ package
    ]
    assert len(paths) > 100
    bad = [
        f"{p.relative_to(ROOT)}:{p.read_text()[: m.start()].count(chr(10)) + 1}: {m.group(0)!r}"
        for p in paths
        for m in OLD_NAMES.finditer(p.read_text())
    ]
    assert not bad, bad
    old = "cluster"  # spelled apart, so this file does not match itself
    assert OLD_NAMES.search("x = 1\nfrom ml" + ".data import y\n")  # the pattern sees one
    assert OLD_NAMES.search(f'"python -m {old}.stream"')
    assert OLD_NAMES.search('"import sys, ' + old + '.spec; "')  # in a list of imports too
    assert not OLD_NAMES.search("from tether.ml.data import y; import mlflow")


def test_a_trial_worker_imports_no_plotting_statistics_or_torch():
    """Every trial is a fresh Ray worker that imports ``stage_task``: what that pulls in is paid
    once per trial (the fan-out benchmark found 2.4 s of CPU per trial when it pulled the
    report's matplotlib, seaborn and scipy)."""
    _assert_fresh_imports_leave_out(
        modules=("tether.cluster.stage_task",),
        banned=("matplotlib", "seaborn", "scipy", "pandas", "torch"),
    )
