"""Where a training run keeps its checkpoints, so that a run folder given as a checkpoint gets a useful answer.

`mgsv train --out RUN` writes `RUN/checkpoints/<name>/` (best_mor1_iou07, last, ...; README.md). Users
naturally pass `RUN` itself, or `RUN/checkpoints`, where a checkpoint folder is expected.
"""

from __future__ import annotations

from pathlib import Path

RUN_CHECKPOINTS_DIR = "checkpoints"


def checkpoints_in_run(folder: Path, config_name: str) -> tuple[Path, list[str]] | None:
    """(the folder holding them, checkpoint names) if `folder` is a run folder or its checkpoints folder; else None."""
    for holder in (folder / RUN_CHECKPOINTS_DIR, folder):
        try:
            names = sorted(p.name for p in holder.iterdir() if (p / config_name).is_file())
        except OSError:  # not a folder, or one that may not be listed: no hint to give
            continue
        if names:
            return holder, names
    return None
