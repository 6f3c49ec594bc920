"""MGSV-EC annotation CSVs: the 16-column schema, validation with line numbers, and the bundled val/test splits."""

from __future__ import annotations

import csv
import math
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from os import PathLike
from pathlib import Path
from typing import Literal

import pandas as pd

from mgsv.errors import InputError, ProblemsError

ID_COLUMNS = ("video_id", "music_id")
FLOAT_COLUMNS = (
    "video_start",
    "video_end",
    "music_start",
    "music_end",
    "music_total_duration",
    "video_segment_duration",
    "music_segment_duration",
    "video_total_duration",
    # A rate, not a count: other exports may hold 29.97; the bundled files happen to hold integers.
    "video_frame_rate",
)
INT_COLUMNS = ("video_width", "video_height", "video_total_frames")
TEXT_COLUMNS = ("music_path", "video_category")
# File order of the official CSVs (docs/official-code.md, "Annotations and targets").
COLUMNS = (
    "video_id",
    "music_id",
    "video_start",
    "video_end",
    "music_start",
    "music_end",
    "music_total_duration",
    "video_segment_duration",
    "music_segment_duration",
    "music_path",
    "video_total_duration",
    "video_width",
    "video_height",
    "video_total_frames",
    "video_frame_rate",
    "video_category",
)
# CSV times are rounded to milliseconds and decoders disagree on a track's length by a frame or so; a GT moment
# may end this far past the stated track duration before it counts as outside the track.
DURATION_TOLERANCE_S = 0.05

Split = Literal["val", "test"]
SPLITS: tuple[str, ...] = ("val", "test")


@dataclass(frozen=True)
class RawTable:
    """A CSV read as text: its header, its rows (lists of fields) and each row's first line number in the file."""

    path: Path
    header: list[str]
    rows: list[list[str]]
    lines: list[int]
    header_line: int = 1


def bundled_annotations(split: Split) -> Path:
    """Path of the MGSV-EC annotation CSV shipped with the package for `split` ("val" or "test")."""
    if split not in SPLITS:
        raise InputError("split", f"unknown split {split!r}; the bundled splits are {', '.join(SPLITS)}")
    resource = resources.files("mgsv") / "resources" / "mgsv_ec" / f"{split}_data.csv"
    # The package is installed as plain files (no zip), so the resource is a real path on disk.
    return Path(str(resource))


def read_csv_text(path: str | PathLike[str]) -> RawTable:
    """Read a CSV as text rows with the file line number of each row (header = line 1); blank lines are skipped.

    The csv module is used rather than pandas because it reports the physical line of every record, so each
    problem can be reported with its line, and it keeps every field's exact text.
    """
    path = Path(path)
    header: list[str] | None = None
    header_line = 1
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, strict=True)
            line = 1
            try:
                for record in reader:
                    if record and any(field.strip() for field in record):
                        if header is None:
                            header, header_line = [field.strip() for field in record], line
                        else:
                            rows.append(record)
                            lines.append(line)
                    line = reader.line_num + 1
            except csv.Error as exc:
                raise InputError(path, f"malformed CSV: {exc}", line=reader.line_num or line) from exc
    except FileNotFoundError as exc:
        raise InputError(path, "file not found") from exc
    except IsADirectoryError as exc:
        raise InputError(path, "is a directory, expected a CSV file") from exc
    except UnicodeDecodeError as exc:
        raise InputError(path, f"not a UTF-8 text file ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from exc
    if header is None:
        raise InputError(path, "empty file: expected a CSV header and annotation rows")
    return RawTable(path=path, header=header, rows=rows, lines=lines, header_line=header_line)


def check_header(table: RawTable) -> None:
    """Raise if the header lacks MGSV-EC columns or repeats a column name."""
    problems = []
    duplicated = sorted(name for name, count in Counter(table.header).items() if count > 1)
    if duplicated:
        problems.append(f"line {table.header_line}: duplicated column(s): {', '.join(duplicated)}")
    missing = [name for name in COLUMNS if name not in table.header]
    if missing:
        problems.append(f"line {table.header_line}: missing column(s): {', '.join(missing)}")
    if problems:
        raise ProblemsError(table.path, problems)
    if not table.rows:
        raise InputError(table.path, "no annotation rows after the header")


def _parse_float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _parse_int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        value = _parse_float(text)
        return int(value) if value is not None and value.is_integer() else None


def _row_problems(record: dict[str, str], numbers: dict[str, float | int]) -> list[str]:
    """Semantic checks of one row whose numeric fields all parsed."""
    problems = []
    if numbers["video_start"] < 0:
        problems.append(f"video_start {numbers['video_start']} is negative")
    if numbers["video_start"] >= numbers["video_end"]:
        problems.append(f"video_start {numbers['video_start']} is not before video_end {numbers['video_end']}")
    if numbers["music_start"] >= numbers["music_end"]:
        problems.append(f"music_start {numbers['music_start']} is not before music_end {numbers['music_end']}")
    for column in ("music_total_duration", "video_total_duration"):
        if numbers[column] <= 0:
            problems.append(f"{column} {numbers[column]} is not positive")
    if numbers["music_start"] < 0:
        problems.append(f"music_start {numbers['music_start']} is negative (the moment starts before the track)")
    duration = numbers["music_total_duration"]
    if duration > 0 and numbers["music_end"] > duration + DURATION_TOLERANCE_S:
        problems.append(
            f"music_end {numbers['music_end']} is past the end of the track "
            f"(music_total_duration {duration}, music id {record['music_id']!r})"
        )
    return problems


def validate_rows(table: RawTable) -> tuple[dict[str, list[object]], list[str]]:
    """Check every row of a CSV whose header passed `check_header`; return typed columns and all problems."""
    position = {name: index for index, name in enumerate(table.header)}
    columns: dict[str, list[object]] = {name: [] for name in table.header}
    problems: list[str] = []
    first_line_of_video: dict[str, int] = {}
    for record_fields, line in zip(table.rows, table.lines, strict=True):
        if len(record_fields) != len(table.header):
            problems.append(f"line {line}: expected {len(table.header)} fields, found {len(record_fields)}")
            continue
        record = {name: record_fields[index] for name, index in position.items()}
        row_problems: list[str] = []
        for name in ID_COLUMNS:
            record[name] = record[name].strip()
            if not record[name]:
                row_problems.append(f"empty {name}")
        numbers: dict[str, float | int] = {}
        for name in FLOAT_COLUMNS:
            value = _parse_float(record[name])
            if value is None:
                row_problems.append(f"{name} {record[name]!r} is not a finite number")
            else:
                numbers[name] = value
        for name in INT_COLUMNS:
            int_value = _parse_int(record[name])
            if int_value is None:
                row_problems.append(f"{name} {record[name]!r} is not an integer")
            else:
                numbers[name] = int_value
        if len(numbers) == len(FLOAT_COLUMNS) + len(INT_COLUMNS):
            row_problems.extend(_row_problems(record, numbers))
        video_id = record["video_id"]
        if video_id:
            if video_id in first_line_of_video:
                row_problems.append(f"duplicate video_id {video_id!r} (first on line {first_line_of_video[video_id]})")
            else:
                first_line_of_video[video_id] = line
        if row_problems:
            problems.extend(f"line {line}: {problem}" for problem in row_problems)
            continue
        for name in table.header:
            columns[name].append(numbers.get(name, record[name]))
    return columns, problems


def to_frame(table: RawTable, columns: dict[str, list[object]]) -> pd.DataFrame:
    """Typed DataFrame from validated columns: ids and text as str, times as float64, counts as int64."""
    frame = pd.DataFrame({name: columns[name] for name in table.header})
    for name in FLOAT_COLUMNS:
        frame[name] = frame[name].astype("float64")
    for name in INT_COLUMNS:
        frame[name] = frame[name].astype("int64")
    for name in (*ID_COLUMNS, *TEXT_COLUMNS):
        frame[name] = frame[name].astype(str)
    frame.attrs["source"] = str(table.path)
    return frame


def read_validated(path: str | PathLike[str]) -> tuple[RawTable, dict[str, list[object]]]:
    """Read and validate an annotation CSV: its text table and typed columns; every bad row in one error."""
    table = read_csv_text(path)
    check_header(table)
    columns, problems = validate_rows(table)
    if problems:
        raise ProblemsError(table.path, problems)
    return table, columns


def load_annotations(path: str | PathLike[str]) -> pd.DataFrame:
    """Load and validate an MGSV-EC annotation CSV; every bad row is reported (with its line) in one error."""
    return to_frame(*read_validated(path))


def music_set(annotations: pd.DataFrame) -> list[str]:
    """The distinct music ids of an annotation table, in first-appearance order (the split's music set)."""
    return list(dict.fromkeys(annotations["music_id"].tolist()))
