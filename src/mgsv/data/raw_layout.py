"""Turn raw MGSV-EC media (`xxayt/MGSV-EC-Raw`, or a copy obtained from the authors) into a dataset folder.

The raw release is partial (its card: 7,580 music files including vocal / no-vocal variants of 4,050 tracks,
1,721 of the 2,000 test videos, 2,085 of the 51,194 train/val videos), and its file names are not the CSV ids:
the CSVs' `music_path` column names each track's file as `<music_id>+<title>.mp3` (e.g.
`7+5x4mjjeiubm49fg+星星(伴奏).mp3`, 伴奏 = accompaniment, the no-vocal variant), so a file stem is not a
`music_id`, and one `music_id` can have two files of which the annotation used one. This module maps files to ids
and writes a folder `mgsv extract` and `mgsv train` accept:

    OUT/
      train_data.csv  val_data.csv  test_data.csv   the official rows whose video and track both have a file
      media/videos/<video_id><ext>                   links to the raw files, named by id (hard links where the
      media/music/<music_id><ext>                    files are on the same filesystem, else symbolic links)
      raw-layout.json                                what was matched, and what is missing or ambiguous

    mgsv extract --store OUT/features --videos OUT/media/videos --music OUT/media/music   # ids = link stems

Matching (folders do not matter, only file names; names are compared in Unicode NFC):
- music: the file whose name equals the basename of the row's `music_path` is the annotated variant. Failing
  that, files whose name starts with the `music_id` (then `+`, `.`, `_` or `-`) are its files: one is taken; of
  several, the one whose name agrees with the annotated name about 伴奏 (no-vocal); otherwise it is ambiguous.
- videos: a file whose stem is the `video_id`, else whose name starts with the `video_id`'s digits then a
  non-digit; two candidates for one id are ambiguous.
Unmatched, ambiguous and missing items are reported, never guessed. Numbers on this subset are not comparable
with the paper's (another, smaller test set).
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mgsv.atomic_io import atomic_path, atomic_writer
from mgsv.data.annotations import RawTable, read_validated
from mgsv.errors import InputError, OutputExistsError
from mgsv.files.discover import AUDIO_SUFFIXES, VIDEO_SUFFIXES

RAW_SPLITS = ("train", "val", "test")
MEDIA_DIR = "media"
REPORT_FILE = "raw-layout.json"
NO_VOCAL_MARK = "伴奏"
_MUSIC_ID_HEAD = re.compile(r"^(\d+\+[0-9a-zA-Z]+)")
_VIDEO_ID_HEAD = re.compile(r"^(\d+)(?!\d)")
_ID_SEPARATORS = "+._-"
SHOWN = 20  # file names listed per category in the report


@dataclass
class SplitCount:
    """Rows of one split: in the official CSV, and kept (both media present)."""

    rows: int
    kept: int
    videos_missing: int
    music_missing: int


@dataclass
class RawLayoutReport:
    """What `build_raw_layout` found and wrote."""

    out: Path
    videos: int  # ids with a video file
    music: int  # ids with a music file
    splits: dict[str, SplitCount]
    matched_by_prefix: int  # music ids matched by id prefix, not by the annotated file name
    other_variants: list[str] = field(default_factory=list)  # music files of known ids, not the annotated variant
    ambiguous: list[str] = field(default_factory=list)  # "id: file, file"
    unmatched: list[str] = field(default_factory=list)  # files that belong to no id of the CSVs
    not_written: list[str] = field(default_factory=list)  # splits without a single complete row

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "videos": self.videos,
            "music": self.music,
            "splits": {name: vars(count) for name, count in self.splits.items()},
            "music_matched_by_id_prefix": self.matched_by_prefix,
            "other_variants": len(self.other_variants),
            "ambiguous": self.ambiguous,
            "unmatched_files": len(self.unmatched),
            "unmatched_examples": self.unmatched[:SHOWN],
            "splits_not_written": self.not_written,
        }


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def _starts_with_id(name: str, item_id: str) -> bool:
    return name.startswith(item_id) and (len(name) == len(item_id) or name[len(item_id)] in _ID_SEPARATORS)


def match_music(files: list[Path], annotated: dict[str, str]) -> tuple[dict[str, Path], RawLayoutReport]:
    """Map music files to `music_id`s; `annotated` maps each id to the basename of its CSV `music_path`."""
    report = RawLayoutReport(Path(), 0, 0, {}, 0)
    by_name = {_nfc(name): music_id for music_id, name in annotated.items()}
    exact: dict[str, list[Path]] = {}
    by_id: dict[str, list[Path]] = {}
    for path in files:
        name = _nfc(path.name)
        if name in by_name:
            exact.setdefault(by_name[name], []).append(path)
            continue
        head = _MUSIC_ID_HEAD.match(name)
        candidates = {_nfc(path.stem), head.group(1) if head else ""}
        music_id = next((c for c in candidates if c in annotated and _starts_with_id(name, c)), None)
        if music_id is None:
            report.unmatched.append(str(path))
        else:
            by_id.setdefault(music_id, []).append(path)
    chosen: dict[str, Path] = {}
    for music_id, annotated_name in annotated.items():
        if music_id in exact:
            chosen[music_id] = min(exact[music_id])  # the same name twice (two folders): the first copy
            report.other_variants.extend(str(p) for p in by_id.get(music_id, []))
            continue
        found = sorted(by_id.get(music_id, []))
        candidates = found
        if len(found) > 1:
            wants_no_vocal = NO_VOCAL_MARK in _nfc(annotated_name)
            candidates = [p for p in found if (NO_VOCAL_MARK in _nfc(p.name)) == wants_no_vocal]
        if len(candidates) == 1:
            chosen[music_id] = candidates[0]
            report.matched_by_prefix += 1
            report.other_variants.extend(str(p) for p in found if p != candidates[0])
        elif candidates:
            report.ambiguous.append(f"{music_id}: {', '.join(p.name for p in candidates)}")
    return chosen, report


def match_videos(files: list[Path], video_ids: set[str]) -> tuple[dict[str, Path], list[str], list[str]]:
    """Map video files to `video_id`s: (id -> file, ambiguous ids as text, unmatched files)."""
    exact: dict[str, list[Path]] = {}
    loose: dict[str, list[Path]] = {}
    unmatched: list[str] = []
    for path in files:
        if path.stem in video_ids:
            exact.setdefault(path.stem, []).append(path)
            continue
        head = _VIDEO_ID_HEAD.match(path.name)
        if head and head.group(1) in video_ids:
            loose.setdefault(head.group(1), []).append(path)
        else:
            unmatched.append(str(path))
    chosen: dict[str, Path] = {}
    ambiguous: list[str] = []
    for video_id in sorted(set(exact) | set(loose)):
        candidates = sorted(exact.get(video_id) or loose[video_id])
        if len(candidates) == 1:
            chosen[video_id] = candidates[0]
        else:
            ambiguous.append(f"{video_id}: {', '.join(p.name for p in candidates)}")
    return chosen, ambiguous, unmatched


def build_raw_layout(
    media_roots: list[Path], csvs: dict[str, Path], out: str | os.PathLike[str], force: bool = False
) -> RawLayoutReport:
    """Match the media under `media_roots` to the rows of `csvs` (split -> official CSV) and write OUT (above)."""
    out = Path(out)
    tables: dict[str, tuple[RawTable, dict[str, list[object]]]] = {}
    for split in RAW_SPLITS:
        if split not in csvs:
            raise InputError(split, f"the raw layout needs the official {split}_data.csv")
        tables[split] = read_validated(csvs[split])
    annotated: dict[str, str] = {}
    video_ids: set[str] = set()
    for _, columns in tables.values():
        video_ids.update(str(v) for v in columns["video_id"])
        for music_id, music_path in zip(columns["music_id"], columns["music_path"], strict=True):
            annotated.setdefault(str(music_id), Path(str(music_path).replace("\\", "/")).name)

    music_files = media_files(media_roots, AUDIO_SUFFIXES)
    video_files = media_files(media_roots, VIDEO_SUFFIXES)
    music, report = match_music(music_files, annotated)
    videos, ambiguous_videos, unmatched_videos = match_videos(video_files, video_ids)
    report.out, report.videos, report.music = out, len(videos), len(music)
    report.ambiguous.extend(ambiguous_videos)
    report.unmatched.extend(unmatched_videos)

    out.mkdir(parents=True, exist_ok=True)
    _write_links(out / MEDIA_DIR, {"videos": videos, "music": music}, force)
    for split, (table, columns) in tables.items():
        keep = [i for i, (v, m) in enumerate(zip(columns["video_id"], columns["music_id"], strict=True))
                if str(v) in videos and str(m) in music]
        report.splits[split] = SplitCount(
            rows=len(table.rows), kept=len(keep),
            videos_missing=len({str(v) for v in columns["video_id"]} - set(videos)),
            music_missing=len({str(m) for m in columns["music_id"]} - set(music)),
        )
        if keep:
            # read_validated raised on any bad row, so the columns' rows are the table's rows, in order.
            _write_csv(out / f"{split}_data.csv", table, [table.rows[i] for i in keep], force)
        else:
            report.not_written.append(split)
    with atomic_path(out / REPORT_FILE) as tmp:
        tmp.write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return report


def media_files(roots: list[Path], suffixes: frozenset[str]) -> list[Path]:
    """Every file under `roots` with one of `suffixes` (hidden names skipped), sorted.

    Not `mgsv.files.discover.find_media`: that one folds paths that resolve to the same file into one, and in a
    Hugging Face cache two files of identical content are links to one blob, yet here each name is an id.
    """
    found = []
    for root in roots:
        for folder, dirs, names in os.walk(root, followlinks=False):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            found.extend(Path(folder) / n for n in names if not n.startswith(".") and Path(n).suffix.lower() in suffixes)
    return sorted(found)


def _write_csv(path: Path, table: RawTable, rows: list[list[str]], force: bool) -> None:
    """Header + rows, atomically; an existing different file is kept unless `force`."""
    lines = [table.header, *rows]
    if path.exists() and not force:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            if [r for r in csv.reader(handle) if r] == lines:
                return
        raise OutputExistsError(f"{path}: exists and differs from the rows found in the raw media; use --force")
    with atomic_writer(path, newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows(lines)


def _write_links(media: Path, groups: dict[str, dict[str, Path]], force: bool) -> None:
    """media/<group>/<id><ext> -> the raw file; built beside and swapped in whole, so a crash leaves no half.

    A hard link where possible: `mgsv extract` then sees one file per id even when two ids have identical content
    (it folds symbolic links that resolve to the same file), and the media outlive a cleaned cache. Across
    filesystems it falls back to a symbolic link.
    """
    wanted = {f"{group}/{item_id}{path.suffix}": Path(os.path.realpath(path))
              for group, items in groups.items() for item_id, path in items.items()}
    if media.exists():
        present = {p.relative_to(media).as_posix() for p in media.rglob("*") if not p.is_dir()}
        if present == set(wanted) and all(os.path.samefile(media / rel, wanted[rel]) for rel in wanted):
            return
        if not force:
            raise OutputExistsError(f"{media}: exists with other links; use --force to rebuild it")
    staging = media.with_name(f".{media.name}.partial")
    if staging.exists():
        shutil.rmtree(staging)  # an interrupted earlier build; ours to redo
    for group in groups:
        (staging / group).mkdir(parents=True, exist_ok=True)
    for relative, target in wanted.items():
        try:
            os.link(target, staging / relative)
        except OSError:  # another filesystem (EXDEV) or one without hard links
            os.symlink(target, staging / relative)
    if media.exists():
        shutil.rmtree(media)
    os.replace(staging, media)
