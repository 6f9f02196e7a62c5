"""The resource check against a real loopback head whose monitor has not reported yet.

A head's monitor publishes which node types its autoscaler can launch only after its first
update, seconds after `ray start` returns. A driver that joins in between must wait for that
report, not take "not yet" for "no autoscaler". The test holds the head in that state for as
long as it likes: it stops the monitor (SIGSTOP), removes the report from the GCS, starts the
driver, and lets the monitor go on (SIGCONT) only once the driver says it waits.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import (free_port, head_env, kill_ray_processes, ray_processes, start_head,
                            write_fake_autoscaling_config)

pytestmark = pytest.mark.timeout(240)

# a driver: joins the head, removes the monitor's report (as on a just-started head), runs the check
DRIVER = """
import json, sys, time
import ray
from ray._private import ray_constants
from ray.experimental import internal_kv
from repsweep.orchestrator.cluster.resources import check_resources
from repsweep.orchestrator.spec import SpecError, load_spec

ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
raw = internal_kv._internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS)
if raw:
    status = json.loads(raw)
    status.pop("autoscaler_report", None)
    internal_kv._internal_kv_put(ray_constants.DEBUG_AUTOSCALING_STATUS, json.dumps(status), overwrite=True)
t0 = time.monotonic()
try:
    print("proceeds:", check_resources(load_spec(sys.argv[2])), flush=True)
except SpecError as e:
    print("refused:", e, flush=True)
print(f"decided after {time.monotonic() - t0:.1f} s", flush=True)
"""


def _monitor(temp: str) -> int:
    """The pid of the head's monitor (the autoscaler's process)."""
    pids = [pid for pid in ray_processes(temp) if b"autoscaler/_private/monitor.py" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(pids) == 1, pids
    return pids[0]


@pytest.mark.parametrize("launcher", [True, False], ids=["autoscaling-config", "plain-head"])
def test_a_driver_that_joins_before_the_autoscaler_reported_waits_for_its_report(tiny_spec, tmp_path, launcher):
    port = free_port()
    temp = tempfile.mkdtemp(prefix="rs-report-", dir="/tmp")
    env = head_env(temp)
    spec = tiny_spec(resources={"cpu": 1, "gpu": 0.5})  # the head has no CPU and no GPU
    config = write_fake_autoscaling_config(tmp_path / "fake.yaml", port) if launcher else None
    try:
        address = start_head(port, temp, env, config)
        monitor = _monitor(temp)
        os.kill(monitor, signal.SIGSTOP)  # no report can come until the driver waits for it
        driver = subprocess.Popen([sys.executable, "-c", DRIVER, address, str(spec)], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = driver.stdout.readline()
        assert first.startswith("waiting up to 30 s for the cluster's autoscaler to report"), \
            (first, driver.stderr.read()[-2000:] if driver.poll() is not None else "")
        time.sleep(1)  # the driver keeps waiting while the monitor is stopped
        assert driver.poll() is None
        os.kill(monitor, signal.SIGCONT)
        out, err = driver.communicate(timeout=120)
    finally:
        kill_ray_processes(temp)
    assert driver.returncode == 0, err[-2000:]
    assert "did not report" not in out  # decided by the report, not by the deadline
    if launcher:
        assert "proceeds: waiting for the autoscaler to add a node: a trial asks for 1 CPU and 0.5 GPU" in out, out
    else:
        assert "refused: a trial asks for 1 CPU and 0.5 GPU (resources.cpu, resources.gpu) but the largest node " \
               "has 0 CPU and 0 GPU, and no autoscaler can add one" in out, out
    print(out.strip().replace("\n", " | "))
