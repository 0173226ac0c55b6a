"""The domain-error hierarchy.

Code inside the packages raises these; the edges map them: the CLI prints ``str(err)`` and
exits with ``err.exit_code``, the HTTP API answers ``err.http_status`` with a problem body.
Nothing else should need to catch broad exceptions.
"""

from __future__ import annotations


class BlipsearchError(Exception):
    """Base class: a failure the user can act on. The message says how."""

    exit_code = 1
    http_status = 500
    code = "error"


class ConfigError(BlipsearchError):
    exit_code = 2
    http_status = 500
    code = "config_error"


class InvalidInputError(BlipsearchError):
    exit_code = 2
    http_status = 422
    code = "invalid_input"


class ImageDecodeError(InvalidInputError):
    """An input is not a decodable image, is truncated, or is too large to decode safely.

    ``reason`` is a short stable code (``corrupt``, ``too_many_pixels``, …) that jobs count
    failures by; the message has the details.
    """

    code = "bad_image"

    def __init__(self, message: str, reason: str = "bad_image") -> None:
        super().__init__(message)
        self.reason = reason


class PayloadTooLargeError(InvalidInputError):
    """An upload over the configured size limit."""

    http_status = 413
    code = "payload_too_large"


class RequestTimeoutError(InvalidInputError):
    """A request body that arrived too slowly (or stalled)."""

    http_status = 408
    code = "request_timeout"


class UnsupportedMediaTypeError(InvalidInputError):
    """Not an image, or a declared type that contradicts the content."""

    http_status = 415
    code = "unsupported_media_type"


class UnauthorizedError(BlipsearchError):
    """No API key, or an unknown or revoked one."""

    exit_code = 7
    http_status = 401
    code = "unauthorized"


class ForbiddenError(BlipsearchError):
    """A valid key without the needed scope, or a path outside the allowed roots."""

    exit_code = 7
    http_status = 403
    code = "forbidden"


class OverloadedError(BlipsearchError):
    """A bounded queue is full: retry after ``retry_after`` seconds."""

    exit_code = 8
    http_status = 503
    code = "overloaded"

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class CancelledError(BlipsearchError):
    """A job was cancelled by a user; committed work is kept."""

    exit_code = 130
    http_status = 409
    code = "cancelled"


class NotFoundError(BlipsearchError):
    exit_code = 3
    http_status = 404
    code = "not_found"


class CollectionNotFoundError(NotFoundError):
    code = "collection_not_found"


class RecordNotFoundError(NotFoundError):
    code = "record_not_found"


class ConflictError(BlipsearchError):
    exit_code = 4
    http_status = 409
    code = "conflict"


class CollectionReplacedError(ConflictError):
    """The version an object was opened on was replaced by ``reembed``: reopen the collection."""

    code = "collection_replaced"


class ModelMismatchError(ConflictError):
    """A collection or index was built with another model than the one requested."""

    code = "model_mismatch"


class ModelLoadError(BlipsearchError):
    """Weights could not be found or loaded (offline, wrong path, unsupported architecture)."""

    exit_code = 5
    http_status = 503
    code = "model_unavailable"


class StorageError(BlipsearchError):
    """Records or index files on disk are missing or inconsistent."""

    exit_code = 6
    http_status = 500
    code = "storage_error"


class StorageFullError(StorageError):
    """The disk (or the database) is full: nothing partial was committed; free space and retry."""

    http_status = 507
    code = "storage_full"


_FULL_MESSAGES = ("no space left on device", "database or disk is full", "disk quota exceeded")


def is_disk_full(exc: BaseException | None) -> bool:
    """True if ``exc`` (or an exception it was raised from) says the disk or database is full:
    an OSError with ENOSPC/EDQUOT, or a library's error with the same message (pyarrow,
    sqlite3, OpenVINO)."""
    import errno

    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(m in str(exc).lower() for m in _FULL_MESSAGES):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def disk_full_error(exc: BaseException) -> StorageFullError:
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return StorageFullError(
        f"The disk or database is full ({first}); nothing partial was committed. Free space and retry."
    )


class MissingDependencyError(ConfigError):
    """An optional extra is needed for this feature."""

    code = "missing_dependency"

    def __init__(self, feature: str, package: str, extra: str) -> None:
        super().__init__(
            f"{feature} needs the optional package '{package}'. Install it with: pip install 'blipsearch[{extra}]'"
        )


class InsufficientMemoryError(ModelLoadError):
    """A checkpoint is too large for the memory free on its device (refused before loading)."""

    code = "insufficient_memory"


class NoItmModelError(InvalidInputError):
    """ITM re-ranking or confirmation was asked for, but the model has no ITM head and no ITM
    model was named (CLIP, SigLIP and ALIGN embed only)."""

    code = "no_itm_model"


class SourceUnavailableError(RecordNotFoundError):
    """A record's stored original is gone, or is no longer a regular file reached without
    symbolic links (media/safe_read.py)."""

    code = "source_unavailable"


class SourceChangedError(ConflictError):
    """A record's stored original no longer has the content (sha256) that was indexed."""

    code = "source_changed"
