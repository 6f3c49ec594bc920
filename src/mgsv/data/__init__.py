"""Datasets: MGSV-EC annotation CSVs, predictions JSONL, split re-drawing, training batches, synthetic data."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


@contextmanager
def atomic_text_writer(path: Path, newline: str | None = None) -> Iterator[IO[str]]:
    """Open a temporary file beside `path` for writing; on success fsync it and rename it over `path`.

    A crash or an exception leaves `path` as it was (the temporary file is removed). The temporary file is created
    with `open(..., "x")` rather than `tempfile.mkstemp` so that it gets the usual umask permissions, not 0600.
    """
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(temporary, "x", encoding="utf-8", newline=newline) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
