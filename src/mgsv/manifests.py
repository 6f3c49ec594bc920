"""Versioned JSON descriptions of what mgsv writes on disk: one reader and one check for all of them.

Every folder mgsv creates (a feature store, a music library, a track index, a checkpoint) carries a small JSON
object with a `format` name and an integer `format_version`. A reader must refuse another kind of file, a broken
one, and one written by a newer mgsv (whose layout it cannot know), each with a message naming the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mgsv.errors import InputError


def check_format(data: Any, where: str | os.PathLike[str], *, format_name: str, version: int, what: str) -> int:
    """Check a description's `format` and `format_version` (1 .. `version`); returns the version found.

    `what` names the kind of file in messages ("feature store manifest", "checkpoint config", ...).
    """
    if not isinstance(data, dict) or data.get("format") != format_name:
        raise InputError(where, f"not {_article(what)} {what} (format is not {format_name!r})")
    found = data.get("format_version")
    if isinstance(found, bool) or not isinstance(found, int) or found < 1:
        raise InputError(where, f"invalid format_version {found!r} in the {what}")
    if found > version:
        raise InputError(
            where,
            f"written by a newer mgsv ({what} format_version {found}; this mgsv reads up to {version}): upgrade mgsv "
            "to use it",
        )
    return found


def read_versioned_json(
    path: str | os.PathLike[str], *, format_name: str, version: int, what: str
) -> dict[str, Any]:
    """Read a JSON description and `check_format` it; a missing, unreadable or invalid file raises InputError."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputError(path, f"missing: no {what} here") from exc
    except PermissionError as exc:
        raise InputError(path, f"cannot read the {what}: permission denied") from exc
    except (OSError, ValueError) as exc:
        raise InputError(path, f"cannot read the {what}: {exc}") from exc
    check_format(data, path, format_name=format_name, version=version, what=what)
    return data


def _article(noun: str) -> str:
    """ "a" or "an" before `noun` ("an mgsv checkpoint config": the letters m-g-s-v are spoken)."""
    return "an" if noun[:1].lower() in "aeio" or noun.startswith("mgsv") else "a"
