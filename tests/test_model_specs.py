"""Bad model sections of every family: one line naming the field and what it allows, exit 2, nothing written."""

from __future__ import annotations

import pytest
import yaml

from repsweep.orchestrator.cli import main

BAD = [
    ("bad scale", {"model": {"family": "imagenet_resnet", "scale": "stage2"}, "grid": {"depth": 1},
                   "dataset": {"name": "cifar10", "root": "/nowhere"}},
     "spec field 'model.scale': got 'stage2', expected one of stage3, all for model.family imagenet_resnet"),
    ("multiplier zero", {"model": {"family": "imagenet_resnet"}, "grid": {"depth": 1, "width": [1, 0]}},
     "spec field 'grid.width': got 0"),
    ("multiplier huge", {"model": {"family": "imagenet_resnet"}, "grid": {"depth": 40}},
     "spec field 'grid.depth': got 40, expected a multiplier in (0, 16] (1 = ResNet-50) for model.family imagenet_resnet"),
    ("images too small", {"model": {"family": "imagenet_resnet"}, "grid": {"depth": 1}},
     "spec field 'dataset.name': got 'digits', expected images of at least 32 px for model.family imagenet_resnet (this dataset's are 1 x 8 x 8)"),
    ("folder images too small", {"model": {"family": "imagenet_resnet"}, "grid": {"depth": 1},
                                 "dataset": {"name": "imagefolder", "root": "/nowhere", "image_size": 16}},
     "spec field 'dataset.image_size': got 16, expected images of at least 32 px"),
    ("scale for cifar", {"model": {"scale": "all"}},
     "spec field 'model.scale': got 'all', expected to be left out (model.family cifar_resnet does not use it)"),
    ("fractional cifar width", {"grid": {"width": 1.5}},
     "spec field 'grid.width': got 1.5, expected an integer width multiplier from 1 to 64 for model.family cifar_resnet"),
    ("unknown torchvision model", {"model": {"family": "torchvision", "name": "resnet19"}, "dataset": {"name": "cifar10", "root": "/nowhere"}},
     "spec field 'model.name': got 'resnet19', expected a classification model of torchvision.models (alexnet,"),
    ("no torchvision model named", {"model": {"family": "torchvision"}, "dataset": {"name": "cifar10", "root": "/nowhere"}},
     "spec field 'model.name': got '', expected a classification model of torchvision.models"),
    ("bad token reduction", {"model": {"family": "torchvision", "name": "vit_b_16", "tokens": "max"},
                             "dataset": {"name": "imagefolder", "root": "/nowhere", "image_size": 224}},
     "spec field 'model.tokens': got 'max', expected one of mean, cls, flatten for model.family torchvision"),
    ("vit on cifar", {"model": {"family": "torchvision", "name": "vit_b_16"}, "dataset": {"name": "cifar10", "root": "/nowhere"}},
     "spec field 'dataset.name': got 'cifar10', expected 224 px images for vit_b_16 (torchvision builds its ViTs for that size only)"),
    ("torchvision on digits", {"model": {"family": "torchvision", "name": "resnet18"}},
     "spec field 'dataset.name': got 'digits', expected images of 3 channels for model.family torchvision (this dataset's are 1 x 8 x 8)"),
    ("torchvision with a depth", {"model": {"family": "torchvision", "name": "resnet18"}, "grid": {"depth": [1, 2]},
                                  "dataset": {"name": "cifar10", "root": "/nowhere"}},
     "spec field 'grid.depth': got 2, expected 1 (the architecture is model.name's) for model.family torchvision"),
    ("tokens for a resnet family", {"model": {"family": "imagenet_resnet", "tokens": "cls"}, "grid": {"depth": 1}},
     "spec field 'model.tokens': got 'cls', expected to be left out (model.family imagenet_resnet does not use it)"),
    ("unknown family", {"model": {"family": "resnet50"}}, "spec field 'model.family': got 'resnet50', expected one of cifar_resnet"),
]


@pytest.mark.parametrize("case, spec, message", BAD, ids=[b[0] for b in BAD])
def test_bad_model_specs_are_one_line_exit_2_and_write_nothing(case, spec, message, tmp_path, capsys):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"name": "bad", "storage": str(tmp_path / "out"), **spec}))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err
    assert not (tmp_path / "out").exists()


def test_a_grid_over_model_names_gives_one_trial_per_model_and_seed():
    from repsweep.orchestrator.grid import expand_grid
    from repsweep.orchestrator.spec import spec_from_dict

    spec = spec_from_dict({"name": "two", "model": {"family": "torchvision", "name": "resnet18"},
                           "dataset": {"name": "cifar10", "root": "/nowhere"},
                           "grid": {"model_name": ["resnet18", "wide_resnet50_2"], "seed": [0, 1]}})
    trials = expand_grid(spec)
    assert [(t.model.name, t.seed) for t in trials] == [("resnet18", 0), ("resnet18", 1),
                                                        ("wide_resnet50_2", 0), ("wide_resnet50_2", 1)]
    assert [t.arch for t in trials] == ["resnet18", "resnet18", "wide_resnet50_2", "wide_resnet50_2"]
    assert len({t.trial_id for t in trials}) == 4 and trials[0].trial_id.startswith("resnet18-f1-s0-")
    assert trials[2].config_row()["model"] == "wide_resnet50_2"
    with pytest.raises(Exception, match="grid.model_name': got \\['resnet18'\\], expected to be left out"):
        spec_from_dict({"name": "x", "grid": {"model_name": ["resnet18"]}})
