"""Where a sweep lives: the one parser of storage strings (a spec's `storage`, a SWEEP argument).

    parse_location("./repsweep-results")        -> Location("", "/abs/repsweep-results")
    parse_location("s3://bucket/prefix")        -> Location("s3", "bucket/prefix")
    parse_location("file:///data/sweeps")       -> Location("", "/data/sweeps")
    parse_location("s3://bucket").join("demo")  -> Location("s3", "bucket/demo")

Every string that names storage goes through `parse_location` before anything is opened or
written; a string it refuses is one `TableError` line naming the problem and the fix, so no
command can train into `./s3:/` because a bucket was left out, pass a NUL byte to the
filesystem, or reach a filesystem repsweep does not support (pyarrow's HDFS, say). Pure
string work: no network, no filesystem.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from repsweep.analysis.tables.schemas import TableError

BUCKET_SCHEMES = ("s3", "gs", "gcs")  # opened by objectstore.open_bucket
MAX_LOCATION_CHARS = 1024  # longer than any real path or URI; a longer string is a mistake
SUPPORTED = "a local folder, file:///abs/path, s3://bucket/prefix or gs://bucket/prefix"
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")  # what a URI starts with
SETTINGS = {"s3": "AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or AWS_PROFILE",
            "gs": "GOOGLE_APPLICATION_CREDENTIALS", "gcs": "GOOGLE_APPLICATION_CREDENTIALS"}  # read from the environment
_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")  # S3 and GCS bucket names (lowercase)


@dataclass(frozen=True)
class Location:
    """A parsed storage string: `scheme` is "" for a local folder (then `path` is absolute), else
    one of BUCKET_SCHEMES with `path` = bucket/prefix."""

    scheme: str
    path: str

    @property
    def uri(self) -> str:
        """The location as a string that parses back to it."""
        return f"{self.scheme}://{self.path}" if self.scheme else self.path

    def join(self, *parts: str) -> Location:
        """The location of `parts` below this one."""
        return Location(self.scheme, "/".join([self.path.rstrip("/"), *parts]))


def parse_location(text: object, what: str = "storage") -> Location:
    """Parse a local path or a URI into a Location, or raise TableError (one line).

    `what` names the string in the message ("storage" for a spec's field, "sweep" for an argument).
    """
    if not isinstance(text, str) or not text.strip():
        raise TableError(f"{what} {_shown(text)}: empty; use {SUPPORTED}")
    if len(text) > MAX_LOCATION_CHARS:
        raise TableError(f"{what} {_shown(text)}: {len(text):,} characters; a path or URI has at most "
                         f"{MAX_LOCATION_CHARS:,}")
    if re.search(r"[\x00-\x1f\x7f]", text):
        raise TableError(f"{what} {_shown(text)}: holds a control character (a NUL byte, a newline, ...); "
                         f"write the path or URI alone")
    scheme = _SCHEME.match(text)
    if scheme is None:
        return Location("", os.path.abspath(os.path.expanduser(text)))
    name = scheme.group(1).lower()
    if not text[scheme.end():].startswith("//"):
        raise TableError(f"{what} {_shown(text)}: reads as a URI without '//' after '{name}:'; write "
                         f"{name}://... for a URI, or ./{text} for a local folder of that name")
    if name == "file":
        return _file(text, what)
    if name not in BUCKET_SCHEMES:
        raise TableError(f"{what} {_shown(text)}: {name}:// is not supported; use {SUPPORTED}")
    parts = urlsplit(text)
    if parts.query or parts.fragment or "@" in parts.netloc:
        shown = text.replace(parts.netloc, "***@" + parts.netloc.rsplit("@", 1)[-1]) if "@" in parts.netloc else text
        raise TableError(f"{what} {_shown(shown)}: put no options or credentials in the URI (it is saved with "
                         f"the sweep); use {name}://bucket/prefix and set them in the environment ({SETTINGS[name]})")
    if not parts.netloc:
        raise TableError(f"{what} {_shown(text)}: no bucket; use {name}://bucket/prefix")
    if not _BUCKET.fullmatch(parts.netloc):
        raise TableError(f"{what} {_shown(text)}: '{parts.netloc[:64]}' is not a bucket name (3-222 lowercase "
                         f"letters, digits, '.', '_' or '-'); use {name}://bucket/prefix")
    if any(seg in (".", "..") for seg in parts.path.split("/")):
        raise TableError(f"{what} {_shown(text)}: '.' and '..' are not folders in a bucket; write the prefix "
                         f"out, {name}://bucket/prefix")
    path = re.sub(r"/+", "/", f"{parts.netloc}{parts.path}").rstrip("/")
    return Location(name, path)


def _file(text: str, what: str) -> Location:
    parts = urlsplit(text)
    if parts.netloc not in ("", "localhost"):
        raise TableError(f"{what} {_shown(text)}: file:// names this machine's files; write "
                         f"file:///abs/path (three slashes), or use s3:// or gs:// for shared storage")
    if parts.query or parts.fragment or not parts.path.startswith("/"):
        raise TableError(f"{what} {_shown(text)}: expected file:///abs/path")
    return Location("", os.path.abspath(parts.path))


def _shown(text: object, limit: int = 80) -> str:
    """The string quoted for a message, cut to `limit` characters, control characters escaped."""
    shown = repr(text) if not isinstance(text, str) else "'" + re.sub(
        r"[\x00-\x1f\x7f]", lambda m: repr(m.group())[1:-1], text) + "'"
    return shown if len(shown) <= limit else shown[:limit - 4] + "...'"
