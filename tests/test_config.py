"""tether.toml models: defaults, profiles, and errors that name file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tether.client.config import (
    DEFAULT_EXCLUDE,
    LocalProfile,
    SSHProfile,
    TetherConfig,
    find_config,
    load_config,
)
from tether.client.errors import ConfigError


def test_no_file_means_the_local_profile_and_default_rules(tmp_path):
    config, path = load_config(cwd=tmp_path)
    assert path is None
    name, profile = config.profile()
    assert name == "local" and isinstance(profile, LocalProfile)
    assert "*.pt" in config.sync.exclude and config.sync.exclude == DEFAULT_EXCLUDE
    assert config.sync.max_file_mb == 50 and config.sync.interval_s == 60


def test_a_full_file_loads_and_is_found_from_a_subfolder(tmp_path):
    (tmp_path / "tether.toml").write_text(
        'default_profile = "gpu"\nresults_dir = "out"\n\n'
        '[profiles.gpu]\nkind = "ssh"\nhost = "my-head"\ndashboard_port = 9000\n\n'
        "[sync]\nmax_file_mb = 5\n\n[heartbeat]\ninterval_s = 1\nstall_timeout_s = 3\n"
    )
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    assert find_config(sub) == tmp_path / "tether.toml"
    config, _ = load_config(cwd=sub)
    name, profile = config.profile()
    assert name == "gpu" and isinstance(profile, SSHProfile)
    assert (profile.host, profile.dashboard_port) == ("my-head", 9000)
    assert config.results_dir == "out" and config.sync.max_file_mb == 5
    assert config.heartbeat.stall_timeout_s == 3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[profiles.gpu]\nkind = "ssh"\nhost = "h"\ndashboard_port = 70000\n',
         "tether.toml:4: profiles.gpu.dashboard_port: Input should be less than or equal to 65535"),
        ('[profiles.gpu]\nkind = "ssh"\n', "tether.toml:1: profiles.gpu.host: Field required"),
        ('[profiles.gpu]\nkind = "slurm"\nhost = "h"\n', "tether.toml:2: profiles.gpu.kind: must be one of: local, ssh (got 'slurm')"),
        ('results_dir = "r"\n\n[sync]\ninclude = ["*.json"]\nmax_file_mb = "big"\n',
         "tether.toml:5: sync.max_file_mb: Input should be a valid number"),
        ('[heartbeat]\ninterval_s = 30\nstall_timeout_s = 10\n',
         "tether.toml:3: heartbeat.stall_timeout_s: stall_timeout_s must be at least interval_s (30.0) (got 10)"),
        ('default_profile = "nope"\n', "tether.toml:1: default_profile: no profile 'nope' under [profiles]; known: local"),
        ('[sync]\nmax_file_mb = 5\nmax_file_mb = 6\n', "tether.toml:3: not valid TOML: Cannot overwrite a value (column 16)"),
    ],
)  # fmt: skip
def test_invalid_files_name_the_line_and_key(tmp_path, text, expected):
    path = tmp_path / "tether.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path=path)
    assert expected.replace("tether.toml", str(path)) in str(err.value)


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(ConfigError) as err:
        TetherConfig().profile("gpu")
    assert "no profile named 'gpu'" in err.value.message
    assert "local" in (err.value.hint or "")


def test_the_annotated_example_in_examples_is_valid():
    example = Path(__file__).resolve().parents[1] / "examples" / "tether.toml"
    config, path = load_config(path=example)
    assert path == example
    assert set(config.profiles) == {"local", "gpu"}
    assert config.sync == TetherConfig().sync  # the example spells out the defaults
