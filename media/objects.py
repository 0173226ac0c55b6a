"""Objects in object storage (``s3://``, ``gs://``, ``az://``; ``https://`` for lists and
manifests) through fsspec: bounded, retried reads, and the verified read-back of stored uris.

* A record's uri is the object URL itself (``s3://bucket/key``), a tar member in an object shard
  (``s3://bucket/shards/00000.tar#key.jpg``), never anything carrying a credential.
* Credentials come from each store's own chain (environment, config files, instance roles):
  nothing here takes, stores or logs one, and every error message that leaves this module is
  scrubbed (``scrub``) of the credential values the environment holds, URL userinfo and signed
  query strings.
* Reads are bounded (``max_bytes``: a ranged GET of at most ``max_bytes + 1`` bytes), retried
  with exponential back-off on transient errors, and time out (``ObjectOptions``).
* The client libraries (s3fs, gcsfs, adlfs) are optional extras imported on first use.

Imports the standard library, fsspec (lazily) and ``blipsearch``.
"""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, TypeVar

from blipsearch.errors import (
    ImageDecodeError,
    InvalidInputError,
    MissingDependencyError,
    SourceChangedError,
    SourceUnavailableError,
)
from blipsearch.limits import OBJECT_RETRIES, OBJECT_TIMEOUT_S
from media.tar import member_bytes

# URL scheme -> (fsspec protocol, the package that provides it, the blipsearch extra)
SCHEMES: dict[str, tuple[str, str, str]] = {
    "s3": ("s3", "s3fs", "s3"),
    "gs": ("gcs", "gcsfs", "gcs"),
    "gcs": ("gcs", "gcsfs", "gcs"),
    "az": ("az", "adlfs", "azure"),
    "abfs": ("abfs", "adlfs", "azure"),
    "abfss": ("abfs", "adlfs", "azure"),
    "https": ("https", "aiohttp", "s3"),
    "http": ("http", "aiohttp", "s3"),
}
STORE_SCHEMES = ("s3", "gs", "gcs", "az", "abfs", "abfss")  # images may live here; http(s) only lists them
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
MAX_KEY_BYTES = 1024  # S3's own key limit; longer names are refused before any request
_SECRET_ENV = re.compile(r"(SECRET|TOKEN|PASSWORD|ACCESS_KEY|ACCOUNT_KEY|CONNECTION_STRING|SAS|CREDENTIAL)", re.I)
_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s]+@", re.I)
_QUERY = re.compile(r"(https?://[^\s?#'\"]+)\?[^\s#'\"]*", re.I)
_KEY_VALUE = re.compile(
    r"(?i)(aws_secret_access_key|aws_session_token|secret|signature|x-amz-[a-z-]*|sig|token|password)"
    r"(['\"]?\s*[:=]\s*['\"]?)[^\s'\",&]+"
)


@dataclass(frozen=True)
class ObjectOptions:
    """How object stores are reached: built once at the edge (``from_settings``) or, where a
    reader of stored uris has no settings at hand, from the same environment (``from_env``)."""

    endpoint_url: str | None = None  # S3-compatible stores (MinIO, Ceph, R2)
    timeout_s: float = OBJECT_TIMEOUT_S  # connect and read timeouts of each request
    retries: int = OBJECT_RETRIES  # attempts after the first on transient errors (back-off 0.5 s, 1 s, 2 s...)

    @classmethod
    def from_settings(cls, settings: Any) -> ObjectOptions:
        return cls(settings.s3_endpoint_url, settings.object_timeout_s, settings.object_retries)

    @classmethod
    def from_env(cls) -> ObjectOptions:
        env = os.environ
        return cls(
            env.get("BLIPSEARCH_S3_ENDPOINT_URL") or None,
            float(env.get("BLIPSEARCH_OBJECT_TIMEOUT_S") or 30.0),
            int(env.get("BLIPSEARCH_OBJECT_RETRIES") or 3),
        )


def scheme_of(uri: str) -> str | None:
    head, sep, _ = uri.partition("://")
    return head.lower() if sep and head.lower() in SCHEMES else None


def is_object_url(uri: str) -> bool:
    """An object in a store (``s3://``, ``gs://``, ``az://``), not an http(s) URL."""
    return scheme_of(uri) in STORE_SCHEMES


def is_remote(uri: str) -> bool:
    return scheme_of(uri) is not None


def scrub(text: str) -> str:
    """``text`` without credentials: the values of secret-looking environment variables, URL
    userinfo, query strings of http(s) URLs (signed URLs, SAS tokens) and ``secret=...`` pairs."""
    for name, value in os.environ.items():
        if value and len(value) >= 6 and _SECRET_ENV.search(name):
            text = text.replace(value, "***")
    text = _USERINFO.sub(r"\g<scheme>***@", text)
    text = _QUERY.sub(r"\1?***", text)
    return _KEY_VALUE.sub(r"\1\2***", text)


def one_line(exc: BaseException) -> str:
    msg = " ".join(str(exc).split()) or type(exc).__name__
    return scrub(msg[:500])


def split_url(uri: str) -> tuple[str, str]:
    """(scheme, "bucket/key") of an object URL; InvalidInputError for unusable names."""
    scheme = scheme_of(uri)
    if scheme is None:
        raise InvalidInputError(f"Not an object URL: {scrub(uri)!r}.")
    rest = uri.split("://", 1)[1]
    if scheme in ("http", "https"):
        return scheme, rest
    bucket, _, key = rest.partition("/")
    if not bucket or "\x00" in rest or len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise InvalidInputError(f"Unusable object URL {scrub(uri)!r} (no bucket, a NUL, or a key over 1024 bytes).")
    if any(seg in (".", "..") for seg in key.split("/")) or bucket in (".", ".."):
        # Stores and HTTP layers may resolve these segments to another object.
        raise InvalidInputError(f"Unusable object URL {scrub(uri)!r} (a '.' or '..' segment).")
    return scheme, rest


def filesystem(scheme: str, options: ObjectOptions) -> Any:
    """The fsspec filesystem for ``scheme`` (fsspec caches instances by their arguments)."""
    protocol, package, extra = SCHEMES[scheme]
    try:
        import fsspec

        if protocol == "s3":
            import s3fs  # noqa: F401  (the install message below names the extra)

            fs = fsspec.filesystem(
                "s3",
                endpoint_url=options.endpoint_url,
                use_listings_cache=False,  # a re-run must see the bucket as it is now; and no memory held
                config_kwargs={
                    "connect_timeout": options.timeout_s,
                    "read_timeout": options.timeout_s,
                    "retries": {"max_attempts": 1},  # one layer of retries: with_retries, below
                },
            )
            fs.retries = 1  # s3fs's own retry loop (5 by default) would multiply ours
            return fs
        if protocol in ("http", "https"):
            return fsspec.filesystem(protocol, client_kwargs={"timeout": _aiohttp_timeout(options.timeout_s)})
        return fsspec.filesystem(protocol)
    except ImportError as exc:
        raise MissingDependencyError(f"Reading {scheme}:// URLs", package, extra) from exc


def _aiohttp_timeout(seconds: float) -> Any:
    import aiohttp

    return aiohttp.ClientTimeout(total=None, sock_connect=seconds, sock_read=seconds)


T = TypeVar("T")
# Not worth retrying: the object is gone, forbidden, or the name is bad.
_PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, InvalidInputError)


def with_retries(call: Callable[[], T], options: ObjectOptions) -> T:
    """``call()``, retried with exponential back-off on transient errors."""
    delay = 0.5
    for attempt in range(options.retries + 1):
        try:
            return call()
        except _PERMANENT:
            raise
        except Exception:  # every store client raises its own types
            if attempt == options.retries:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 8.0)
    raise AssertionError("unreachable")


def failure_reason(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return "missing"
    if isinstance(exc, PermissionError):
        return "forbidden"
    name = type(exc).__name__.lower()
    if "timeout" in name or "timeout" in str(exc).lower():
        return "timeout"
    return "unreachable"


def read_object(uri: str, max_bytes: int, options: ObjectOptions | None = None, size: int | None = None) -> bytes:
    """The bytes of the object at ``uri`` (at most ``max_bytes``). Raises ImageDecodeError with
    reason ``missing``, ``forbidden``, ``timeout``, ``unreachable`` or ``too_large_file``."""
    options = options or ObjectOptions.from_env()
    try:
        scheme, path = split_url(uri)
    except InvalidInputError as exc:
        raise ImageDecodeError(str(exc), "bad_key") from None
    fs = filesystem(scheme, options)
    if size is not None and size > max_bytes:
        raise ImageDecodeError(f"object is {size} bytes, over the {max_bytes}-byte limit", "too_large_file")
    try:
        data: bytes = with_retries(lambda: fs.cat_file(path, start=0, end=max_bytes + 1), options)
    except ImageDecodeError:
        raise
    except Exception as exc:  # noqa: BLE001 - mapped to a per-item failure with its reason
        reason = failure_reason(exc)
        raise ImageDecodeError(f"{reason}: {one_line(exc)}", reason) from None
    if len(data) > max_bytes:
        raise ImageDecodeError(f"object is over the {max_bytes}-byte limit", "too_large_file")
    return data


def open_object(uri: str, options: ObjectOptions | None = None, block_size: int = 8 << 20) -> IO[bytes]:
    """A read-only, streaming file object over the object at ``uri`` (read-ahead blocks)."""
    options = options or ObjectOptions.from_env()
    scheme, path = split_url(uri)
    fs = filesystem(scheme, options)
    fh: IO[bytes] = with_retries(lambda: fs.open(path, "rb", block_size=block_size, cache_type="readahead"), options)
    return fh


def _member_unavailable(why: str) -> SourceUnavailableError:
    return SourceUnavailableError(f"The stored original {why}.")


def _read_remote_member(shard: str, member: str, max_bytes: int, options: ObjectOptions) -> bytes:
    try:
        with open_object(shard, options, block_size=1 << 20) as fh, tarfile.open(fileobj=fh, mode="r:*") as tar:
            return member_bytes(
                tar, member, max_bytes, lambda why: SourceUnavailableError(f"The stored original {why}.")
            )
    except (SourceUnavailableError, ImageDecodeError):
        raise
    except Exception as exc:  # noqa: BLE001 - any store error: the original cannot be served
        raise SourceUnavailableError(f"The stored original cannot be read ({failure_reason(exc)}).") from None


def read_remote(uri: str, max_bytes: int, options: ObjectOptions | None = None) -> bytes:
    """The bytes a remote uri names: an object, or a member of an object tar shard."""
    options = options or ObjectOptions.from_env()
    shard, sep, member = uri.rpartition("#")
    if sep and member and shard.lower().endswith(TAR_SUFFIXES):
        return _read_remote_member(shard, member, max_bytes, options)
    try:
        return read_object(uri, max_bytes, options)
    except ImageDecodeError as exc:
        if exc.reason == "too_large_file":
            raise
        raise SourceUnavailableError(f"The stored original cannot be read ({exc.reason}).") from None
    except InvalidInputError:
        raise SourceUnavailableError("The stored original has an unusable object URL.") from None


def read_remote_verified(uri: str, sha256: str | None, max_bytes: int, options: ObjectOptions | None = None) -> bytes:
    """``read_remote``, checked against the record's ``sha256`` (SourceChangedError if it differs)."""
    if not sha256:
        raise SourceUnavailableError("The stored original has no recorded sha256 to check it against.")
    if not is_object_url(uri):  # http(s) URLs are never fetched as originals
        raise SourceUnavailableError("The stored original is not in an object store this server reads.")
    data = read_remote(uri, max_bytes, options)
    if hashlib.sha256(data).hexdigest() != sha256:
        raise SourceChangedError("The stored original has changed since indexing; re-index it to serve it again.")
    return data
