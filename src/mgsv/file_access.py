"""What the operating system says about a path the user gave, as one message naming the path.

Batch commands meet paths they cannot use: a symbolic link that leads back to itself, a link to nothing, a file the
user may not read, a folder they may not list. Python reports these as a `RuntimeError` (a link loop, before 3.13),
a `PermissionError`, or, through some libraries (safetensors), as "No such file or directory" for a file that
exists. Everything here turns them into an `InputError` with the same words everywhere, so that a batch can
record the one bad path and go on (docs/architecture.md, "Errors").
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from mgsv.errors import InputError

__all__ = ["check_readable", "os_error_reason", "resolve_existing"]

_REASONS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ELOOP: "symbolic link loop (following the links leads back to them)",
    errno.ENOENT: "not found",
    errno.ENOTDIR: "not found (a part of the path is not a folder)",
    errno.ENAMETOOLONG: "the path is too long",
    errno.EISDIR: "is a folder, not a file",
    errno.EIO: "input/output error (a failing disk or network share?)",
}


def os_error_reason(exc: OSError) -> str:
    """The problem an OSError describes, in the words every command uses (without the path: callers name it)."""
    return _REASONS.get(exc.errno or 0) or exc.strerror or str(exc)


def resolve_existing(path: str | os.PathLike[str]) -> Path:
    """The real path of `path`, every symbolic link followed; InputError naming `path` if it cannot be resolved.

    Refused: a link loop, a link whose target does not exist, a path through a folder the user may not enter.
    """
    try:
        return Path(os.path.realpath(path, strict=True))
    except OSError as exc:
        if exc.errno == errno.ENOENT and os.path.islink(path):
            try:
                target = os.readlink(path)
            except OSError:
                target = "?"
            raise InputError(path, f"not found: a broken symbolic link (to {target}, which does not exist)") from exc
        raise InputError(path, os_error_reason(exc)) from exc


def check_readable(path: str | os.PathLike[str], what: str = "file") -> Path:
    """Return `path` if it is a regular file this process may open for reading; else InputError naming it.

    The file is opened (and closed at once) rather than checked with `os.access`: opening is what decides, whatever
    the ACLs, capabilities or file system say. A FIFO or a device is refused before it is opened (reading one could
    block forever).
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if exc.errno == errno.ENOENT and os.path.islink(path):
            resolve_existing(path)  # raises, naming the missing target
        raise InputError(path, os_error_reason(exc)) from exc
    if stat.S_ISDIR(mode):
        raise InputError(path, f"is a folder, not a {what}")
    if not stat.S_ISREG(mode):
        raise InputError(path, f"is not a regular file (a device, socket or pipe), not a {what}")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise InputError(path, f"{os_error_reason(exc)}: the {what} cannot be read") from exc
    os.close(fd)
    return path
