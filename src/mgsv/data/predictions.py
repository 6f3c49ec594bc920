"""Predictions JSONL: one object per query video with its SmG moment, its ranking of tracks and optional GT rank.

Format (docs/architecture.md):
`{"video_id": "113722188340", "smg": [85.1, 119.0], "ranking": [[music_id, score, start_s, end_s], ...], "gt_rank": 1}`
`smg` and `ranking` may each be absent (a grounding-only or retrieval-only system); `gt_rank` is optional.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from mgsv.atomic_io import atomic_writer
from mgsv.errors import InputError, OutputExistsError, ProblemsError


class RankedTrack(NamedTuple):
    """One entry of a ranking: a track, its relevance score and the moment predicted on it (seconds)."""

    music_id: str
    score: float
    start: float
    end: float


@dataclass(frozen=True)
class Prediction:
    """Everything a system predicted for one query video; `line` is its line in the file it was read from."""

    video_id: str
    smg: tuple[float, float] | None = None
    ranking: tuple[RankedTrack, ...] | None = None
    gt_rank: int | None = None
    line: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON object of this prediction (one JSONL line)."""
        obj: dict[str, Any] = {"video_id": self.video_id}
        if self.smg is not None:
            obj["smg"] = [float(self.smg[0]), float(self.smg[1])]
        if self.ranking is not None:
            obj["ranking"] = [[t.music_id, float(t.score), float(t.start), float(t.end)] for t in self.ranking]
        if self.gt_rank is not None:
            obj["gt_rank"] = int(self.gt_rank)
        return obj


# Moments are scored in float32, as the official code does (mgsv.evaluation.metrics): a number of larger magnitude
# (a moment or a score) would overflow there, so it is refused when read.
MAX_NUMBER = float(np.finfo(np.float32).max)


class _LineProblem(Exception):
    """A problem with one JSONL line (collected, then reported with all others)."""


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a valid JSON number")


def _as_id(value: Any, field: str) -> str:
    # bool is an int subclass in Python; an id of `true` is a mistake, not the id "True".
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _LineProblem(f"{field} must be a string or an integer, got {json.dumps(value)}")
    text = str(value).strip()
    if not text:
        raise _LineProblem(f"{field} is empty")
    return text


def _as_number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _LineProblem(f"{field} must be a number, got {json.dumps(value)}")
    try:
        number = float(value)
    except OverflowError:  # an integer too large for a float (JSON allows any number of digits)
        raise _LineProblem(f"{field} is too large, got {str(value)[:20]}...") from None
    if not math.isfinite(number):
        raise _LineProblem(f"{field} must be finite, got {value}")
    if abs(number) > MAX_NUMBER:
        raise _LineProblem(f"{field} is too large ({value}; at most {MAX_NUMBER:.3g}, the float32 the scorer uses)")
    return number


def _as_seconds(value: Any, field: str) -> float:
    seconds = _as_number(value, field)
    if seconds < 0:
        raise _LineProblem(f"{field} must be >= 0 s (a moment is seconds into the track), got {value}")
    return seconds


def _as_moment(start: Any, end: Any, field: str) -> tuple[float, float]:
    s, e = _as_seconds(start, f"{field} start"), _as_seconds(end, f"{field} end")
    if s > e:
        raise _LineProblem(f"{field} starts after it ends ({s} > {e})")
    return s, e


def clip_moment(start: float, end: float) -> tuple[float, float]:
    """A predicted moment as a predictions file holds it: seconds >= 0.

    A model's normalised span can reach before the track's start (centre - width / 2 < 0); the official scorer
    clips it at 0 (`mgsv.evaluation.metrics.moment_iou`), so clipping it here changes no metric.
    """
    return max(0.0, float(start)), max(0.0, float(end))


def _well_formed_ranking(value: list[Any]) -> tuple[RankedTrack, ...] | None:
    """The ranking if every entry is valid, checked column-wise in bulk; None if anything is off.

    Rankings hold hundreds of entries per video, so checking them one field at a time dominated reading a file
    (about 6x slower); the entry-by-entry check runs only to name the first bad entry.
    """
    if not all(type(item) is list and len(item) == 4 for item in value):
        return None
    ids, scores, starts, ends = (list(column) for column in zip(*value, strict=True)) if value else ([], [], [], [])
    if not all(type(music_id) is str and music_id and music_id == music_id.strip() for music_id in ids):
        return None
    if not {type(x) for x in (*scores, *starts, *ends)} <= {int, float}:
        return None
    numbers = np.array([scores, starts, ends], dtype=np.float64).reshape(3, len(value))
    if not np.isfinite(numbers).all() or (numbers[1] > numbers[2]).any() or (np.diff(numbers[0]) > 0).any():
        return None
    if (numbers[1:] < 0).any() or (np.abs(numbers) > MAX_NUMBER).any():
        return None
    if len(set(ids)) != len(ids):
        return None
    return tuple(map(RankedTrack._make, zip(ids, *numbers.tolist(), strict=True)))


def _parse_ranking(value: Any) -> tuple[RankedTrack, ...]:
    if not isinstance(value, list):
        raise _LineProblem(f"ranking must be a list of [music_id, score, start_s, end_s], got {type(value).__name__}")
    fast = _well_formed_ranking(value)
    if fast is not None:
        return fast
    entries = []
    seen: dict[str, int] = {}
    previous_score = math.inf
    for position, item in enumerate(value, start=1):
        where = f"ranking entry {position}"
        if not isinstance(item, list) or len(item) != 4:
            raise _LineProblem(f"{where} must be [music_id, score, start_s, end_s], got {json.dumps(item)[:80]}")
        music_id = _as_id(item[0], f"{where} music_id")
        score = _as_number(item[1], f"{where} score")
        start, end = _as_moment(item[2], item[3], f"{where} moment")
        if music_id in seen:
            raise _LineProblem(f"{where}: music id {music_id!r} already ranked at entry {seen[music_id]}")
        if score > previous_score:
            raise _LineProblem(f"{where}: ranking is not sorted by descending score ({score} after {previous_score})")
        seen[music_id] = position
        previous_score = score
        entries.append(RankedTrack(music_id, score, start, end))
    return tuple(entries)


def parse_prediction(obj: Any, where: str = "prediction", line: int | None = None) -> Prediction:
    """Validate one decoded JSON object; raise `InputError` naming `where`, the line and the field at fault."""
    try:
        return _parse(obj, line)
    except _LineProblem as exc:
        raise InputError(where, str(exc), line=line) from None


def _parse(obj: Any, line: int | None) -> Prediction:
    if not isinstance(obj, dict):
        raise _LineProblem(f"expected a JSON object, got {type(obj).__name__}")
    if "video_id" not in obj:
        raise _LineProblem("missing field 'video_id'")
    video_id = _as_id(obj["video_id"], "video_id")
    smg = None
    if obj.get("smg") is not None:
        value = obj["smg"]
        if not isinstance(value, list) or len(value) != 2:
            raise _LineProblem(f"smg must be [start_s, end_s], got {json.dumps(value)[:80]}")
        smg = _as_moment(value[0], value[1], "smg")
    ranking = _parse_ranking(obj["ranking"]) if obj.get("ranking") is not None else None
    gt_rank = None
    if obj.get("gt_rank") is not None:
        value = obj["gt_rank"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise _LineProblem(f"gt_rank must be a positive integer (1 = first), got {json.dumps(value)}")
        gt_rank = value
    return Prediction(video_id=video_id, smg=smg, ranking=ranking, gt_rank=gt_rank, line=line)


def read_predictions(path: str | PathLike[str]) -> list[Prediction]:
    """Read and validate a predictions JSONL file; every bad line is reported (with its number) in one error."""
    path = Path(path)
    predictions: list[Prediction] = []
    problems: list[str] = []
    first_line_of_video: dict[str, int] = {}
    try:
        with path.open(encoding="utf-8-sig") as handle:  # a UTF-8 BOM is accepted, as in the annotation CSVs
            for line_number, text in enumerate(handle, start=1):
                if not text.strip():
                    continue
                try:
                    obj = json.loads(text, parse_constant=_reject_constant)
                except (json.JSONDecodeError, ValueError) as exc:
                    problems.append(f"line {line_number}: invalid JSON: {exc}")
                    continue
                try:
                    prediction = _parse(obj, line_number)
                except _LineProblem as exc:
                    problems.append(f"line {line_number}: {exc}")
                    continue
                if prediction.video_id in first_line_of_video:
                    problems.append(
                        f"line {line_number}: duplicate video_id {prediction.video_id!r} "
                        f"(first on line {first_line_of_video[prediction.video_id]})"
                    )
                    continue
                first_line_of_video[prediction.video_id] = line_number
                predictions.append(prediction)
    except FileNotFoundError as exc:
        raise InputError(path, "file not found") from exc
    except IsADirectoryError as exc:
        raise InputError(path, "is a directory, expected a predictions JSONL file") from exc
    except UnicodeDecodeError as exc:
        raise InputError(path, f"not a UTF-8 text file ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from exc
    if problems:
        raise ProblemsError(path, problems)
    if not predictions:
        raise InputError(path, "empty file: expected one JSON object per query video")
    return predictions


def write_predictions(path: str | PathLike[str], predictions: Iterable[Prediction], force: bool = False) -> Path:
    """Write predictions as JSONL atomically (temp file, fsync, rename); refuse to overwrite unless `force`."""
    path = Path(path)
    if path.exists() and not force:
        raise OutputExistsError(f"{path}: already exists (use --force to overwrite)")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(path) as handle:
        for index, prediction in enumerate(predictions):
            obj = prediction.to_json()
            # Validate what we write with the reader's rules, so a written file always reads back.
            try:
                _parse(obj, None)
            except _LineProblem as exc:
                raise InputError(path, f"prediction {index} (video {prediction.video_id!r}): {exc}") from None
            handle.write(json.dumps(obj, ensure_ascii=False, allow_nan=False))
            handle.write("\n")
    return path


def check_unique_videos(predictions: Sequence[Prediction], where: str = "predictions") -> None:
    """Raise if two predictions are for the same video (in-memory predictions skip the reader's check)."""
    first: dict[str, Prediction] = {}
    problems = []
    for prediction in predictions:
        if prediction.video_id in first:
            other = first[prediction.video_id]
            at = f"line {prediction.line}: " if prediction.line is not None else ""
            was = f" (first on line {other.line})" if other.line is not None else ""
            problems.append(f"{at}duplicate video_id {prediction.video_id!r}{was}")
        else:
            first[prediction.video_id] = prediction
    if problems:
        raise ProblemsError(where, problems)
