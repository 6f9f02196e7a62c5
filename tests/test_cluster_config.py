"""The cluster-launcher configs (cluster.yaml for AWS, examples/cluster-gcp.yaml) are valid and safe.

Checked offline, no cloud call: Ray's own `prepare_config` (which merges the provider's
defaults.yaml, shipped in the wheel) then `validate_config` (ray-schema.json). Then what the
schema cannot say: a head that runs no trials, GPU types from zero with spot and on-demand
beside each other, a dashboard on loopback only, no credentials, and setup commands pinning
the Ray, torch and torchvision versions installed here. torch is pinned to its public version
(2.14.1, not 2.14.1+cu130): the local suffix names this machine's build, and PyPI's Linux wheel
of the public version is the default CUDA build the GPU workers need.
"""

from __future__ import annotations

import copy
import re
import shlex
from importlib.metadata import version
from pathlib import Path
from typing import Any, Iterator

import pytest
import ray
import yaml
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [ROOT / "cluster.yaml", ROOT / "examples" / "cluster-gcp.yaml"]
SECRET = r"BEGIN [A-Z ]*PRIVATE KEY|AKIA[0-9A-Z]{16}"  # a PEM key, an AWS access key id: not even in comments
CREDENTIAL = re.compile(SECRET + r"|aws_access_key|aws_secret|secret|token|passw|private_key|credential"
                        r"|KeyName", re.IGNORECASE)  # KeyName: an EC2 key pair, i.e. a key file


@pytest.fixture(params=CONFIGS, ids=lambda p: p.name)
def path(request: pytest.FixtureRequest) -> Path:
    return request.param


def _load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def _prepared(config: dict[str, Any]) -> dict[str, Any]:
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def _strings(node: Any) -> Iterator[str]:
    """Every key and every scalar value of a YAML document, as text."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)
    elif node is not None:
        yield str(node)


def _is_spot(node_config: dict[str, Any]) -> bool:
    scheduling = node_config.get("scheduling") or {}  # GCP: one object (a list in Ray's examples)
    parts = scheduling if isinstance(scheduling, list) else [scheduling]
    return (node_config.get("InstanceMarketOptions", {}).get("MarketType") == "spot"
            or any(p.get("provisioningModel") == "SPOT" or p.get("preemptible") for p in parts))


def test_validates_with_rays_own_checks(path: Path) -> None:
    _prepared(_load(path))


def test_node_types(path: Path) -> None:
    config = _load(path)
    types = config["available_node_types"]
    head = types.pop(config["head_node_type"])
    assert head["resources"].get("CPU") == 0 and not head["resources"].get("GPU")
    assert head["max_workers"] == 0
    assert types, "no worker types"
    for name, kind in types.items():
        assert kind["min_workers"] == 0 < kind["max_workers"], name
        assert kind["resources"].get("CPU", 0) >= 1 and kind["resources"].get("GPU", 0) >= 1, name
    spot = [_is_spot(kind["node_config"]) for kind in types.values()]
    assert any(spot) and not all(spot), "needs a spot GPU type and an on-demand one"
    assert config["idle_timeout_minutes"] > 0


def test_dashboard_on_loopback_only(path: Path) -> None:
    assert "0.0.0.0" not in path.read_text()
    prepared = _prepared(_load(path))  # what `ray up` runs, Ray's defaults included
    assert "0.0.0.0" not in yaml.safe_dump(prepared)
    heads = [c for c in prepared["head_start_ray_commands"] if "ray start" in c and "--head" in c]
    assert heads and all("--dashboard-host=127.0.0.1" in c for c in heads)


def test_no_credentials(path: Path) -> None:
    found = [s for s in _strings(_load(path)) if CREDENTIAL.search(s)]
    assert not found, found
    assert not re.search(SECRET, path.read_text())


def test_setup_pins_installed_versions_and_mounted_checkout(path: Path) -> None:
    config = _load(path)
    checkout = next(remote for remote, local in config["file_mounts"].items() if local == ".")
    installs = [shlex.split(c) for c in config["setup_commands"] if "pip install" in c]
    assert len(installs) == 1, "one pip install, so one resolver sees the pins and repsweep"
    args = installs[0]
    assert checkout in args
    pins = dict(a.split("==", 1) for a in args if "==" in a)
    assert pins == {"ray[default,tune]": ray.__version__,
                    "torch": Version(version("torch")).public,
                    "torchvision": Version(version("torchvision")).public}
