"""Find the media files a command should work on: explicit files as given, folders searched recursively.

A folder contributes the files whose suffix is a known video (or audio) container; hidden files and folders
(".DS_Store", "._clip.mp4" from macOS, ".git") are skipped. A file named explicitly is always taken, whatever its
suffix, so that decoding can say what is wrong with it. Paths that do not exist, cannot be listed or resolved
(a symbolic link loop, a link to nothing), and folders that hold no file of the kind are reported as problems, not
raised: a batch goes on with the files it found, and its exit code says that some inputs failed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from mgsv.errors import InputError
from mgsv.file_access import os_error_reason, resolve_existing

VIDEO_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts", ".mts"}
)
AUDIO_SUFFIXES = frozenset(
    {".ogg", ".oga", ".opus", ".mp3", ".flac", ".wav", ".m4a", ".aac", ".wma", ".aif", ".aiff", ".mka", ".ape", ".wv"}
)

Kind = Literal["video", "music"]


@dataclass
class Discovered:
    """Files found (sorted, without repeats) and the inputs that could not be used, as (path, reason)."""

    files: list[Path] = field(default_factory=list)
    problems: list[tuple[Path, str]] = field(default_factory=list)


def suffixes_for(kind: Kind) -> frozenset[str]:
    """File suffixes a folder search picks up for `kind`."""
    if kind == "video":
        return VIDEO_SUFFIXES
    if kind == "music":
        return AUDIO_SUFFIXES
    raise ValueError(f"kind must be 'video' or 'music', got {kind!r}")


def find_media(inputs: list[Path] | tuple[Path, ...], kind: Kind) -> Discovered:
    """Expand files and folders into the media files of `kind` (see the module docstring)."""
    wanted = suffixes_for(kind)
    found = Discovered()
    seen: set[Path] = set()

    def take(path: Path) -> None:
        try:
            key = resolve_existing(path)
        except InputError as exc:
            if isinstance(exc.__cause__, FileNotFoundError):
                key = Path(os.path.abspath(path))  # a link to nothing: decoding reports it with the other files
            else:  # a link loop, a folder on the way that may not be entered: nothing could ever read it
                found.problems.append((path, exc.problem))
                return
        if key not in seen:
            seen.add(key)
            found.files.append(path)

    for given in inputs:
        path = Path(given)
        try:
            is_dir, exists = path.is_dir(), path.exists() or path.is_symlink()
        except OSError as exc:  # e.g. a folder on the way that may not be entered
            found.problems.append((path, os_error_reason(exc)))
            continue
        if is_dir:
            files, problems = _walk(path, wanted)
            for file in files:
                take(file)
            found.problems.extend(problems)
            if not files and not problems:
                found.problems.append(
                    (path, f"no {kind} files in this folder (searched for {', '.join(sorted(wanted))})")
                )
        elif exists:
            take(path)  # decoding decides whether it is usable (and reports a dangling link or a device)
        else:
            found.problems.append((path, "not found"))
    found.files.sort(key=lambda p: str(p))
    found.problems = list(dict.fromkeys(found.problems))  # a bad file named and also found in a folder: once
    return found


def _walk(folder: Path, wanted: frozenset[str]) -> tuple[list[Path], list[tuple[Path, str]]]:
    files: list[Path] = []
    problems: list[tuple[Path, str]] = []

    def on_error(error: OSError) -> None:
        problems.append((Path(error.filename or folder), f"cannot list folder: {error.strerror or error}"))

    # followlinks=False: a symlink to a parent folder would make the walk endless.
    for root, dirs, names in os.walk(folder, onerror=on_error, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if not name.startswith(".") and Path(name).suffix.lower() in wanted:
                files.append(Path(root) / name)
    return files, problems
