"""Human A/B evaluation of two systems' moments (the paper's Fig. 4 protocol), with durable answers.

Each query video is shown twice, once rendered with system A's chosen moment and once with system B's
(`ranking[0]` of each system's predictions JSONL line for that video). Raters see "clip 1" and "clip 2", never the
system names; which system is clip 1 is drawn at random for each (rater, video) when the pair is first shown and
recorded. A rater answers one of: clip 1 better, clip 2 better, both acceptable, neither; the answer is stored as
A / B / both / neither together with the order shown.

Storage: one SQLite file (WAL journal, synchronous=FULL: an acknowledged answer survives a crash or power loss),
one row per answer with rater id and time, and the moments both systems proposed, so the file alone is enough for
analysis. The file records the SHA-256 of both prediction files; opening it with other predictions is refused, so
answers about different systems never mix.

`ab_report(db)` counts the answers: the four percentages, and an exact two-sided sign test of A against B over the
answers that prefer one of them.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import secrets
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mgsv.errors import InputError, MgsvError

if TYPE_CHECKING:
    from mgsv.search.library import MusicLibrary
    from mgsv.serve.settings import AbStudySettings

FORMAT_VERSION = 1
ANSWERS = ("A", "B", "both", "neither")
SHOWN_ANSWERS = ("first", "second", "both", "neither")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS study (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS presentations (
    id TEXT PRIMARY KEY,
    rater_id TEXT NOT NULL,
    video_id TEXT NOT NULL,
    first_system TEXT NOT NULL CHECK (first_system IN ('A', 'B')),
    created_at TEXT NOT NULL,
    UNIQUE (rater_id, video_id)
);
CREATE TABLE IF NOT EXISTS answers (
    id INTEGER PRIMARY KEY,
    presentation_id TEXT NOT NULL UNIQUE REFERENCES presentations (id),
    rater_id TEXT NOT NULL,
    video_id TEXT NOT NULL,
    first_system TEXT NOT NULL CHECK (first_system IN ('A', 'B')),
    shown_answer TEXT NOT NULL CHECK (shown_answer IN ('first', 'second', 'both', 'neither')),
    answer TEXT NOT NULL CHECK (answer IN ('A', 'B', 'both', 'neither')),
    a_track TEXT NOT NULL, a_start REAL NOT NULL, a_end REAL NOT NULL,
    b_track TEXT NOT NULL, b_start REAL NOT NULL, b_end REAL NOT NULL,
    answered_at TEXT NOT NULL,
    UNIQUE (rater_id, video_id)
);
"""


class StudyConflictError(MgsvError):
    """An answer that cannot be recorded (already answered, or another rater's presentation)."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class SystemChoice:
    """A system's chosen track and moment for one video (its `ranking[0]`)."""

    track_id: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class StudyVideo:
    """One query video with both systems' choices."""

    video_id: str
    path: Path
    a: SystemChoice
    b: SystemChoice

    def choice(self, system: str) -> SystemChoice:
        return self.a if system == "A" else self.b


@dataclass(frozen=True)
class Presentation:
    """A video shown to a rater, with the system shown as clip 1 (hidden from the rater)."""

    id: str
    rater_id: str
    video_id: str
    first_system: str

    def system_at(self, position: int) -> str:
        """The system behind clip `position` (1 or 2)."""
        other = "B" if self.first_system == "A" else "A"
        return self.first_system if position == 1 else other


@dataclass
class StudyPlan:
    """The videos both systems can be compared on, and why the others cannot."""

    videos: list[StudyVideo]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (video id, reason)


def plan_study(a_file: Path, b_file: Path, media: Path, library: MusicLibrary) -> StudyPlan:
    """Pair the two prediction files video by video, find each video in `media` and check both tracks."""
    from mgsv.data.predictions import read_predictions
    from mgsv.features.store import UnknownIdsError
    from mgsv.files.discover import find_media

    if not media.is_dir():
        raise InputError(media, "the --media folder does not exist")
    first = {p.video_id: p for p in read_predictions(a_file)}
    second = {p.video_id: p for p in read_predictions(b_file)}
    found = find_media([media], "video")
    by_id: dict[str, list[Path]] = {}
    for path in found.files:
        by_id.setdefault(path.stem, []).append(path)
    plan = StudyPlan([])
    for video_id in sorted(set(first) | set(second)):
        if video_id not in first or video_id not in second:
            plan.skipped.append((video_id, f"only in {'A' if video_id in first else 'B'}'s predictions"))
            continue
        files = by_id.get(video_id, [])
        if len(files) != 1:
            reason = "no video file with this id" if not files else f"{len(files)} video files with this id"
            plan.skipped.append((video_id, f"{reason} in {media}"))
            continue
        choices = {}
        for system, prediction in (("A", first[video_id]), ("B", second[video_id])):
            if not prediction.ranking:
                choices[system] = f"system {system} has no ranking for it"
                continue
            top = prediction.ranking[0]
            try:
                library.track(top.music_id)
            except UnknownIdsError:
                choices[system] = f"system {system}'s track {top.music_id!r} is not in the library"
                continue
            choices[system] = SystemChoice(top.music_id, top.start, top.end)
        problems = [c for c in choices.values() if isinstance(c, str)]
        if problems:
            plan.skipped.append((video_id, "; ".join(problems)))
            continue
        plan.videos.append(StudyVideo(video_id, files[0], choices["A"], choices["B"]))
    if not plan.videos:
        reasons = "; ".join(f"{v}: {r}" for v, r in plan.skipped[:5])
        raise InputError(a_file, f"no video can be compared between the two prediction files ({reasons})")
    return plan


class AbStudy:
    """A running study: presentations, clips and answers (see the module docstring)."""

    def __init__(self, plan: StudyPlan, database: Path, library: MusicLibrary, a_file: Path, b_file: Path) -> None:
        self.plan = plan
        self.videos = {v.video_id: v for v in plan.videos}
        self.database = database
        self.library = library
        self._salt = _open_database(database, a_file, b_file)

    @classmethod
    def open(cls, settings: AbStudySettings, library: MusicLibrary) -> AbStudy:
        """Plan the study and open (or create) its answer database."""
        plan = plan_study(settings.predictions_a, settings.predictions_b, settings.media, library)
        return cls(plan, settings.database, library, settings.predictions_a, settings.predictions_b)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        with _connect(self.database) as db:
            yield db

    # -- presenting ------------------------------------------------------------------------------------------

    def progress(self, rater_id: str) -> tuple[int, int]:
        """(videos this rater answered, videos in the study)."""
        with self._db() as db:
            answered = db.execute("SELECT COUNT(*) FROM answers WHERE rater_id = ?", (rater_id,)).fetchone()[0]
        return int(answered), len(self.videos)

    def next_presentation(self, rater_id: str) -> Presentation | None:
        """The next video this rater has not answered (the same presentation again until answered); None if done."""
        with self._db() as db:
            answered = {row[0] for row in db.execute("SELECT video_id FROM answers WHERE rater_id = ?", (rater_id,))}
            # Each rater sees the videos in an order of their own (reproducible from the rater id), so that the
            # study's file order does not line up with fatigue.
            order = sorted(self.videos)
            random.Random(f"{self._salt}:{rater_id}").shuffle(order)
            video_id = next((v for v in order if v not in answered), None)
            if video_id is None:
                return None
            row = db.execute(
                "SELECT id, rater_id, video_id, first_system FROM presentations WHERE rater_id = ? AND video_id = ?",
                (rater_id, video_id),
            ).fetchone()
            if row is not None:
                return Presentation(*row)
            presentation = Presentation(secrets.token_urlsafe(16), rater_id, video_id, secrets.choice(("A", "B")))
            db.execute(
                "INSERT OR IGNORE INTO presentations (id, rater_id, video_id, first_system, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (presentation.id, rater_id, video_id, presentation.first_system, _now()),
            )
            # A concurrent request for the same rater may have inserted first: whatever is stored is what counts.
            row = db.execute(
                "SELECT id, rater_id, video_id, first_system FROM presentations WHERE rater_id = ? AND video_id = ?",
                (rater_id, video_id),
            ).fetchone()
            return Presentation(*row)

    def presentation(self, presentation_id: str) -> Presentation | None:
        """A presentation by id, or None."""
        with self._db() as db:
            row = db.execute(
                "SELECT id, rater_id, video_id, first_system FROM presentations WHERE id = ?", (presentation_id,)
            ).fetchone()
        return None if row is None else Presentation(*row)

    def render_clip(self, presentation: Presentation, position: int, cache: Path) -> Path:
        """The video rendered with the moment of the system behind clip `position`, from `cache` or made now."""
        from mgsv.media.probe import probe
        from mgsv.media.render import render_with_music

        video = self.videos[presentation.video_id]
        choice = video.choice(presentation.system_at(position))
        track = self.library.track(choice.track_id)
        key = f"{video.video_id}|{track.content_hash}|{choice.start_s:.3f}"
        target = cache / f"ab-{hashlib.sha256(key.encode()).hexdigest()[:32]}.mp4"
        if target.is_file():
            return target
        duration = probe(video.path).duration or 0.0
        # As `mgsv ground --render`: the music starts at the moment's start and runs for the whole video.
        end = min(choice.start_s + duration, track.duration) if duration > 0 else None
        part = cache / f".part-{uuid.uuid4().hex}.mp4"
        try:
            render_with_music(video.path, Path(track.path), choice.start_s, end, out=part)
            os.replace(part, target)  # atomic: a concurrent render of the same clip just replaces it
        finally:
            part.unlink(missing_ok=True)
        return target

    # -- answering -------------------------------------------------------------------------------------------

    def record_answer(self, presentation_id: str, rater_id: str, shown_answer: str) -> str:
        """Store one answer ("first", "second", "both", "neither"); returns it as A / B / both / neither."""
        if shown_answer not in SHOWN_ANSWERS:
            raise InputError("answer", f"must be one of {', '.join(SHOWN_ANSWERS)}, got {shown_answer!r}")
        presentation = self.presentation(presentation_id)
        if presentation is None:
            raise LookupError(presentation_id)
        if presentation.rater_id != rater_id:
            raise StudyConflictError("this presentation was shown to another rater")
        if shown_answer == "first":
            answer = presentation.system_at(1)
        elif shown_answer == "second":
            answer = presentation.system_at(2)
        else:
            answer = shown_answer
        video = self.videos[presentation.video_id]
        with self._db() as db:
            try:
                db.execute(
                    "INSERT INTO answers (presentation_id, rater_id, video_id, first_system, shown_answer, answer, "
                    "a_track, a_start, a_end, b_track, b_start, b_end, answered_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        presentation.id,
                        rater_id,
                        video.video_id,
                        presentation.first_system,
                        shown_answer,
                        answer,
                        video.a.track_id,
                        video.a.start_s,
                        video.a.end_s,
                        video.b.track_id,
                        video.b.start_s,
                        video.b.end_s,
                        _now(),
                    ),
                )
            except sqlite3.IntegrityError as exc:
                raise StudyConflictError("this rater has already answered for this video") from exc
        return answer


@contextmanager
def _connect(path: Path, read_only: bool = False) -> Iterator[sqlite3.Connection]:
    try:
        if read_only:
            db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30, isolation_level=None)
        else:
            db = sqlite3.connect(path, timeout=30, isolation_level=None)  # autocommit: each INSERT is durable
    except sqlite3.Error as exc:
        raise InputError(path, f"cannot open the answer database: {exc}") from exc
    try:
        if not read_only:
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")
        yield db
    except sqlite3.DatabaseError as exc:
        if isinstance(exc, sqlite3.IntegrityError):
            raise
        raise InputError(path, f"the answer database is unreadable: {exc}") from exc
    finally:
        db.close()


def _open_database(path: Path, a_file: Path, b_file: Path) -> str:
    """Create the database or check that it belongs to these prediction files; returns the study's salt."""
    wanted = {"a_sha256": _sha256(a_file), "b_sha256": _sha256(b_file)}
    path.parent.mkdir(parents=True, exist_ok=True)
    with _connect(path) as db:
        db.executescript(_SCHEMA)
        db.execute("BEGIN IMMEDIATE")
        try:
            stored = dict(db.execute("SELECT key, value FROM study").fetchall())
            if not stored:
                rows = {
                    **wanted,
                    "a_file": str(a_file),
                    "b_file": str(b_file),
                    "salt": secrets.token_hex(8),
                    "created_at": _now(),
                    "format_version": str(FORMAT_VERSION),
                }
                db.executemany("INSERT INTO study (key, value) VALUES (?, ?)", rows.items())
                stored = rows
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    if int(stored.get("format_version", "0")) > FORMAT_VERSION:
        raise InputError(path, "written by a newer mgsv; upgrade to continue this study")
    for key, value in wanted.items():
        if stored.get(key) != value:
            system = key[0].upper()
            raise InputError(
                path,
                f"this answer database belongs to another study (system {system} was {stored.get(f'{key[0]}_file')} "
                "with different content); use a new --ab-db for these predictions",
            )
    return stored["salt"]


# ------------------------------------------------------------------------------------------------ report


@dataclass(frozen=True)
class AbReport:
    """Counts of the four answers, over all raters and videos."""

    counts: dict[str, int]
    raters: int
    videos: int
    a_file: str
    b_file: str

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def percentages(self) -> dict[str, float]:
        """Percent of answers per category (0 for all when there are none)."""
        return {k: (100.0 * v / self.total if self.total else 0.0) for k, v in self.counts.items()}

    def sign_test_p(self) -> float | None:
        """Two-sided exact sign test of A-better against B-better answers (ties and 'neither' left out)."""
        wins, losses = self.counts["A"], self.counts["B"]
        n = wins + losses
        if n == 0:
            return None
        tail = sum(math.comb(n, k) for k in range(min(wins, losses) + 1)) / 2**n
        return min(1.0, 2 * tail)

    def to_dict(self) -> dict[str, Any]:
        return {
            "a_file": self.a_file,
            "b_file": self.b_file,
            "answers": self.total,
            "raters": self.raters,
            "videos": self.videos,
            "counts": dict(self.counts),
            "percent": {k: round(v, 2) for k, v in self.percentages().items()},
            "sign_test_p": self.sign_test_p(),
        }


def ab_report(database: str | os.PathLike[str]) -> AbReport:
    """Count the answers in a study database (opened read-only)."""
    path = Path(database)
    if not path.is_file():
        raise InputError(path, "no such answer database")
    with _connect(path, read_only=True) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"study", "answers"} <= tables:
            raise InputError(path, "not an A/B study answer database (made by mgsv serve --ab-study)")
        study = dict(db.execute("SELECT key, value FROM study").fetchall())
        counts = dict.fromkeys(ANSWERS, 0)
        for answer, count in db.execute("SELECT answer, COUNT(*) FROM answers GROUP BY answer"):
            counts[answer] = int(count)
        raters, videos = db.execute("SELECT COUNT(DISTINCT rater_id), COUNT(DISTINCT video_id) FROM answers").fetchone()
    return AbReport(counts, int(raters), int(videos), study.get("a_file", "?"), study.get("b_file", "?"))
