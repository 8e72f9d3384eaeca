"""facetrail's exceptions: every error facetrail raises on purpose is one of these.

    FacetrailError
    ├── ConfigError              bad settings, unknown back end, missing optional extra
    │   └── MissingExtraError    an optional dependency is not installed
    ├── AuthError                no credentials, or an unknown, revoked or expired token
    ├── PolicyError              an accountability rule was not met (no lawful basis, no case...)
    │   ├── ForbiddenError       the caller's role lacks the right
    │   │   ├── CsrfError        a cookie-authenticated change without its CSRF token
    │   │   └── OwnSearchReviewError   a review of one's own search (two-person rule)
    │   └── RateLimitError       too many searches in the current window
    ├── NotFoundError            a named source, face or image does not exist
    ├── ConflictError            something with that name already exists, or the state forbids it
    │   └── EmptyGalleryError    a search of a gallery with no face to return
    ├── InputError               an item could not be ingested or a probe could not be used
    │   ├── ImageError           not an image, truncated, corrupt, zero bytes
    │   │   └── ImageTooLargeError   over the byte, pixel or dimension limits
    │   │       └── UploadTooLargeError  an upload over the byte limit, refused unread
    │   ├── ArchiveError         a broken or unreadable WARC/WACZ record or file
    │   ├── ManifestError        a manifest row or file that cannot be used
    │   ├── UnreadableError      an image's bytes cannot be read where they lie
    │   │   └── OutsideSourceError   a path outside its source's folder, refused unread
    │   └── NoFaceError          a probe in which no face was found
    ├── StoreError               the store is unusable (schema too new, corrupt)
    │   └── StoreUnavailableError    it cannot be opened, read or written (permissions, a
    │                                read-only or full disk, a lock, an unreachable server)
    └── WorkerLost               a worker died running a task (killed, out of memory, a crash)

`code` is a stable, machine-readable name for each class; the CLI prints it with `--json`
and the HTTP layer maps it to a status in one place.
"""

from __future__ import annotations

import math


class FacetrailError(Exception):
    code = "facetrail_error"


class ConfigError(FacetrailError):
    code = "config_error"


class MissingExtraError(ConfigError):
    code = "missing_extra"

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(
            f"{module} is not installed; install it with: pip install 'facetrail[{extra}]'"
        )


class PolicyError(FacetrailError):
    code = "policy_error"


class NotFoundError(FacetrailError):
    code = "not_found"


class ConflictError(FacetrailError):
    code = "conflict"


class EmptyGalleryError(ConflictError):
    """Nothing to search: no face is indexed, or none the organisation may see. Said plainly,
    so that it never reads as "nobody matched"."""

    code = "empty_gallery"


class InputError(FacetrailError):
    code = "input_error"


class ImageError(InputError):
    code = "bad_image"


class ImageTooLargeError(ImageError):
    code = "image_too_large"


class ArchiveError(InputError):
    code = "bad_archive"


class ManifestError(InputError):
    code = "bad_manifest"


class UnreadableError(InputError):
    """An image's bytes cannot be read where they lie (a worker reading a file or record)."""

    code = "unreadable"


class OutsideSourceError(UnreadableError):
    """A path that lies outside its source's folder once its links are resolved (a link out
    of a folder, a manifest row naming ``/etc/shadow``): refused, never opened
    (``facetrail.sources.confine``)."""

    code = "outside_source"


class NoFaceError(InputError):
    code = "no_face"


class StoreError(FacetrailError):
    code = "store_error"


class StoreUnavailableError(StoreError):
    """The environment keeps the store from being opened, read or written: the message says
    what to check."""

    code = "store_unavailable"


class Interrupted(FacetrailError):
    """A run stopped by the user (Ctrl-C): what it finished is kept, and running it again
    continues where it stopped."""

    code = "interrupted"


class WorkerLost(FacetrailError):
    """The worker running a task died (killed, out of memory, a crash in native code): the
    task's outcome is unknown, and the executor that ran it is unusable."""

    code = "worker_lost"


class AuthError(FacetrailError):
    """No credentials, or a token or session that is unknown, revoked or expired."""

    code = "unauthorized"


class ForbiddenError(PolicyError):
    """Valid credentials whose role lacks the right."""

    code = "forbidden"


class CsrfError(ForbiddenError):
    code = "csrf_failed"


class OwnSearchReviewError(ForbiddenError):
    """The two-person rule: nobody reviews the candidates of their own search."""

    code = "own_search_review"


class RateLimitError(PolicyError):
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    @classmethod
    def after(cls, wait: float, why: str) -> RateLimitError:
        """Refused for ``why``, until ``wait`` seconds have passed (at least one is asked)."""
        seconds = max(1, math.ceil(wait))
        return cls(f"{why}; try again in {seconds} s", retry_after=seconds)


class UploadTooLargeError(ImageTooLargeError):
    """An upload over the byte limit, refused before it is decoded."""

    code = "upload_too_large"
