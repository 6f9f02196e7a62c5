"""Opening a sweep's bucket (s3://, gs://) as a pyarrow filesystem, in bounded time.

Endpoint, region and credentials come from the environment, never from the spec (a spec is
saved with the sweep and its storage URI travels to every trial): a URI carrying a query
(`?endpoint_override=...`) or a user (`key:secret@`) is refused.

What pyarrow 26 reads from the environment by itself, and what this module adds:

- S3 (the AWS C++ SDK): credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
  AWS_SESSION_TOKEN, AWS_PROFILE and the shared files, web identity, ECS, and the EC2
  metadata server; the region from AWS_REGION, AWS_DEFAULT_REGION or the profile (and
  otherwise from the EC2 metadata server, unless AWS_EC2_METADATA_DISABLED=true). It does
  not read AWS_ENDPOINT_URL or AWS_ENDPOINT_URL_S3: this module passes them (the _S3 one
  first) as endpoint_override and scheme. With no endpoint and no region configured, the
  bucket's region is asked of AWS (`resolve_s3_region`), as `FileSystem.from_uri` does.
  With no credentials at all the SDK would send unsigned requests after trying the metadata
  server, so this module says so at once instead (before any network call). Writes open
  lazily (`allow_delayed_open`): a small object is one PutObject, not the three requests of a
  multipart upload.
- GCS (google-cloud-cpp): credentials from GOOGLE_APPLICATION_CREDENTIALS, the gcloud
  application-default file, then the GCE metadata server (GCE_METADATA_ROOT names another
  one); the endpoint from CLOUD_STORAGE_EMULATOR_ENDPOINT. Its default retry policy keeps
  retrying a failing request for minutes: this module bounds it (`retry_time_limit`).

Opening probes the bucket (one request) with short timeouts under an overall deadline, so
an endpoint that refuses, does not answer, a missing bucket or missing credentials is one
line (`TableError`) naming the URI and what to set, within seconds.
"""

from __future__ import annotations

import configparser
import datetime
import os
import threading
from collections.abc import Callable, Mapping
from typing import TypeVar
from urllib.parse import SplitResult, urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from repsweep.analysis.tables.location import SETTINGS, Location
from repsweep.analysis.tables.schemas import TableError

PROBE_DEADLINE_S = 8.0  # the longest an open waits for a store to answer, whatever hangs
S3_PROBE = {"connect_timeout": 2.0, "request_timeout": 2.0}  # the probe's own bounds (2 tries)
GCS_PROBE_RETRY_S = 1.0  # the probe gives up retrying after this
GCS_RETRY_S = 60.0  # the sweep's requests retry transient errors this long (the client's default: 15 min)

T = TypeVar("T")


def open_bucket(location: Location) -> pafs.FileSystem:
    """The filesystem of a bucket Location (s3, gs); paths in it are `location.path` (bucket/prefix).

    Raises TableError, one line naming the URI and what to set, when the bucket cannot be
    used; returns within about PROBE_DEADLINE_S seconds.
    """
    uri, bucket = location.uri, location.path.split("/", 1)[0]
    store = _S3(uri, bucket, os.environ) if location.scheme == "s3" else _Gcs(uri, bucket, os.environ)
    try:
        return _within(PROBE_DEADLINE_S, store.connect)
    except TimeoutError:
        raise TableError(f"storage '{uri}': {store.silent(PROBE_DEADLINE_S)}") from None
    except (OSError, pa.ArrowException) as e:
        raise TableError(f"storage '{uri}': {store.explain(str(e))}") from e


_UNREACHABLE = ("could not connect", "couldn't connect", "could not resolve", "failed to connect",
                "connection refused", "curl error", "network_connection")
_SILENT = ("timeout was reached", "timed out", "curlcode: 28")  # connected, but no answer in time
_DENIED = ("access denied", "accessdenied", "access_denied", "forbidden", "status 403", "permission_denied",
           "invalidaccesskeyid", "signaturedoesnotmatch", "unauthenticated")


def _within(seconds: float, fn: Callable[[], T]) -> T:
    """fn() on a daemon thread, or TimeoutError after `seconds` (the thread is left to finish or hang)."""
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # handed to the caller
            box["error"] = e

    thread = threading.Thread(target=run, name="repsweep-storage-probe", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeoutError
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def _has(text: str, words: tuple[str, ...]) -> bool:
    text = text.lower()
    return any(w in text for w in words)


def _first_line(text: str, limit: int = 200) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


# ------------------------------------------------------------------------------- S3

class _S3:
    """An s3:// bucket: options from the environment, the probe, the errors explained."""

    def __init__(self, uri: str, bucket: str, env: Mapping[str, str]) -> None:
        self.uri, self.bucket, self.env = uri, bucket, env
        self.endpoint, self.endpoint_var = _s3_endpoint(uri, env)
        self.where = (f"the S3 endpoint {self.endpoint.geturl()} ({self.endpoint_var})" if self.endpoint
                      else "AWS S3")
        region_fix = ("" if self.endpoint or _aws_region(env) else
                      "; without AWS_REGION the AWS SDK asks the EC2 metadata server for it (set AWS_REGION, "
                      "or AWS_EC2_METADATA_DISABLED=true off EC2)")
        self.unreachable_fix = (f"start that server or set {self.endpoint_var} to one that answers" if self.endpoint
                                else "check the network, or set AWS_ENDPOINT_URL for an S3-compatible server") + region_fix

    def connect(self) -> pafs.S3FileSystem:
        """The sweep's filesystem, once a quick probe found the bucket (else TableError or OSError)."""
        if not _aws_credentials(self.env):
            raise TableError(f"storage '{self.uri}': no AWS credentials found; set AWS_ACCESS_KEY_ID and "
                             f"AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) in the environment")
        options: dict[str, object] = {}
        if self.endpoint:
            options.update(endpoint_override=self.endpoint.netloc, scheme=self.endpoint.scheme)
        elif not _aws_region(self.env):
            options["region"] = pafs.resolve_s3_region(self.bucket)
        probe = pafs.S3FileSystem(**options, **S3_PROBE, retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=2))
        if probe.get_file_info(self.bucket).type == pafs.FileType.NotFound:
            raise OSError("NoSuchBucket")
        # the SDK's own timeouts (1 s connect, 3 s stalled) and 3 tries; a delayed open puts a small
        # object in one request instead of a multipart upload's three (an error then shows at close)
        return pafs.S3FileSystem(**options, allow_delayed_open=True)

    def explain(self, error: str) -> str:
        if _has(error, ("nosuchbucket", "not found")):
            at = f" at {self.endpoint.geturl()}" if self.endpoint else ""
            return (f"bucket '{self.bucket}' does not exist{at}; create it (aws s3 mb s3://{self.bucket}) "
                    f"or point storage at a bucket that exists")
        if _has(error, _DENIED):
            return (f"access to bucket '{self.bucket}' denied by {self.where}; check AWS_ACCESS_KEY_ID and "
                    f"AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)")
        if _has(error, _SILENT):
            return self.silent(2 * S3_PROBE["request_timeout"])  # two tries
        if _has(error, _UNREACHABLE):
            return f"cannot reach {self.where}; {self.unreachable_fix}"
        return f"cannot open it ({_first_line(error)}); check {SETTINGS['s3']}"

    def silent(self, seconds: float) -> str:
        return f"no answer from {self.where} within {seconds:.0f} s; {self.unreachable_fix}"


def _s3_endpoint(uri: str, env: Mapping[str, str]) -> tuple[SplitResult | None, str]:
    """The S3 endpoint the environment names (AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL), and the variable."""
    for var in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        if env.get(var):
            url = urlsplit(env[var])
            if url.scheme not in ("http", "https") or not url.netloc or url.path.strip("/"):
                raise TableError(f"storage '{uri}': {var}='{env[var]}' is not an endpoint; set it to "
                                 f"http://host:port or https://host[:port]")
            return url, var
    return None, ""


def _aws_region(env: Mapping[str, str]) -> str:
    """The region the environment or the AWS config file's profile sets ('' for none)."""
    if env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"):
        return env.get("AWS_REGION") or env["AWS_DEFAULT_REGION"]
    profile = env.get("AWS_PROFILE") or env.get("AWS_DEFAULT_PROFILE") or "default"
    config = configparser.ConfigParser()
    try:
        config.read(env.get("AWS_CONFIG_FILE") or os.path.expanduser("~/.aws/config"))
    except configparser.Error:
        return ""
    section = profile if profile == "default" else f"profile {profile}"
    return config.get(section, "region", fallback="")


def _aws_credentials(env: Mapping[str, str]) -> bool:
    """Whether any source the AWS SDK reads credentials from is there (no network call).

    Keys, a profile, a shared credentials or config file, web identity (EKS), container
    credentials (ECS), or an EC2 machine whose metadata server is not disabled.
    """
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        return True
    if any(env.get(v) for v in ("AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                                "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_EC2_METADATA_SERVICE_ENDPOINT")):
        return True
    files = (env.get("AWS_SHARED_CREDENTIALS_FILE") or os.path.expanduser("~/.aws/credentials"),
             env.get("AWS_CONFIG_FILE") or os.path.expanduser("~/.aws/config"))
    if any(os.path.isfile(f) for f in files):
        return True
    return env.get("AWS_EC2_METADATA_DISABLED", "").lower() != "true" and _on_ec2()


def _on_ec2() -> bool:
    """Whether this machine says it is an EC2 instance (DMI vendor or Xen hypervisor id)."""
    for path, mark in (("/sys/class/dmi/id/sys_vendor", "amazon"), ("/sys/hypervisor/uuid", "ec2")):
        try:
            with open(path) as f:
                if f.read().strip().lower().startswith(mark):
                    return True
        except OSError:
            pass
    return False


# ------------------------------------------------------------------------------ GCS

class _Gcs:
    """A gs:// bucket: the client's own credential search, bounded retries, the errors explained."""

    def __init__(self, uri: str, bucket: str, env: Mapping[str, str]) -> None:
        self.uri, self.bucket, self.env = uri, bucket, env
        emulator = env.get("CLOUD_STORAGE_EMULATOR_ENDPOINT")
        self.where = f"{emulator} (CLOUD_STORAGE_EMULATOR_ENDPOINT)" if emulator else "Google Cloud Storage"
        self.unreachable_fix = ("start that server or unset CLOUD_STORAGE_EMULATOR_ENDPOINT" if emulator
                                else "check the network")
        self.key_file = env.get("GOOGLE_APPLICATION_CREDENTIALS", "")
        self.adc_file = os.path.join(env.get("CLOUDSDK_CONFIG") or os.path.expanduser("~/.config/gcloud"),
                                     "application_default_credentials.json")

    def connect(self) -> pafs.GcsFileSystem:
        """The sweep's filesystem, once a quick probe found the bucket (else TableError or OSError)."""
        if self.key_file and not os.path.isfile(self.key_file):
            raise TableError(f"storage '{self.uri}': GOOGLE_APPLICATION_CREDENTIALS='{self.key_file}' is not a "
                             f"file; set it to a service-account key file")
        probe = pafs.GcsFileSystem(retry_time_limit=datetime.timedelta(seconds=GCS_PROBE_RETRY_S))
        if probe.get_file_info(self.bucket).type == pafs.FileType.NotFound:
            raise OSError("NoSuchBucket")
        return pafs.GcsFileSystem(retry_time_limit=datetime.timedelta(seconds=GCS_RETRY_S))

    def explain(self, error: str) -> str:
        if _has(error, ("oauth2 access token",)):  # the client found no usable credentials
            if self.key_file:
                return (f"the credentials in GOOGLE_APPLICATION_CREDENTIALS='{self.key_file}' gave no access "
                        f"token; set it to a valid service-account key file")
            if os.path.isfile(self.adc_file):
                return (f"the gcloud application-default credentials ({self.adc_file}) gave no access token; "
                        f"run 'gcloud auth application-default login' again")
            return ("no Google credentials (GOOGLE_APPLICATION_CREDENTIALS is unset, there are no gcloud "
                    "application-default credentials and no GCE metadata server answered); set "
                    "GOOGLE_APPLICATION_CREDENTIALS to a service-account key file, run "
                    "'gcloud auth application-default login', or run on GCE")
        if _has(error, ("nosuchbucket",)):
            return (f"bucket '{self.bucket}' does not exist; create it (gcloud storage buckets create "
                    f"gs://{self.bucket}) or point storage at a bucket that exists")
        if _has(error, _DENIED):
            return (f"access to bucket '{self.bucket}' denied; give the account of GOOGLE_APPLICATION_CREDENTIALS "
                    f"(or of the gcloud login) storage access to it")
        if _has(error, _UNREACHABLE + _SILENT + ("unavailable",)):
            return f"cannot reach {self.where}; {self.unreachable_fix}"
        return f"cannot open it ({_first_line(error)}); check {SETTINGS['gs']}"

    def silent(self, seconds: float) -> str:
        if self.key_file or os.path.isfile(self.adc_file):
            return f"no answer from {self.where} within {seconds:.0f} s; {self.unreachable_fix}"
        return (f"no answer within {seconds:.0f} s from the GCE metadata server (asked for credentials: "
                f"GOOGLE_APPLICATION_CREDENTIALS is unset, no gcloud login) or from {self.where}; set "
                f"GOOGLE_APPLICATION_CREDENTIALS to a service-account key file, run 'gcloud auth "
                f"application-default login', or {self.unreachable_fix}")
