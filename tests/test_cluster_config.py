"""cluster.yaml is a valid Ray cluster-launcher config (checked offline, no cloud call)."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

CLUSTER = Path(__file__).resolve().parents[1] / "cluster.yaml"


def test_cluster_yaml_validates_against_rays_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load(CLUSTER.read_text())
    validate_config(prepare_config(copy.deepcopy(config)))
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["max_workers"] == 0
    assert types["gpu_worker"]["min_workers"] == 0 < types["gpu_worker"]["max_workers"]
