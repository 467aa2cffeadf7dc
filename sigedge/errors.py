"""One exception hierarchy for sigedge.

Every error carries the process exit code the CLI uses for it, so callers of the
Python API and of the command line see the same taxonomy.
"""

from __future__ import annotations

__all__ = [
    "SigedgeError",
    "UsageError",
    "MissingCleanerError",
    "InvalidImageError",
    "NoSignatureError",
    "ModelError",
    "GalleryError",
    "EXIT_CODES",
]


class SigedgeError(Exception):
    """Base class of every error sigedge raises on purpose."""

    exit_code: int = 1


class UsageError(SigedgeError):
    """The caller asked for something that does not make sense (bad option, missing extra)."""

    exit_code = 2


class MissingCleanerError(UsageError):
    """Learned cleaning was asked of a model bundle that has no learned cleaner."""


class InvalidImageError(SigedgeError):
    """The input could not be read as an image (missing, empty, truncated, too large...)."""

    exit_code = 3


class NoSignatureError(SigedgeError):
    """The image was read but holds no ink that could be a signature."""

    exit_code = 4


class ModelError(SigedgeError):
    """A model bundle is missing, corrupt, or does not match its manifest."""

    exit_code = 5


class GalleryError(SigedgeError):
    """A gallery could not be opened, read or changed."""

    exit_code = 6


#: Exit codes of the ``sigedge`` command, documented in the README.
EXIT_CODES: dict[int, str] = {
    0: "success (for verify: the query was accepted as genuine)",
    1: "verify ran but rejected the query (not genuine)",
    2: "usage error",
    3: "unreadable or invalid input image",
    4: "no signature found in the image",
    5: "model bundle error",
    6: "gallery error",
    7: "internal error (a bug: please report it)",
}
