"""Re-draw MGSV-EC train/val/test splits from the full annotation set, as the paper's protocol does (its §3.1).

In the official val and test splits every track appears exactly once (docs/official-code.md, "Splits"), so each of val and test is
drawn as a set of distinct tracks with one random video each; the videos left over are train. Val and test share
no video, but may share tracks (the official ones share 1,893 of 2,000). The draw depends only on the seed and the
set of rows, not on their order in the input files.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np

from mgsv.atomic_io import atomic_writer
from mgsv.data.annotations import read_validated
from mgsv.errors import InputError, OptionError, OutputExistsError, ProblemsError

SPLIT_FILES = {"train": "train_data.csv", "val": "val_data.csv", "test": "test_data.csv"}


@dataclass(frozen=True)
class AnnotationSet:
    """Validated annotation rows from one or more CSVs, kept as their exact text under one header."""

    sources: tuple[Path, ...]
    header: list[str]
    rows: list[list[str]]
    video_ids: list[str]
    music_ids: list[str]


@dataclass(frozen=True)
class SplitRows:
    """Indices (into an `AnnotationSet`'s rows, ascending) of the rows of each split."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def load_annotation_set(paths: Sequence[str | PathLike[str]]) -> AnnotationSet:
    """Validate and concatenate annotation CSVs (same columns, any order; no video id in two files)."""
    if not paths:
        raise OptionError("annotations", "give at least one annotation CSV")
    header: list[str] | None = None
    rows: list[list[str]] = []
    video_ids: list[str] = []
    music_ids: list[str] = []
    origin: dict[str, str] = {}
    problems: list[str] = []
    for path in paths:
        table, columns = read_validated(path)
        if header is None:
            header = table.header
        elif sorted(table.header) != sorted(header):
            raise InputError(
                table.path,
                f"its columns differ from those of {paths[0]}: {', '.join(sorted(set(table.header) ^ set(header)))}",
            )
        order = [table.header.index(name) for name in header]
        for record, line, video_id, music_id in zip(
            table.rows, table.lines, columns["video_id"], columns["music_id"], strict=True
        ):
            where = f"{table.path}:{line}"
            if video_id in origin:
                problems.append(f"{where}: video_id {video_id!r} is also on {origin[video_id]}")
                continue
            origin[str(video_id)] = where
            rows.append([record[index] for index in order])
            video_ids.append(str(video_id))
            music_ids.append(str(music_id))
    if problems:
        raise ProblemsError(", ".join(str(p) for p in paths), problems)
    assert header is not None
    return AnnotationSet(tuple(Path(p) for p in paths), header, rows, video_ids, music_ids)


def draw_splits(
    video_ids: Sequence[str],
    music_ids: Sequence[str],
    seed: int,
    val_size: int,
    test_size: int,
    where: str = "annotations",
) -> SplitRows:
    """Draw val, then test, as `size` distinct tracks with one random unused video each; the rest is train.

    `video_ids[i]` and `music_ids[i]` describe row i; `where` names the source in error messages.
    """
    if seed < 0:
        raise InputError(where, f"the seed must be a non-negative integer (got {seed})")
    if val_size < 1 or test_size < 1:
        raise InputError(where, f"val and test sizes must be at least 1 (got {val_size} and {test_size})")
    # Tracks in sorted order and each track's videos sorted by id, so the draw ignores the input row order.
    by_track: dict[str, list[int]] = {}
    for row in sorted(range(len(video_ids)), key=lambda i: video_ids[i]):
        by_track.setdefault(music_ids[row], []).append(row)
    tracks = sorted(by_track)
    rng = np.random.default_rng(seed)
    unused = {track: list(rows) for track, rows in by_track.items()}
    drawn: dict[str, np.ndarray] = {}
    for name, size in (("val", val_size), ("test", test_size)):
        eligible = [track for track in tracks if unused[track]]
        if size > len(eligible):
            already = " after drawing val" if name == "test" else ""
            raise InputError(
                where,
                f"cannot draw a {name} split of {size} videos with distinct tracks: only {len(eligible)} "
                f"distinct track(s) have a video left{already} ({len(video_ids)} videos, {len(tracks)} tracks)",
            )
        chosen = [eligible[i] for i in rng.choice(len(eligible), size=size, replace=False)]
        picks = rng.integers(0, [len(unused[track]) for track in chosen])
        rows = [unused[track].pop(int(pick)) for track, pick in zip(chosen, picks, strict=True)]
        drawn[name] = np.sort(np.array(rows, dtype=np.int64))
    held_out = np.zeros(len(video_ids), dtype=bool)
    held_out[drawn["val"]] = held_out[drawn["test"]] = True
    return SplitRows(train=np.flatnonzero(~held_out), val=drawn["val"], test=drawn["test"])


def check_outputs(out_dir: str | PathLike[str], force: bool = False) -> dict[str, Path]:
    """The split file paths in `out_dir`; raise if any exists and `force` is not set."""
    targets = {name: Path(out_dir) / filename for name, filename in SPLIT_FILES.items()}
    existing = [str(path) for path in targets.values() if path.exists()]
    if existing and not force:
        raise OutputExistsError(f"{', '.join(existing)}: already exist(s) (use --force to overwrite)")
    return targets


def write_splits(
    out_dir: str | PathLike[str], data: AnnotationSet, split: SplitRows, force: bool = False
) -> dict[str, Path]:
    """Write train/val/test CSVs (header + the rows' exact text) atomically; refuse to overwrite unless `force`."""
    out = Path(out_dir)
    targets = check_outputs(out, force)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(out, f"cannot create the output folder: {exc.strerror or exc}") from exc
    # Write all three under temporary names first; rename only once every file is complete.
    with ExitStack() as stack:
        for name, path in targets.items():
            handle = stack.enter_context(atomic_writer(path, newline=""))
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(data.header)
            writer.writerows(data.rows[i] for i in getattr(split, name))
    return targets
