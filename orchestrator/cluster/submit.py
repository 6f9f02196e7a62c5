"""`repsweep submit SPEC --address http://HEAD:8265`: a sweep as a Ray Job on a cluster.

The job's working directory is a staged folder holding the spec and this repsweep's own code
(`repsweep/orchestrator`, `models`, `analysis`, `examples`), so the cluster runs exactly the
code that submitted it; its entrypoint is `python -m repsweep.orchestrator.cli run spec.yaml`
on the head. The driver records its job (`<sweep>/jobs/<id>.json`: id and the address it was
submitted to), and `repsweep status` asks that address for the job's state.

Ray's token authentication is honoured as Ray's own CLI does: RAY_AUTH_MODE=token with the
token in RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token. Cost: a few seconds (the
upload of a few hundred kB).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from repsweep.analysis.tables.store import SweepStore
from repsweep.orchestrator.cluster.lock import JOB_ENV
from repsweep.orchestrator.spec import SpecError, SweepSpec, load_spec

PACKAGES = ("orchestrator", "models", "analysis", "examples")  # repsweep's code, shipped with the job
ADDRESS_ENV = "REPSWEEP_JOB_ADDRESS"   # set on the job: the address it was submitted to
STATUS_TIMEOUT_S = 10.0                # how long `status` waits for a head's answer


def _stage(spec_path: str, folder: Path) -> None:
    """Copy the spec and repsweep's packages into the job's working directory."""
    shutil.copyfile(spec_path, folder / "spec.yaml")
    for name in PACKAGES:
        src = importlib.util.find_spec(f"repsweep.{name}").submodule_search_locations[0]
        shutil.copytree(src, folder / "repsweep" / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def _check_storage(spec: SweepSpec) -> None:
    if not spec.location.scheme and not os.path.isabs(os.path.expanduser(spec.storage.removeprefix("file://"))):
        raise SpecError(f"storage '{spec.storage}': a submitted sweep needs storage every node reaches, "
                        f"an s3:// or gs:// URI (or an absolute path on a shared file system); a relative "
                        f"path would land in the job's temporary folder")


def _client(address: str) -> Any:
    """A Jobs client for `address`, with Ray's errors turned into one line naming the fix."""
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except Exception as e:  # ConnectionError, a 401 from a head that wants a token, a bad URL
        raise SpecError(f"cannot reach the Ray job API at '{address}' ({_reason(e)}); start the "
                        f"cluster and forward its dashboard port (ray dashboard cluster.yaml), and "
                        f"if it uses token authentication set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN") from e


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[-1] if text else type(e).__name__)[:200]


def submit(spec_path: str, address: str) -> tuple[str, SweepSpec]:
    """Submit the sweep SPEC describes as a Ray Job at `address`; returns (job id, spec)."""
    spec = load_spec(spec_path)
    _check_storage(spec)
    client = _client(address)
    job_id = f"repsweep-{spec.name}-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S')}"
    with tempfile.TemporaryDirectory(prefix="repsweep-job-") as folder:
        _stage(spec_path, Path(folder))
        try:
            client.submit_job(entrypoint="python -m repsweep.orchestrator.cli run spec.yaml",
                              submission_id=job_id, metadata={"repsweep_sweep": spec.sweep_uri},
                              runtime_env={"working_dir": folder,
                                           "env_vars": {JOB_ENV: job_id, ADDRESS_ENV: address}})
        except Exception as e:  # a refused upload, an id already taken, an unknown runtime_env field
            raise SpecError(f"the Ray job API at '{address}' refused the sweep ({_reason(e)})") from e
    return job_id, spec


def record_job(store: SweepStore) -> None:
    """Inside a submitted job: note the job in the sweep, for `repsweep status`."""
    if os.environ.get(JOB_ENV):
        record = {"job_id": os.environ[JOB_ENV], "address": os.environ.get(ADDRESS_ENV, "")}
        store.write_bytes(json.dumps(record).encode(), "jobs", f"{record['job_id']}.json")


def job_states(store: SweepStore) -> list[tuple[str, str]]:
    """(job id, state) of every job the sweep ran as, asked of the address it was submitted to."""
    out = []
    for name in store.list_files("jobs"):
        record = json.loads(store.read_bytes("jobs", name))
        out.append((record["job_id"], _job_state(record["job_id"], record["address"])))
    return out


def _job_state(job_id: str, address: str) -> str:
    answer: list[str] = []

    def ask() -> None:
        try:
            answer.append(str(_client(address).get_job_status(job_id).value))
        except Exception as e:  # unreachable head, job unknown there
            answer.append(f"unknown ({_reason(e)})")

    t = threading.Thread(target=ask, daemon=True)
    t.start()
    t.join(STATUS_TIMEOUT_S)
    return answer[0] if answer else f"unknown (no answer from {address} in {STATUS_TIMEOUT_S:.0f} s)"
