"""Sweeps on object storage: a whole sweep on an S3 bucket (moto's server on loopback), and
bad storage (nothing listening, a server that never answers, no bucket, no credentials, for
s3:// and gs://) failing within seconds in one line.

Nothing here reaches a real AWS or Google address: every test runs with the EC2 metadata
server disabled, the GCE metadata server and the GCS endpoint pointed at closed loopback
ports (GCE_METADATA_ROOT is what google-cloud-cpp reads, GCE_METADATA_HOST what Google's
Python libraries read; CLOUD_STORAGE_EMULATOR_ENDPOINT is read by google-cloud-cpp), and an
S3 endpoint on loopback.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from repsweep.analysis.tables.store import SweepStore
from repsweep.orchestrator.cli import main
from tests.conftest import ensure_ray

pytest.importorskip("moto", reason="moto's S3 server is a dev extra: pip install -e '.[dev]'")

pytestmark = pytest.mark.timeout(300)

KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def free_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server on port {port} exited with code {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


def start_moto() -> tuple[subprocess.Popen, str]:
    """moto's standalone S3 server in a subprocess on a free loopback port; its endpoint URL."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, proc)
    except RuntimeError:
        stop(proc)
        raise
    return proc, f"http://127.0.0.1:{port}"


def stop(proc: subprocess.Popen) -> None:
    """End a server this module started, by its pid."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    proc, endpoint = start_moto()
    yield endpoint
    stop(proc)


@pytest.fixture(scope="module")
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections and never answers (a hung server)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)  # the kernel completes the handshakes; nobody ever reads or replies
    yield server.getsockname()[1]
    server.close()


def offline_env(tmp: Path, endpoint: str) -> dict[str, str | None]:
    """The environment of every test here: S3 at `endpoint`, every metadata server and Google on
    closed loopback ports, no credentials files (None: unset)."""
    closed = f"127.0.0.1:{free_port()}"
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ENDPOINT_URL_S3": None, "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": None, "AWS_EC2_METADATA_DISABLED": "true", "AWS_PROFILE": None,
            "AWS_DEFAULT_PROFILE": None, "AWS_SESSION_TOKEN": None, "AWS_ACCESS_KEY_ID": None,
            "AWS_SECRET_ACCESS_KEY": None, "AWS_WEB_IDENTITY_TOKEN_FILE": None,
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": None, "AWS_CONTAINER_CREDENTIALS_FULL_URI": None,
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "no-aws-credentials"),
            "AWS_CONFIG_FILE": str(tmp / "no-aws-config"),
            "GCE_METADATA_ROOT": closed, "GCE_METADATA_HOST": closed, "GCE_METADATA_IP": closed,
            "CLOUD_STORAGE_EMULATOR_ENDPOINT": f"http://127.0.0.1:{free_port()}",
            "GOOGLE_APPLICATION_CREDENTIALS": None, "CLOUDSDK_CONFIG": str(tmp / "no-gcloud")}


def apply(monkeypatch: pytest.MonkeyPatch, env: dict[str, str | None]) -> None:
    for k, v in env.items():
        if v is None:
            monkeypatch.delenv(k, raising=False)
        else:
            monkeypatch.setenv(k, v)


def make_bucket(endpoint: str) -> str:
    """A new, empty bucket on the S3 server at `endpoint`."""
    name = f"sweeps-{uuid.uuid4().hex[:8]}"
    admin_fs(endpoint).create_dir(name)
    return name


def admin_fs(endpoint: str) -> pafs.S3FileSystem:
    """The test's own view of the server (credentials passed explicitly, bucket creation allowed)."""
    return pafs.S3FileSystem(endpoint_override=endpoint.split("://")[1], scheme="http", region="us-east-1",
                             access_key=KEYS["AWS_ACCESS_KEY_ID"], secret_key=KEYS["AWS_SECRET_ACCESS_KEY"],
                             allow_bucket_creation=True)


# ------------------------------------------------------------------------ a whole sweep on S3

@pytest.fixture(scope="module")
def s3_ray(ray_temp_dir, moto_endpoint, tmp_path_factory) -> Iterator[str]:
    """The S3 environment, and a local Ray started inside it (its workers open the bucket too)."""
    import ray

    with pytest.MonkeyPatch.context() as mp:
        apply(mp, offline_env(tmp_path_factory.mktemp("s3env"), moto_endpoint) | KEYS)
        ray.shutdown()  # a Ray started earlier would not hand this environment to its workers
        ensure_ray(ray_temp_dir)
        yield moto_endpoint
        ray.shutdown()  # the next test's Ray starts without it


def _objects(fs: pafs.FileSystem, root: str) -> dict[str, tuple[int, object]]:
    """Every object under root: its key below root -> (size, modification time)."""
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    return {i.path[len(root) + 1:]: (i.size, i.mtime) for i in infos if i.type == pafs.FileType.File}


def _counts(uri: str) -> dict[str, int]:
    store = SweepStore(uri)
    return {t: len(store.read_table(t)) for t in ("trials", "predictions", "layers", "cka", "pca", "tiles")}


def test_a_sweep_on_s3_trains_compares_resumes_and_is_queried_and_reported(s3_ray, tiny_spec, capsys):
    bucket = make_bucket(s3_ray)
    storage = f"s3://{bucket}/sweeps"
    uri = f"{storage}/tiny"
    spec = tiny_spec(grid={"data_fraction": [1.0], "seed": [0, 1]}, training={"epochs": 1, "warmup_epochs": 0},
                     compare={"passes": 1, "probes": False, "deletion": False, "max_actors": 1},
                     storage=storage)  # one comparison actor: each actor costs seconds to start on 2 cores
    assert main(["run", str(spec)]) == 0
    out = capsys.readouterr().out
    assert f"report: {uri}/report.html" in out

    fs, root = admin_fs(s3_ray), f"{bucket}/sweeps/tiny"
    objects = _objects(fs, root)
    trials = SweepStore(uri).read_table("trials")
    ids = sorted(trials["trial_id"])
    assert len(ids) == 2 and (trials["status"] == "done").all()
    assert {"spec.yaml", "report.html", *(f"checkpoints/{t}.pt" for t in ids)} <= set(objects)
    assert all(u == f"{uri}/checkpoints/{t}.pt" for t, u in zip(trials["trial_id"], trials["checkpoint_uri"]))
    tune = [k for k in objects if k.startswith("tune/")]
    assert any("/checkpoint_" in k for k in tune), "Tune's checkpoints are in the bucket"
    for table in ("trials", "predictions", "layers", "train_subset", "cka", "pca", "tiles", "disagreement"):
        assert any(k.startswith(f"tables/{table}/") and k.endswith(".parquet") for k in objects), table
    assert not any(".tmp-" in k for k in objects)  # objects are put whole, never renamed
    counts = _counts(uri)
    assert counts == {"trials": 2, "predictions": 2 * 360, "layers": 2 * 6, "cka": 2 * 36 + 36,
                      "pca": 2 * 6, "tiles": 1}  # as the same sweep on a local disk (tests/test_sweep.py)
    tables = {k: v for k, v in objects.items() if k.startswith("tables/")}

    # a resume of the finished sweep trains nothing, compares nothing again, rewrites no part,
    # and writes the report again
    assert main(["resume", uri]) == 0
    after = _objects(fs, root)
    assert {k: v for k, v in after.items() if k.startswith("tables/")} == tables
    assert {k for k in after if k.startswith("tune/")} == set(tune)  # no second Tune experiment
    assert _counts(uri) == counts
    cka = SweepStore(uri).read_table("cka")
    assert not cka.duplicated(["trial_a", "layer_a", "trial_b", "layer_b"]).any()

    capsys.readouterr()
    assert main(["query", uri, "SELECT count(*) AS n, count(DISTINCT trial_a) AS models FROM cka",
                 "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"n": 108, "models": 2}]
    # the report was written again from the bucket's tables (a separate `repsweep report` would
    # cost another ~10 s here: every query lists every table, 700 listings per report)
    assert after["report.html"][1] > objects["report.html"][1]
    with fs.open_input_stream(f"{root}/report.html") as f:
        assert f.read().lstrip().lower().startswith(b"<!doctype html")
    assert main(["status", uri]) == 0
    assert "2 done" in capsys.readouterr().out


# ------------------------------------------------------------------------------ bad storage

def _gcs_key(path: Path) -> Path:
    """A service-account key of a made-up account (its token endpoint a closed loopback port)."""
    pytest.importorskip("cryptography")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    path.write_text(json.dumps({"type": "service_account", "project_id": "test", "private_key_id": "1",
                                "private_key": pem, "client_email": "test@test.iam.gserviceaccount.com",
                                "client_id": "1", "token_uri": f"http://127.0.0.1:{free_port()}/token"}))
    return path


# case -> (storage URI, environment changes, what the one line says)
BAD = {
    "s3-nothing-listens": ("s3://bkt/sweeps", {"AWS_ENDPOINT_URL": "closed", **KEYS},
                           r"cannot reach the S3 endpoint http://127\.0\.0\.1:\d+ \(AWS_ENDPOINT_URL\); start that "
                           r"server or set AWS_ENDPOINT_URL to one that answers"),
    "s3-never-answers": ("s3://bkt/sweeps", {"AWS_ENDPOINT_URL": "silent", **KEYS},
                         r"no answer from the S3 endpoint http://127\.0\.0\.1:\d+ \(AWS_ENDPOINT_URL\) within 4 s"),
    "s3-no-bucket": ("s3://no-such-bucket/sweeps", KEYS,
                     r"bucket 'no-such-bucket' does not exist at http://127\.0\.0\.1:\d+; create it"),
    "s3-no-credentials": ("s3://bkt/sweeps", {},
                          r"no AWS credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \(or AWS_PROFILE\)"),
    "s3-credentials-in-uri": ("s3://AKIAX:hunter2@bkt/sweeps", KEYS,
                              r"'s3://\*\*\*@bkt/sweeps(/tiny)?': put no options or credentials in the URI"),
    "gs-no-credentials": ("gs://bkt/sweeps", {},
                          r"no Google credentials \(.*no GCE metadata server answered\); set "
                          r"GOOGLE_APPLICATION_CREDENTIALS to a service-account key file, run 'gcloud auth "
                          r"application-default login', or run on GCE"),
    "gs-metadata-never-answers": ("gs://bkt/sweeps", {"GCE_METADATA_ROOT": "silent"},
                                  r"no answer within 8 s from the GCE metadata server .*set "
                                  r"GOOGLE_APPLICATION_CREDENTIALS"),
    "gs-key-file-missing": ("gs://bkt/sweeps", {"GOOGLE_APPLICATION_CREDENTIALS": "/nonexistent/key.json"},
                            r"GOOGLE_APPLICATION_CREDENTIALS='/nonexistent/key.json' is not a file"),
    "gs-nothing-listens": ("gs://bkt/sweeps", {"GOOGLE_APPLICATION_CREDENTIALS": "key"},
                           r"cannot reach http://127\.0\.0\.1:\d+ \(CLOUD_STORAGE_EMULATOR_ENDPOINT\)"),
}


@pytest.fixture
def bad_env(moto_endpoint, silent_port, tmp_path, monkeypatch):
    """Set one BAD case's environment: 'closed' / 'silent' / 'key' stand for a port nobody
    listens on, the silent server, a made-up service-account key."""

    def set_case(changes: dict[str, str]) -> None:
        env = offline_env(tmp_path, moto_endpoint)
        for k, v in changes.items():
            if v == "closed":
                v = f"http://127.0.0.1:{free_port()}"
            elif v == "silent":
                v = f"{'http://' if k.startswith('AWS') else ''}127.0.0.1:{silent_port}"
            elif v == "key":
                v = str(_gcs_key(tmp_path / "key.json"))
            env[k] = v
        apply(monkeypatch, env)

    return set_case


def _one_line(capfd, rc: int) -> str:
    """The command's stderr (at the file descriptor: C++ libraries write there too), checked to be one line."""
    err = capfd.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith("repsweep: error: storage '"), err
    return err


@pytest.mark.parametrize("case", list(BAD))
def test_bad_storage_is_one_line_within_seconds(case, bad_env, tiny_spec, ray_local, capfd):
    storage, changes, says = BAD[case]
    bad_env(changes)
    spec = tiny_spec(storage=storage)
    for argv in (["status", f"{storage}/tiny"], ["run", str(spec)]):
        capfd.readouterr()
        t0 = time.perf_counter()
        rc = main(argv)
        wall = time.perf_counter() - t0
        err = _one_line(capfd, rc)
        assert f"'{storage}/tiny'" in err or "***@" in err, err  # names the URI
        assert re.search(says, err), err
        assert "hunter2" not in err
        assert wall < 15, f"{argv[0]} took {wall:.1f} s"


def test_gs_status_without_credentials_fails_in_seconds_in_a_fresh_process(tmp_path, moto_endpoint):
    """`repsweep status gs://...` with no network and no credentials used to hang for minutes."""
    env = {k: v for k, v in {**os.environ, **offline_env(tmp_path, moto_endpoint)}.items() if v is not None}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "repsweep.orchestrator.cli", "status", "gs://bkt/sweeps/tiny"],
                         env=env, capture_output=True, text=True, timeout=60)
    wall = time.perf_counter() - t0
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith("repsweep: error: storage 'gs://bkt/sweeps/tiny': no Google credentials")
    assert wall < 15, f"took {wall:.1f} s"
