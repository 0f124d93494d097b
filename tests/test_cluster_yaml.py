"""Offline checks of cluster.yaml, using Ray's own cluster-launcher validation.

`ray up` first runs ``prepare_config`` (merges Ray's AWS defaults) and then
``validate_config`` (Ray's JSON schema plus its own consistency checks).
Only after that does it call AWS. These tests run the same two functions from
the installed Ray. There is no boto3 and no network, so a broken
cluster.yaml fails here rather than halfway through `ray up`.
"""

from __future__ import annotations

import ast
import copy
import importlib.util
import ipaddress
import itertools
import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml
from ray._private.authentication import authentication_token_setup
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_YAML = Path(__file__).parents[1] / "cluster.yaml"

# vCPUs and GPUs of the instance types the config may name (AWS-published
# shapes), used to check that the declared `resources` match the hardware.
INSTANCE_SHAPES = {
    "m5.xlarge": {"CPU": 4, "GPU": 0},
    "g5.xlarge": {"CPU": 4, "GPU": 1},
    "g5.12xlarge": {"CPU": 48, "GPU": 4},
}


def load_raw() -> dict[str, Any]:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def ray_check(raw: dict[str, Any]) -> dict[str, Any]:
    """Do what `ray up` does to the file before any AWS call."""
    config = prepare_config(copy.deepcopy(raw))
    validate_config(config)
    return config


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return ray_check(load_raw())


def worker_types(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: node_type
        for name, node_type in config["available_node_types"].items()
        if name != config["head_node_type"]
    }


def is_spot(node_type: dict[str, Any]) -> bool:
    market = node_type["node_config"].get("InstanceMarketOptions", {})
    return market.get("MarketType") == "spot"


def ray_start_commands(commands: list[str]) -> list[str]:
    return [cmd for cmd in commands if "ray start" in cmd]


def ray_start_flags(command: str) -> dict[str, str]:
    """The ``--flag=value`` options of the `ray start` part of a command."""
    tokens = shlex.split(command.split("ray start", 1)[1])
    flags = {}
    for token in tokens:
        if token.startswith("--"):
            key, _, value = token.partition("=")
            flags[key] = value
    return flags


def test_ray_accepts_the_config(config: dict[str, Any]) -> None:
    assert config["provider"]["type"] == "aws"
    assert config["provider"]["region"]
    assert config["cluster_name"] == "tether"
    assert config["auth"]["ssh_user"] == "ubuntu"


def test_head_node_never_gets_gpu_work(config: dict[str, Any]) -> None:
    head = config["available_node_types"][config["head_node_type"]]
    shape = INSTANCE_SHAPES[head["node_config"]["InstanceType"]]
    assert head["resources"]["GPU"] == 0
    # Some CPU for head-pinned actors and light stages, with at least one
    # vCPU left over for the GCS, the dashboard and the autoscaler.
    assert 0 < head["resources"]["CPU"] < shape["CPU"]
    assert head["min_workers"] == 0
    assert head["max_workers"] == 0
    assert not is_spot(head), "losing a spot head would lose the whole cluster"


def test_spot_gpu_workers_of_one_and_four_gpus(config: dict[str, Any]) -> None:
    spot = {name: t for name, t in worker_types(config).items() if is_spot(t)}
    by_gpus = {t["resources"]["GPU"]: t["node_config"]["InstanceType"] for t in spot.values()}
    assert by_gpus == {1: "g5.xlarge", 4: "g5.12xlarge"}
    for name, node_type in spot.items():
        shape = INSTANCE_SHAPES[node_type["node_config"]["InstanceType"]]
        assert node_type["resources"] == shape, name
        assert node_type["min_workers"] == 0, name
        assert 1 <= node_type["max_workers"] <= config["max_workers"], name


def test_on_demand_fallback_twins_exist_and_are_disabled(
    config: dict[str, Any],
) -> None:
    workers = worker_types(config)
    spot = [t for t in workers.values() if is_spot(t)]
    on_demand = [t for t in workers.values() if not is_spot(t)]
    assert all("InstanceMarketOptions" not in t["node_config"] for t in on_demand)
    for spot_type in spot:
        twins = [
            t
            for t in on_demand
            if t["node_config"]["InstanceType"] == spot_type["node_config"]["InstanceType"]
            and t["resources"] == spot_type["resources"]
        ]
        assert len(twins) == 1, spot_type["node_config"]["InstanceType"]
        assert twins[0]["min_workers"] == 0
        assert twins[0]["max_workers"] == 0, "fallback types stay off until switched by hand"


def test_autoscaling_limits_and_idle_shutdown(config: dict[str, Any]) -> None:
    assert 0 < config["idle_timeout_minutes"] <= 30
    assert config["upscaling_speed"] > 0
    assert 1 <= config["max_workers"] <= 8


def test_every_node_uses_one_ami(config: dict[str, Any]) -> None:
    images = {t["node_config"]["ImageId"] for t in config["available_node_types"].values()}
    assert len(images) == 1
    assert next(iter(images)).startswith("ami-")


def test_dashboard_listens_on_loopback_only(config: dict[str, Any]) -> None:
    (head_start,) = ray_start_commands(config["head_start_ray_commands"])
    flags = ray_start_flags(head_start)
    assert "--head" in flags
    assert flags["--dashboard-host"] == "127.0.0.1"


def test_token_auth_on_every_ray_start(config: dict[str, Any]) -> None:
    # Tie the config to the mechanism the installed Ray really implements.
    mode_var = authentication_token_setup.AUTH_MODE_ENV_VAR
    assert mode_var == "RAY_AUTH_MODE"
    starts = ray_start_commands(config["head_start_ray_commands"]) + ray_start_commands(
        config["worker_start_ray_commands"]
    )
    assert len(starts) == 2
    for command in starts:
        before_start = command.split("ray start", 1)[0]
        assert f"export {mode_var}=token" in before_start, command

    # The token reaches every node as a file at Ray's default token path,
    # copied from the same path on the laptop. It is never written inline.
    token_path = "~/.ray/auth_token"
    assert Path(token_path).expanduser() == authentication_token_setup._get_default_token_path()
    assert config["file_mounts"][token_path] == token_path
    assert f"chmod 600 {token_path}" in config["setup_commands"]
    all_commands = itertools.chain(
        config["head_setup_commands"],
        config["worker_setup_commands"],
        config["head_start_ray_commands"],
        config["worker_start_ray_commands"],
    )
    assert not any("RAY_AUTH_TOKEN=" in cmd for cmd in all_commands)


def test_security_group_opens_only_ssh_to_one_cidr(config: dict[str, Any]) -> None:
    group = config["provider"]["security_group"]
    assert group["GroupName"]
    (rule,) = group["IpPermissions"]
    assert rule["IpProtocol"] == "tcp"
    assert rule["FromPort"] == rule["ToPort"] == 22
    assert set(rule) <= {"IpProtocol", "FromPort", "ToPort", "IpRanges"}
    (ip_range,) = rule["IpRanges"]
    network = ipaddress.ip_network(ip_range["CidrIp"], strict=True)
    assert network.prefixlen >= 24, "SSH must be open to a narrow CIDR, not the world"
    # Ray applies the group only to node types without their own groups.
    for node_type in config["available_node_types"].values():
        assert "SecurityGroupIds" not in node_type["node_config"]


def _ray_default_inbound_rules(sgids: set[str], extended_rules: list[dict]) -> list[dict]:
    """Run Ray's own rule builder from aws/config.py without importing boto3."""
    spec = importlib.util.find_spec("ray.autoscaler._private.aws.config")
    assert spec is not None and spec.origin is not None
    tree = ast.parse(Path(spec.origin).read_text())
    wanted = {
        "_create_default_inbound_rules",
        "_create_default_intracluster_inbound_rules",
        "_create_default_ssh_inbound_rules",
    }
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in wanted]
    assert {f.name for f in functions} == wanted
    namespace: dict[str, Any] = {"itertools": itertools}
    code = compile(ast.Module(body=functions, type_ignores=[]), spec.origin, "exec")
    # Runs three pure functions copied from the installed Ray, not outside input.
    exec(code, namespace)
    return namespace["_create_default_inbound_rules"](sgids, extended_rules)


def test_ray_created_group_adds_world_ssh_so_docs_caveat_holds(
    config: dict[str, Any],
) -> None:
    """If Ray creates the group itself, it adds SSH from 0.0.0.0/0 and our rule.

    cluster.yaml and docs/cluster.md ("Locking SSH down") tell users to
    pre-create the group or revoke that rule. If this test starts failing,
    Ray has changed its defaults: update both texts.
    """
    ours = config["provider"]["security_group"]["IpPermissions"]
    rules = _ray_default_inbound_rules({"sg-tether"}, ours)
    intracluster = [r for r in rules if r.get("UserIdGroupPairs")]
    assert intracluster == [
        {
            "FromPort": -1,
            "ToPort": -1,
            "IpProtocol": "-1",
            "UserIdGroupPairs": [{"GroupId": "sg-tether"}],
        }
    ]
    world_ssh = {
        "FromPort": 22,
        "ToPort": 22,
        "IpProtocol": "tcp",
        "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
    }
    assert world_ssh in rules
    assert all(rule in rules for rule in ours)
    docs = (CLUSTER_YAML.parent / "docs" / "cluster.md").read_text()
    assert "0.0.0.0/0" in docs and "revoke-security-group-ingress" in docs


def test_cluster_ray_pin_matches_installed_ray(config: dict[str, Any]) -> None:
    pins = re.findall(r"ray\[default\]==([\w.]+)", " ".join(config["setup_commands"]))
    assert pins == [ray.__version__]


def test_project_file_mounts_are_repo_relative(config: dict[str, Any]) -> None:
    top_level = {"pyproject.toml", "README.md", "client", "cluster", "ml"}
    project_mounts = {
        remote: local
        for remote, local in config["file_mounts"].items()
        if remote.startswith("~/tether-src/")
    }
    assert {Path(local).name for local in project_mounts.values()} == top_level
    for remote, local in project_mounts.items():
        assert local.startswith("./"), local
        assert remote == "~/tether-src/" + local.removeprefix("./")
    assert "-e ~/tether-src" in " ".join(config["setup_commands"])


def _set_head_gpu_fraction(raw: dict[str, Any]) -> None:
    raw["available_node_types"][raw["head_node_type"]]["resources"]["GPU"] = 0.5


def _min_workers_above_cap(raw: dict[str, Any]) -> None:
    raw["max_workers"] = 1
    for name, node_type in raw["available_node_types"].items():
        if name != raw["head_node_type"]:
            node_type["min_workers"] = 1


@pytest.mark.parametrize(
    ("mutate", "error", "message"),
    [
        pytest.param(
            lambda raw: raw.update(gpu_count=4),
            jsonschema.ValidationError,
            "Additional properties are not allowed ('gpu_count' was unexpected)",
            id="unknown-top-level-key",
        ),
        pytest.param(
            lambda raw: raw.update(idle_timeout_minutes="ten"),
            jsonschema.ValidationError,
            "'ten' is not of type 'number'",
            id="wrong-type",
        ),
        pytest.param(
            _set_head_gpu_fraction,
            jsonschema.ValidationError,
            "0.5 is not of type 'integer'",
            id="fractional-node-resource",
        ),
        pytest.param(
            lambda raw: raw["provider"]["security_group"].update(
                IpPermission=raw["provider"]["security_group"].pop("IpPermissions")
            ),
            jsonschema.ValidationError,
            "Additional properties are not allowed ('IpPermission' was unexpected)",
            id="misspelt-security-group-key",
        ),
        pytest.param(
            _min_workers_above_cap,
            ValueError,
            "The specified global `max_workers` is smaller than the sum of `min_workers`",
            id="min-workers-above-global-cap",
        ),
    ],
)
def test_ray_rejects_broken_variants(mutate, error, message) -> None:
    raw = load_raw()
    ray_check(raw)  # the unmodified file passes, so the failure below is the mutation's
    mutate(raw)
    with pytest.raises(error, match=re.escape(message)):
        ray_check(raw)
