"""Grounded videos kept for a while so that a moment can be rendered without uploading the video again.

A grounding response carries an `upload_id` (128 random bits, the only handle to the file; it never names a
path). The video stays in the server's private folder for `ttl` seconds, and all kept videos together stay under
`max_bytes`: the oldest are dropped first. A render takes a hard link of the file into its own folder, so that
dropping a kept video while it is being rendered is harmless.

The model's encoding of a kept video (`mgsv.search.grounder.EncodedVideo`, per `window_start`) is kept beside it, so
that grounding it again (POST /v1/reground) or asking for more moments (POST /v1/alternatives) skips decoding and
CLIP. An encoding is small (MaDe, d = 256: about 100 KB for 50 frames) and only ever read; the most recently used
`max_encodings` are kept, and a video's go with it. The server has one model for its whole life, so an encoding
never outlives the model that made it.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mgsv.serve.http_errors import ApiError
from mgsv.serve.media_checks import VideoInfo

MAX_ENCODINGS = 256  # kept encodings of kept videos (about 25 MB for MaDe at d = 256)


@dataclass(frozen=True)
class KeptUpload:
    """One kept video."""

    upload_id: str
    path: Path
    size: int
    info: VideoInfo
    expires_at: float  # time.monotonic()


class KeptUploads:
    """The kept videos (see the module docstring); safe to use from several threads."""

    def __init__(self, folder: Path, ttl: float, max_bytes: int, max_encodings: int = MAX_ENCODINGS) -> None:
        self.folder = folder
        self.ttl = ttl
        self.max_bytes = max_bytes
        self.max_encodings = max_encodings
        self._lock = threading.Lock()
        self._items: OrderedDict[str, KeptUpload] = OrderedDict()  # oldest first
        self._encodings: OrderedDict[tuple[str, float], Any] = OrderedDict()  # least recently used first
        self._bytes = 0

    def keep(self, path: Path, info: VideoInfo) -> KeptUpload:
        """Move `path` (in the same file system) into the kept folder; returns its record."""
        upload_id = secrets.token_urlsafe(16)
        target = self.folder / f"{upload_id}.video"
        size = path.stat().st_size
        os.replace(path, target)
        item = KeptUpload(upload_id, target, size, info, time.monotonic() + self.ttl)
        with self._lock:
            self._items[upload_id] = item
            self._bytes += size
            dropped = self._drop_locked(time.monotonic())
        self._delete(dropped)
        return item

    def link_into(self, upload_id: str, folder: Path) -> KeptUpload:
        """Hard-link a kept video into `folder` (as `video`); ApiError 404 if unknown or expired."""
        with self._lock:
            dropped = self._drop_locked(time.monotonic())
            item = self._items.get(upload_id)
            target = folder / "video"
            if item is not None:
                os.link(item.path, target)  # under the lock: a concurrent drop cannot delete it first
        self._delete(dropped)
        if item is None:
            raise self._unknown(upload_id)
        return KeptUpload(item.upload_id, target, item.size, item.info, item.expires_at)

    def _unknown(self, upload_id: str) -> ApiError:
        return ApiError(
            404,
            "unknown_upload",
            f"no uploaded video with id {upload_id!r}: it expired (videos are kept {self.ttl / 60:g} min) or "
            "never existed; ground the video again",
        )

    def get(self, upload_id: str) -> KeptUpload:
        """The record of a kept video; ApiError 404 if unknown or expired."""
        with self._lock:
            dropped = self._drop_locked(time.monotonic())
            item = self._items.get(upload_id)
        self._delete(dropped)
        if item is None:
            raise self._unknown(upload_id)
        return item

    def remember(self, upload_id: str, window_start: float, encoding: Any) -> None:
        """Keep the model's encoding of a kept video (read from `window_start`), while the video is kept."""
        with self._lock:
            if upload_id not in self._items:
                return  # dropped meanwhile
            self._encodings[(upload_id, float(window_start))] = encoding
            self._encodings.move_to_end((upload_id, float(window_start)))
            while len(self._encodings) > self.max_encodings:
                self._encodings.popitem(last=False)

    def recall(self, upload_id: str, window_start: float) -> Any | None:
        """The kept encoding of a kept video read from `window_start`, or None."""
        key = (upload_id, float(window_start))
        with self._lock:
            encoding = self._encodings.get(key)
            if encoding is not None:
                self._encodings.move_to_end(key)
            return encoding

    def expire(self) -> int:
        """Drop expired videos now; returns how many."""
        with self._lock:
            dropped = self._drop_locked(time.monotonic())
        self._delete(dropped)
        return len(dropped)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"count": len(self._items), "bytes": self._bytes, "encodings": len(self._encodings)}

    def _drop_locked(self, now: float) -> list[Path]:
        dropped = []
        while self._items:
            oldest = next(iter(self._items.values()))
            if oldest.expires_at > now and self._bytes <= self.max_bytes:
                break
            del self._items[oldest.upload_id]
            self._bytes -= oldest.size
            dropped.append(oldest.path)
            for key in [key for key in self._encodings if key[0] == oldest.upload_id]:
                del self._encodings[key]
        return dropped

    @staticmethod
    def _delete(paths: list[Path]) -> None:
        for path in paths:
            path.unlink(missing_ok=True)
