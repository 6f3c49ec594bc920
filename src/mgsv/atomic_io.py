"""Crash-safe file writing: a file is either its old content or its complete new content, never half of either.

The recipe: write under a temporary name in the target's folder, fsync the file, rename it over the target
(`os.replace` is atomic within one filesystem), then fsync the folder so that the rename itself survives a power
loss. If anything fails before the rename, the temporary file is removed and the target is left as it was.

    with atomic_writer(path) as handle:          # a text (or "wb": binary) file object
        handle.write(...)
    with atomic_path(path) as tmp:               # for code that writes by file name (a library's save, a muxer)
        faiss.write_index(index, str(tmp))
    write_json_atomic(path, data)

Temporary names are `.tmp-<32 hex digits>.<target name>` (`temp_path_for`): hidden, unique per call, in the same
folder, and ending in the target's own name so that tools which pick a format from the suffix (ffmpeg, numpy)
still see it. A process killed mid-write (SIGKILL, power loss) can leave such a file behind; the feature store,
the track index and the Ray part folder sweep names starting with `TEMP_PREFIX`, so keep the prefix.

Writes that commit several files at once (a store shard and then its manifest, a segment or checkpoint folder
renamed into place) use `temp_path_for`, `fsync_file` and `fsync_directory` directly; a folder assembled and then
renamed into place starts as `make_temp_dir(target)`.

Permissions: what is written here gets the permissions the umask gives any new file or folder (0644 / 0755 under
the usual 0022), so that a library or a checkpoint an admin builds can be read by the service account that serves
it. `tempfile.mkstemp` / `mkdtemp` would make them owner-only (0600 / 0700) and the rename would keep that; they
are for private scratch space, not for anything published. Files that a library writes owner-only (safetensors'
`save_file` makes 0600 files) get the umask's permissions with `apply_umask`.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import IO, Any, BinaryIO, Literal, TextIO, overload

__all__ = [
    "TEMP_PREFIX",
    "apply_umask",
    "atomic_path",
    "atomic_writer",
    "current_umask",
    "fsync_directory",
    "fsync_file",
    "make_temp_dir",
    "temp_path_for",
    "write_json_atomic",
]

TEMP_PREFIX = ".tmp-"
"""Every temporary name made here starts with this; sweeps of leftovers of killed writers match on it."""


def temp_path_for(path: str | os.PathLike[str]) -> Path:
    """A fresh temporary name beside `path`: `<folder>/.tmp-<32 hex digits>.<name of path>` (nothing is created)."""
    path = Path(path)
    return path.parent / f"{TEMP_PREFIX}{uuid.uuid4().hex}.{path.name}"


def make_temp_dir(path: str | os.PathLike[str]) -> Path:
    """Create an empty folder beside `path` (named by `temp_path_for`) to assemble a folder that replaces `path`.

    Unlike `tempfile.mkdtemp` (always 0700) the folder gets the umask's permissions, and keeps them when renamed.
    """
    folder = temp_path_for(path)
    folder.mkdir()
    return folder


def current_umask() -> int:
    """This process's umask, read without changing it (Linux reports it in /proc/self/status).

    Elsewhere it is read the only other way, by setting it and setting it back, which briefly affects files other
    threads create; this process's own writers call this only while publishing a folder, not while serving.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path: str | os.PathLike[str]) -> None:
    """Give `path` the permissions the umask gives a new file (0666 & ~umask) or folder (0777 & ~umask)."""
    base = 0o777 if Path(path).is_dir() else 0o666
    os.chmod(path, base & ~current_umask())


def fsync_directory(path: str | os.PathLike[str]) -> None:
    """fsync a folder, which makes the creations, renames and deletions of entries in it durable.

    A no-op where a folder cannot be opened (Windows); an error from fsync itself is raised.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: str | os.PathLike[str]) -> None:
    """fsync a file that was written and closed by other code (e.g. `np.save(path)`), so its bytes are on disk."""
    with open(path, "rb+") as handle:  # writable: Windows refuses to flush a file opened read-only
        os.fsync(handle.fileno())


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write the new file to; on success it replaces `path`.

    On leaving the block without an exception: fsync the temporary file, rename it over `path`, fsync the folder.
    On an exception: remove the temporary file (if it was created) and leave `path` as it was.
    """
    path = Path(path)
    tmp = temp_path_for(path)
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_directory(path.parent)


@contextmanager
def _atomic_writer(path: Path, mode: str, encoding: str, newline: str | None) -> Iterator[IO[Any]]:
    tmp = temp_path_for(path)
    # "x" (exclusive create) rather than tempfile.mkstemp: the file gets the usual umask permissions, not 0600.
    binary = mode == "wb"
    try:
        with open(
            tmp, "xb" if binary else "x", encoding=None if binary else encoding, newline=None if binary else newline
        ) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_directory(path.parent)


@overload
def atomic_writer(
    path: str | os.PathLike[str],
    mode: Literal["w"] = "w",
    *,
    encoding: str = "utf-8",
    newline: str | None = None,
) -> AbstractContextManager[TextIO]: ...


@overload
def atomic_writer(path: str | os.PathLike[str], mode: Literal["wb"]) -> AbstractContextManager[BinaryIO]: ...


def atomic_writer(
    path: str | os.PathLike[str],
    mode: Literal["w", "wb"] = "w",
    *,
    encoding: str = "utf-8",
    newline: str | None = None,
) -> AbstractContextManager[IO[Any]]:
    """Open a new file that replaces `path` atomically when the `with` block ends without an exception.

    `mode` is "w" (text, `encoding` and `newline` as for `open`) or "wb" (binary). The file object writes to a
    temporary file beside `path`; on success it is flushed, fsynced, renamed over `path` and the folder fsynced.
    On an exception the temporary file is removed and `path` keeps its old content (or stays absent).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_writer mode must be 'w' or 'wb', got {mode!r}")
    return _atomic_writer(Path(path), mode, encoding, newline)


def write_json_atomic(
    path: str | os.PathLike[str], data: Any, *, indent: int | None = 1, sort_keys: bool = False
) -> None:
    """Write `data` as JSON (UTF-8, `indent`, a final newline) to `path` atomically (see `atomic_writer`)."""
    with atomic_writer(path) as handle:
        json.dump(data, handle, indent=indent, sort_keys=sort_keys)
        handle.write("\n")
