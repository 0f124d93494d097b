"""Spec and tether.toml errors are line-precise at every depth: ``file:LINE: dotted.key: what``.

Each case is a whole file, so the expected line number can be read off the text.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tether.client.config import RAY_WORKER_PORTS, load_config
from tether.client.errors import ConfigError
from tether.cluster.spec import ExperimentSpec, SpecError, load_spec
from tether.ml.errors import MLError
from tether.ml.train_config import TrainConfig

STAGES = '[[stages]]\nname = "train"\n'
COMPARE = '[[stages]]\nname = "compare"\n'

# (file, text, line, dotted key, message substring); key None: a TOML syntax error.
CASES = [
    ("spec", 'name = "x"\n[train]\nepochz = 3\n' + STAGES,
     3, "train.epochz", "unknown key (did you mean 'epochs'?)"),
    ("spec", 'name = "x"\n\n[train]\nbatch_size = 8\nepochs = "many"\n' + STAGES,
     5, "train.epochs", "Input should be a valid integer, unable to parse string as an integer"),
    ("spec", 'name = "x"\n[train]\nepochs = 2.5\n' + STAGES,
     3, "train.epochs", "Input should be a valid integer, got a number with a fractional part"),
    ("spec", 'name = "x"\n[train]\nepochs = 0\n' + STAGES,
     3, "train.epochs", "epochs must be >= 1 (got 0)"),
    ("spec", 'name = "x"\n[train]\nepochs = 2\n[train.extractor]\nname = "i3d"\nsise = "small"\n' + STAGES,
     6, "train.extractor.sise", "unknown key (did you mean 'size'?)"),
    ("spec", 'name = "x"\n[train]\nepochs = 2\nextractor = { name = "i3d", sise = "small" }\n' + STAGES,
     4, "train.extractor.sise", "unknown key (did you mean 'size'?)"),
    ("spec", 'name = "x"\n[train]\nextractor = { name = "i4d" }\n' + STAGES,
     3, "train.extractor.name", "unknown extractor 'i4d': set name to one of i3d, slowfast"),
    ("spec", 'name = "x"\n[train]\nextractor.name = "i3d"\nextractor.size = "huge"\n' + STAGES,
     4, "train.extractor.size", "unknown size 'huge': set size to one of tiny, small, base"),
    ("spec", 'name = "x"\n[train]\ntask = "segmentation"\n' + STAGES,
     3, "train.task", "Input should be 'track_persistence' or 'frequency_extraction'"),
    ("spec", 'name = "x"\n[train.head]\nthreshold = 1.5\n' + STAGES,
     3, "train.head.threshold", "must lie in (0, 1]"),
    ("spec", 'name = "x"\n[train.lstm]\nlayers = 1\ndropout = 0.5\n' + STAGES,
     4, "train.lstm.dropout", "acts between stacked LSTM layers: set layers >= 2"),
    ("spec", 'name = "x"\n[train]\nepochs = 2\n[train.track]\nframes = 8\nframez = 8\n' + STAGES,
     6, "train.track.framez", "unknown key (did you mean 'frames'?)"),
    ("spec", 'name = "x"\n[train]\nepochs = 2\ntrack = { train_size = 0, val_size = 10, noise = 0.1 }\n' + STAGES,
     4, "train.track", "every split needs at least one sample"),
    ("spec", 'name = "x"\n[train.frequency]\nfreqs = [1.0]\n' + STAGES,
     3, "train.frequency.freqs", "needs at least two frequencies"),
    ("spec", 'name = "x"\n[[stages]]\nname = "test"\n[[stages]]\nname = "train"\nnum_gpu = 1\n',
     6, "stages[1].num_gpu", "unknown key (did you mean 'num_gpus'?)"),
    ("spec", 'name = "x"\n[[stages]]\nname = "test"\n[[stages]]\nname = "train"\n'
             '[[stages]]\nname = "sweep"\nrun = "s:main"\ntimeout_s = -5\n',
     9, "stages[2].timeout_s", "Input should be greater than 0 (got -5)"),
    ("spec", 'name = "x"\n[[stages]]\nname = "train"\n[[stages]]\nname = "train"\n',
     5, "stages[1].name", "stage names must be unique; repeated: train"),
    ("spec", 'name = "x"\n[[stages]]\nname = "report"\n[[stages]]\nname = "train"\n',
     3, "stages[0].name", "reads the train stage's results: list a train stage before it"),
    ("spec", 'name = "x"\nllm = "yes please"\n' + STAGES,
     2, "llm", "Input should be a valid boolean"),
    ("spec", 'nme = "x"\n' + STAGES,
     1, "nme", "unknown key (did you mean 'name'?)"),
    ("spec", 'name = "x"\n[compare]\nextractors = ["i3d", "i4d"]\n' + COMPARE,
     3, "compare.extractors[1]", "unknown extractor 'i4d': the built-in training has i3d, "
     "slowfast, magvit, transformer (or set run = 'module:function' to compare your own code)"),
    ("spec", 'name = "x"\n[compare]\nextractors = ["i3d"]\nseeds = []\n' + COMPARE,
     4, "compare.seeds", "List should have at least 1 item after validation, not 0"),
    ("spec", 'name = "x"\n[compare]\nextractors = ["i3d"]\ngpus_per_trial = 0\n' + COMPARE,
     4, "compare.gpus_per_trial", "Input should be greater than 0 (got 0)"),
    ("spec", 'name = "x"\n[compare]\nextractors = ["i3d"]\ngpus_per_trial = -0.5\n' + COMPARE,
     4, "compare.gpus_per_trial", "Input should be greater than 0 (got -0.5)"),
    ("spec", 'name = "x"\n[compare]\nextractors = ["i3d", "magvit"]\n'
             '[compare.overrides.magvit]\nlrr = 1e-3\n' + COMPARE,
     5, "compare.overrides.magvit.lrr", "unknown key (did you mean 'lr'?)"),
    ("spec", 'name = "x"\n[compare]\nextractors = ["i3d", "magvit"]\n'
             '[compare.overrides.magvit]\nextractor = { size = "huge" }\n' + COMPARE,
     5, "compare.overrides.magvit.extractor.size", "unknown size 'huge'"),
    ("spec", 'name = "x"\n[compare]\nextractors = ["i3d"]\n'
             '[compare.overrides.slowfast]\nlr = 1e-3\n' + COMPARE,
     4, "compare.overrides.slowfast", "overrides for 'slowfast', which is not in extractors"),
    ("spec", 'name = "x"\n[compare]\nextractors = ["i3d"]\nseeds = [0, 0]\n' + COMPARE,
     4, "compare.seeds[1]", "seed 0 is listed twice"),
    ("spec", 'name = "x"\n[compare]\nextractors = ["i3d"]\nmetric = "test.acc"\n' + COMPARE,
     4, "compare.metric", "unknown metric 'test.acc': the built-in trials report test.accuracy"),
    ("spec", 'name = "x"\n' + COMPARE,
     3, "stages[0].name", "the compare stage needs a [compare] table"),
    ("spec", 'name = "x"\n[compare]\nextractors = ["i3d"]\n' + STAGES,
     2, "compare", "[compare] is set but no stage runs it"),
    ("spec", 'name = "x"\n[train]\nepochs =\n' + STAGES,
     3, None, "not valid TOML: Invalid value (column 9)"),
    ("config", '[profiles.local]\nkind = "local"\ndashboard_port = 18265\n',
     3, "profiles.local.dashboard_port",
     "18265 is inside Ray's worker port range 10002-19999 (Ray hands those ports to workers); "
     "pick one outside it, e.g. 8265"),
    ("config", 'results_dir = "r"\n\n[profiles.gpu]\nkind = "ssh"\nhost = "h"\ndashboard_port = 10002\n',
     6, "profiles.gpu.dashboard_port", "10002 is inside Ray's worker port range"),
    ("config", '[profiles.gpu]\nkind = "ssh"\nhost = "h"\ndashboard_port = 0\n',
     4, "profiles.gpu.dashboard_port", "Input should be greater than or equal to 1 (got 0)"),
    ("config", '[profiles]\nlocal = { kind = "local", dashboard_port = 70000 }\n',
     2, "profiles.local.dashboard_port", "Input should be less than or equal to 65535"),
    ("config", '[profiles.gpu]\nkind = "ssh"\nhots = "my-head"\n',
     3, "profiles.gpu.hots", "unknown key (did you mean 'host'?)"),
    ("config", '[profiles.gpu]\nhost = "my-head"\n',
     1, "profiles.gpu.kind", "Field required: set kind to one of: local, ssh"),
    ("config", '[sync]\ninclude = ["*.json"]\nintervl_s = 5\n',
     3, "sync.intervl_s", "unknown key (did you mean 'interval_s'?)"),
    ("config", '[heartbeat]\ninterval_s = 1\nstall_timeout_s = "soon"\n',
     3, "heartbeat.stall_timeout_s", "Input should be a valid number"),
    ("config", 'results_dir = "r"\n[sync\n',
     2, None, "not valid TOML: Expected ']' at the end of a table declaration"),
]  # fmt: skip


def _error(kind: str, path: Path) -> str:
    if kind == "spec":
        with pytest.raises(SpecError) as err:
            load_spec(path)
        return str(err.value)
    with pytest.raises(ConfigError) as err:
        load_config(path=path)
    return err.value.message


@pytest.mark.parametrize(("kind", "text", "line", "key", "message"), CASES)
def test_each_error_names_file_line_and_dotted_key(tmp_path, kind, text, line, key, message):
    path = tmp_path / ("bad.toml" if kind == "spec" else "tether.toml")
    path.write_text(text)
    error = _error(kind, path)
    prefix = f"{path}:{line}: " + (f"{key}: " if key else "")
    lines = [ln for ln in error.splitlines() if ln.startswith(prefix)]
    assert lines, f"no line starts with {prefix!r} in:\n{error}"
    assert message in lines[0], error
    assert all(ln.startswith(f"{path}:") for ln in error.splitlines()), error
    assert "{" not in error  # never a dump of the input


def test_there_are_enough_cases_of_both_files():
    kinds = [case[0] for case in CASES]
    assert kinds.count("spec") >= 10 and kinds.count("config") >= 5


def test_several_errors_are_listed_one_per_line_in_file_order(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(
        'name = "x"\n[train]\nepochz = 3\nlr = "fast"\n'
        '[[stages]]\nname = "test"\n[[stages]]\nname = "train"\nnum_gpu = 1\n'
    )
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert str(err.value).splitlines() == [
        f"{path}:3: train.epochz: unknown key (did you mean 'epochs'?)",
        f"{path}:4: train.lr: Input should be a valid number, unable to parse string as a number "
        "(got 'fast')",
        f"{path}:9: stages[1].num_gpu: unknown key (did you mean 'num_gpus'?)",
    ]


def test_a_misspelt_key_with_no_close_match_lists_the_known_keys(tmp_path):
    path = tmp_path / "tether.toml"
    path.write_text("[heartbeat]\nwhatever = 1\n")
    with pytest.raises(ConfigError) as err:
        load_config(path=path)
    assert err.value.message == (
        f"{path}:2: heartbeat.whatever: unknown key; known keys: interval_s, stall_timeout_s"
    )
    assert "docs/configuration.md" in (err.value.hint or "")


@pytest.mark.parametrize("port", [1, RAY_WORKER_PORTS[0] - 1, RAY_WORKER_PORTS[1] + 1, 65535])
def test_dashboard_ports_outside_rays_worker_range_are_fine(tmp_path, port):
    path = tmp_path / "tether.toml"
    path.write_text(f'[profiles.local]\nkind = "local"\ndashboard_port = {port}\n')
    config, _ = load_config(path=path)
    assert config.profile("local")[1].dashboard_port == port


def test_the_worker_port_range_is_rays_default():
    # `ray start --min-worker-port/--max-worker-port` defaults, read from the installed ray
    from ray.scripts.scripts import start

    defaults = {p.name: p.default for p in start.params}
    assert (defaults["min_worker_port"], defaults["max_worker_port"]) == RAY_WORKER_PORTS


def test_the_train_table_stays_the_dict_the_file_gave(tmp_path):
    path = tmp_path / "x.toml"
    path.write_text('name = "x"\n[train]\nepochs = 3\nextractor = { name = "magvit" }\n' + STAGES)
    spec = load_spec(path)
    assert spec.train == {"epochs": 3, "extractor": {"name": "magvit"}}
    assert ExperimentSpec.model_validate(spec.model_dump()) == spec  # the job's copy
    assert TrainConfig.from_dict(spec.train).extractor.name == "magvit"


def test_train_config_from_dict_names_the_bad_key():
    with pytest.raises(MLError) as err:
        TrainConfig.from_dict({"epochs": 2, "extractor": {"name": "i3d", "widht": 3}})
    assert str(err.value) == (
        "invalid TrainConfig: extractor.widht: unknown key (did you mean 'width'?)"
    )


def _submit(repo: Path, spec: str) -> subprocess.CompletedProcess[str]:
    """`tether submit SPEC` through the installed CLI, without TETHER_DEBUG."""
    env = {k: v for k, v in os.environ.items() if k != "TETHER_DEBUG"}
    tether = Path(sys.executable).with_name("tether")
    return subprocess.run(
        [str(tether), "submit", spec],
        cwd=repo, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('name = "x"\n[train]\nepochz = 3\n' + STAGES,
         "error: bad.toml:3: train.epochz: unknown key (did you mean 'epochs'?)"),
        ('name = "x"\n[compare]\nextractors = ["i3d", "magvit"]\ngpus_per_trial = 0\n'
         '[compare.overrides.magvit]\nlrr = 1e-3\n' + COMPARE,
         "error: bad.toml:4: compare.gpus_per_trial: Input should be greater than 0 (got 0)"),
    ],
    ids=["train", "compare"],
)  # fmt: skip
def test_the_cli_refuses_a_bad_spec_before_anything_remote(git_repo, text, expected):
    repo = git_repo.path
    (repo / "bad.toml").write_text(text)
    proc = _submit(repo, "bad.toml")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert expected in lines, proc.stderr
    if "compare" in text:  # every error of the table, one line each, in file order
        assert "bad.toml:6: compare.overrides.magvit.lrr: unknown key (did you mean 'lr'?)" in (
            proc.stderr
        )
    assert "Traceback" not in proc.stderr and "{" not in proc.stderr
    assert "nothing was submitted" in proc.stderr
    # nothing happened: no run branch, no state folder, the work tree untouched
    branches = subprocess.run(
        ["git", "branch", "--list", "tether/*"], cwd=repo, capture_output=True, text=True
    )
    assert branches.stdout.strip() == ""
    assert not (repo / ".tether").exists()
    status = subprocess.run(
        ["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True
    )
    assert status.stdout.strip() == "?? bad.toml"


def test_the_cli_refuses_a_dashboard_port_in_rays_worker_range(git_repo):
    repo = git_repo.path
    (repo / "tether.toml").write_text('[profiles.local]\nkind = "local"\ndashboard_port = 18265\n')
    (repo / "x.toml").write_text('name = "x"\n' + STAGES)
    proc = _submit(repo, "x.toml")
    assert proc.returncode == 2, proc.stderr
    expected = (
        f"error: {repo / 'tether.toml'}:3: profiles.local.dashboard_port: 18265 is inside Ray's "
        "worker port range 10002-19999"
    )
    assert any(ln.startswith(expected) for ln in proc.stderr.splitlines()), proc.stderr
    assert "Traceback" not in proc.stderr
