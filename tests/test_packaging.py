"""repsweep installs as one namespace: no clash with a user's own `models/` or `analysis/`, and a
plain (non-editable) install runs the demo's command and finds its spec in the package data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

from tests.conftest import cli_env, kill_ray_processes

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv the tests run in


def _user_project(root: Path) -> Path:
    """A researcher's folder with packages of its own called `models` and `analysis`."""
    for pkg in ("models", "analysis"):
        (root / pkg).mkdir(parents=True)
        (root / pkg / "__init__.py").write_text(f"WHO = 'the user\\'s {pkg}'\n")
    return root


def test_every_repsweep_module_imports_beside_a_users_own_models_and_analysis_in_driver_and_worker(tmp_path):
    """A driver started in the user's folder (which Ray also puts on its workers' path) imports every
    module of repsweep, as do a Ray worker: repsweep never takes the user's `models` or `analysis`."""
    project = _user_project(tmp_path / "project")
    (project / "task.py").write_text(textwrap.dedent("""
        import importlib, json, os, pkgutil, ray

        def walk():
            packages = [importlib.import_module(f"repsweep.{p}") for p in ("orchestrator", "models", "analysis")]
            names = [m.name for p in packages for m in pkgutil.walk_packages(p.__path__, p.__name__ + ".")]
            for name in names:
                importlib.import_module(name)
            import analysis, models
            from repsweep import analysis as our_analysis, models as our_models
            return {"modules": names, "theirs": [models.WHO, analysis.WHO],
                    "ours": [our_models.__file__, our_analysis.__file__]}

        ray.init(num_cpus=1, include_dashboard=False, _temp_dir=os.environ["RAY_TMPDIR"])
        print(json.dumps([walk(), ray.get(ray.remote(walk).remote())]))
    """))
    env = cli_env("rs-pkg-")
    try:
        task = subprocess.run([sys.executable, "task.py"], cwd=project, env=env, capture_output=True,
                              text=True, timeout=120)
        assert task.returncode == 0, task.stderr[-2000:]
    finally:
        kill_ray_processes(env["RAY_TMPDIR"])
    driver, worker = json.loads(task.stdout.strip().splitlines()[-1])
    for seen in (driver, worker):
        assert {"repsweep.orchestrator.cli", "repsweep.orchestrator.training.trainable", "repsweep.models.registry",
                "repsweep.analysis.present.report"} <= set(seen["modules"]), seen["modules"]
        assert seen["theirs"] == ["the user's models", "the user's analysis"]
        for path in seen["ours"]:
            assert Path(path).resolve().is_relative_to(REPO), path


def test_a_plain_install_into_a_fresh_venv_runs_the_demo_command_and_imports_the_package(tmp_path):
    source = tmp_path / "source"  # a copy: building writes build/ and egg-info beside the sources
    tracked = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout.split()
    for name in tracked:
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels), str(source)], check=True, timeout=240)
    (wheel,) = wheels.glob("repsweep-*.whl")
    fresh = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(fresh)], check=True, timeout=120)
    site = Path(subprocess.run([str(fresh / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # repsweep's dependencies come from the tests' venv (no network); its .pth files, and so its
    # editable repsweep, are not processed from there: only the wheel installs repsweep
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(fresh / "bin" / "python"), "install",
                    "--no-deps", "-q", str(wheel)], check=True, timeout=240)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    helped = subprocess.run([str(fresh / "bin" / "repsweep"), "demo", "--help"], cwd=elsewhere, env=env,
                            capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0, helped.stderr[-2000:]
    assert "usage: repsweep demo" in helped.stdout
    probe = textwrap.dedent("""
        import repsweep.analysis, repsweep.models, repsweep.orchestrator
        from repsweep.orchestrator.cli import demo_spec
        from repsweep.orchestrator.spec import load_spec
        print(repsweep.models.__file__)
        print(demo_spec())
        print(load_spec(demo_spec()).name)
    """)
    out = subprocess.run([str(fresh / "bin" / "python"), "-c", probe], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    models_file, spec_file, name = out.stdout.strip().splitlines()
    assert Path(models_file).is_relative_to(site) and Path(spec_file).is_relative_to(site)
    assert name == "demo"
