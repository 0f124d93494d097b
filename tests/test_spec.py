"""Experiment specs: valid ones load; invalid ones name the file, line and key."""

from __future__ import annotations

import pytest

from tether.cluster.spec import ExperimentSpec, SpecError, check_branch_name, load_spec, parse_spec

GOOD = """
name = "extractors"
targets = ["val_loss<0.2", "accuracy=0.85:0.95"]
milestones = ["epoch 5: val_loss < 0.4, red flag > 0.6"]

[train]
epochs = 8
extractor = { name = "i3d", size = "small" }

[[stages]]
name = "test"

[[stages]]
name = "train"
num_gpus = 1
max_retries = 2

[[stages]]
name = "sweep"
run = "experiments.sweep:main"
timeout_s = 3600

[[stages]]
name = "plots"
command = "python plot.py --all"
"""


def test_a_full_spec_loads(tmp_path):
    path = tmp_path / "x.toml"
    path.write_text(GOOD)
    spec = load_spec(path)
    assert isinstance(spec, ExperimentSpec)
    assert [s.name for s in spec.stages] == ["test", "train", "sweep", "plots"]
    assert [s.builtin for s in spec.stages] == [True, True, False, False]
    assert spec.stages[1].num_gpus == 1 and spec.stages[2].timeout_s == 3600
    assert spec.run_branch("r1") == "tether/extractors/r1"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("num_gpus = 1", "num_gpu = 1"), "spec.toml:15: stages[1].num_gpu: unknown key (did you mean 'num_gpus'?)"),
        (("num_gpus = 1", "num_gpus = -1"), "spec.toml:15: stages[1].num_gpus: Input should be greater than or equal to 0 (got -1)"),
        (('name = "test"', 'name = "tset"'), "spec.toml:11: stages[0].name: stage 'tset' is not built in"),
        (('run = "experiments.sweep:main"', 'run = "experiments.sweep"'), "spec.toml:20: stages[2].run: run must be 'package.module:function'"),
        (('"val_loss<0.2"', '"val_loss about 0.2"'), "spec.toml:3: targets[0]: cannot read target"),
        (("epochs = 8", "epoch = 8"), "spec.toml:7: train.epoch: unknown key (did you mean 'epochs'?)"),
        (('name = "plots"', 'name = "train"'), "spec.toml:24: stages[3].name: stage names must be unique; repeated: train"),
        (('name = "extractors"', 'name = "x y"\nbranch = "a..b"'), "spec.toml:3: branch: 'a..b' is not a safe branch name"),
    ],
)  # fmt: skip
def test_invalid_specs_say_where_and_what(change, expected):
    old, new = change
    assert old in GOOD
    with pytest.raises(SpecError) as err:
        parse_spec(GOOD.replace(old, new, 1))
    assert expected in str(err.value)


@pytest.mark.parametrize(
    "name", ["a..b", "x;rm -rf ~", "$(id)", "a b", "-x", "x.lock", "a//b", "/x", "x/", "a`b`"]
)
def test_dangerous_branch_names_are_refused(name):
    with pytest.raises(ValueError, match="not a safe branch name"):
        check_branch_name(name)


def test_reasonable_branch_names_pass():
    for name in ("tether/exp/run-1", "feature/x_y.2", "main"):
        assert check_branch_name(name) == name
