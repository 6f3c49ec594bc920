"""Content hashes of files: what makes a renamed or copied file the same input (extraction and the library skip it)."""

from __future__ import annotations

import hashlib
import os

from mgsv.errors import InputError


def content_hash(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes as 64 hex digits; an unreadable file raises InputError naming it."""
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as exc:
        raise InputError(path, f"cannot read the file: {exc.strerror or exc}") from exc
