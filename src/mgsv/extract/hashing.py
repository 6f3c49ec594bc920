"""The small index that remembers which stored id holds which content (hashes: `mgsv.files.hashing`).

The index is what makes extraction skip work by content rather than by name: a file renamed or copied has the
same hash, so its features are not computed twice. It is a JSON file written atomically (temporary file in the
same folder, fsync, rename) after each published shard of the store, so it never names an item the store does
not hold; the converse can happen (a run killed between publishing a shard and saving the index) and is handled
by the extractor (an id already in the store whose content was not recorded is adopted as it is).
"""

from __future__ import annotations

import os
from pathlib import Path

from mgsv.atomic_io import write_json_atomic
from mgsv.errors import InputError
from mgsv.manifests import read_versioned_json

INDEX_FORMAT = "mgsv-content-index"
INDEX_VERSION = 1
HASH_ID_LENGTH = 16  # hex digits of the hash used as an item id with `--ids hash` (64 bits: no collisions in practice)


class ContentIndex:
    """id -> (content hash, source path) for each modality of a feature store, kept in one JSON file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._ids: dict[str, dict[str, dict[str, str]]] = {}
        self._by_hash: dict[str, dict[str, str]] = {}
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        data = read_versioned_json(self.path, format_name=INDEX_FORMAT, version=INDEX_VERSION, what="content index")
        modalities = data.get("modalities")
        if not isinstance(modalities, dict):
            raise InputError(self.path, "malformed content index: no 'modalities' object")
        for modality, entries in modalities.items():
            if not isinstance(entries, dict) or not all(
                isinstance(v, dict) and isinstance(v.get("hash"), str) for v in entries.values()
            ):
                raise InputError(self.path, f"malformed content index entries for {modality!r}")
            self._ids[modality] = {
                key: {"hash": v["hash"], "path": str(v.get("path", ""))} for key, v in entries.items()
            }
        self._by_hash = {
            modality: {entry["hash"]: item_id for item_id, entry in sorted(entries.items())}
            for modality, entries in self._ids.items()
        }

    def hash_of(self, modality: str, item_id: str) -> str | None:
        """The content hash recorded for a stored id, or None."""
        entry = self._ids.get(modality, {}).get(item_id)
        return entry["hash"] if entry else None

    def path_of(self, modality: str, item_id: str) -> str | None:
        """The source path recorded for a stored id, or None."""
        entry = self._ids.get(modality, {}).get(item_id)
        return entry["path"] if entry else None

    def id_with_hash(self, modality: str, digest: str) -> str | None:
        """A stored id whose content has this hash, or None."""
        return self._by_hash.get(modality, {}).get(digest)

    def record(self, modality: str, item_id: str, digest: str, path: str | os.PathLike[str]) -> None:
        """Remember (in memory) that `item_id` holds the content `digest` read from `path`; `save` writes it."""
        self._ids.setdefault(modality, {})[item_id] = {"hash": digest, "path": str(path)}
        self._by_hash.setdefault(modality, {}).setdefault(digest, item_id)

    def save(self) -> None:
        """Write the index atomically."""
        data = {"format": INDEX_FORMAT, "format_version": INDEX_VERSION, "modalities": self._ids}
        write_json_atomic(self.path, data, sort_keys=True)
