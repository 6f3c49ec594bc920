"""What an extraction has to do for one modality, and the part of it both engines (serial, Ray) share.

`plan_items` names every hashed file (by stem or content hash), settles id collisions and what the store already
holds, and lists the files to encode and those whose features can be copied from a stored twin; `store_copies`
stores the copies once the encoded items are in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mgsv.errors import MgsvError, OptionError
from mgsv.extract.hashing import HASH_ID_LENGTH, ContentIndex
from mgsv.features.store import FeatureStore, FeatureTable
from mgsv.files.hashing import content_hash
from mgsv.files.problems import Problem, problem_for

Progress = Callable[[str, int, int], None]  # (modality, done, total)
IdScheme = Literal["stem", "hash"]


@dataclass
class ModalityReport:
    """What one modality's run did."""

    found: int = 0  # files found
    encoded: int = 0  # decoded and encoded by this run
    already_stored: int = 0  # skipped: the store already holds this id with this content
    copied: int = 0  # not encoded: the same content was stored under another id, its features were copied
    duplicates: int = 0  # extra copies of a file in the inputs (same id and content), handled once
    failures: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "found": self.found,
            "encoded": self.encoded,
            "already_stored": self.already_stored,
            "copied": self.copied,
            "duplicates": self.duplicates,
            "failures": [p.to_dict() for p in self.failures],
            "warnings": [p.to_dict() for p in self.warnings],
        }


@dataclass
class Planned:
    """A file to encode (or to copy the stored features of `copy_from`, a stored id with the same content)."""

    path: Path
    item_id: str
    digest: str
    copy_from: str | None = None  # an id whose stored features have the same content


def item_id_for(path: Path, digest: str, scheme: IdScheme) -> str:
    """The store id of a file: its stem, or the start of its content hash."""
    if scheme == "stem":
        return path.stem
    if scheme == "hash":
        return digest[:HASH_ID_LENGTH]
    raise OptionError("ids", f"must be 'stem' or 'hash', got {scheme!r}")


def hash_files(paths: list[Path], report: ModalityReport) -> list[tuple[Path, str]]:
    """(path, content hash) of each readable file; unreadable ones are reported as failures."""
    hashed = []
    for path in paths:
        try:
            hashed.append((path, content_hash(path)))
        except MgsvError as exc:
            report.failures.append(problem_for(path, exc))
    return hashed


def plan_items(
    hashed: list[tuple[Path, str]],
    table: FeatureTable,
    index: ContentIndex,
    modality: str,
    ids: IdScheme,
    report: ModalityReport,
) -> list[Planned]:
    """Name every hashed file, settle collisions and what is already stored; return what needs work."""
    by_id: dict[str, list[tuple[Path, str]]] = {}
    for path, digest in hashed:
        by_id.setdefault(item_id_for(path, digest, ids), []).append((path, digest))

    todo: list[Planned] = []
    first_with_hash: dict[str, str] = {}  # digest -> id planned for encoding in this run
    for item_id, files in by_id.items():
        digests = {digest for _, digest in files}
        if len(digests) > 1:
            names = ", ".join(str(p) for p, _ in files)
            for path, _ in files:
                report.failures.append(
                    Problem(str(path), f"id {item_id!r} is shared by files with different content: {names}")
                )
            continue
        path, digest = files[0]
        report.duplicates += len(files) - 1
        if item_id in table:
            recorded = index.hash_of(modality, item_id)
            if recorded is None or recorded == digest:
                if recorded is None:
                    index.record(modality, item_id, digest, path.resolve())  # adopt what an earlier (killed) run stored
                report.already_stored += 1
            else:
                report.failures.append(
                    Problem(
                        str(path),
                        f"id {item_id!r} is already stored with other content (from "
                        f"{index.path_of(modality, item_id)}); rename the file or extract with `ids` hash",
                    )
                )
            continue
        stored_twin = index.id_with_hash(modality, digest)
        if stored_twin is not None and stored_twin in table:
            todo.append(Planned(path, item_id, digest, copy_from=stored_twin))
        elif digest in first_with_hash:
            todo.append(Planned(path, item_id, digest, copy_from=first_with_hash[digest]))
        else:
            first_with_hash[digest] = item_id
            todo.append(Planned(path, item_id, digest))
    return todo


def store_copies(
    store: FeatureStore,
    index: ContentIndex,
    modality: str,
    copies: list[Planned],
    report: ModalityReport,
    progress: Progress | None = None,
    done: int = 0,
    total: int = 0,
) -> None:
    """Store the features of files whose content is already stored under another id (copied, not encoded).

    `progress(modality, done, total)` is called after each copy, counting on from `done` files already handled.
    """
    if not copies:
        return
    with store.writer(modality, flush_every=1 << 30) as writer:
        table = store.modality(modality)
        stored = []
        for planned in copies:
            if planned.copy_from in table:
                tokens, mask = table.get(planned.copy_from)
                writer.add(planned.item_id, tokens.numpy(), mask.numpy())
                stored.append(planned)
                report.copied += 1
            else:
                report.failures.append(
                    Problem(str(planned.path), f"same content as the file of id {planned.copy_from!r}, which failed")
                )
            done += 1
            if progress:
                progress(modality, done, total)
        writer.flush()
    for planned in stored:
        index.record(modality, planned.item_id, planned.digest, planned.path.resolve())
    index.save()
