"""Request and response bodies of the HTTP API (they make the OpenAPI schema)."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mgsv.search.diversity import DEFAULT_COSINE
from mgsv.search.options import MAX_ALTERNATIVES
from mgsv.serve.settings import MAX_TOP

ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"  # upload ids and presentation ids are server-made tokens of this form


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: str


class Ready(BaseModel):
    ready: bool
    status: Literal["loading", "ready", "failed"]
    message: str
    tracks: int | None = None
    checkpoint: str | None = None
    limits: dict[str, float | int] = {}
    queues: dict[str, dict[str, Any]] = {}
    kept_uploads: dict[str, int] = Field({}, description="videos kept for rendering: count, bytes, and encodings of them kept")


class TrackOut(BaseModel):
    """A library track as the API shows it (no server paths)."""

    id: str
    title: str | None
    artist: str | None
    album: str | None
    duration: float
    licence: str | None
    beyond_horizon: bool = Field(description="longer than 240 s: moments are only found in its first 240 s")
    added_at: str


class TrackList(BaseModel):
    count: int
    tracks: list[TrackOut]


class MomentOut(BaseModel):
    """One grounded moment: the track, where to cut it (seconds of the track) and how well it fits."""

    rank: int
    track_id: str
    title: str | None
    artist: str | None
    licence: str | None
    start_s: float
    end_s: float
    score: float = Field(description="relevance p_s in [-2, 2]; higher fits better")
    track_duration: float
    track_too_short: bool
    snapped: bool
    notes: list[str]
    alternative: int = Field(0, description="0: the track's moment; n: its n-th other moment")
    alternatives: list[MomentOut] = Field(
        [], description="other moments of the track (the `alternatives` option, or POST /v1/alternatives)"
    )


class VideoOut(BaseModel):
    duration: float
    width: int
    height: int
    codec: str
    has_audio: bool
    frames_used: int = Field(description="1 fps frames the model read (at most 50)")
    window_start: float


class GroundResponse(BaseModel):
    upload_id: str = Field(description="pass to POST /v1/render to render a moment under this video")
    upload_expires_in_s: float
    video: VideoOut
    moments: list[MomentOut]
    notes: list[str] = Field([], description="what the model read of the video (e.g. 50 s of a longer one)")
    seconds: float = Field(description="server time spent grounding (decode, encode, rank, detect)")


class GroundForm(BaseModel):
    """The form fields of POST /v1/ground besides the video: `mgsv.search.GroundOptions`, field by field.

    Lists (`licences`, `tags`) are a JSON array of strings or a comma-separated string.
    """

    model_config = ConfigDict(extra="forbid")

    top: int = Field(5, ge=1, le=MAX_TOP, description="tracks (one moment each) to return")
    fit_duration: bool = Field(False, description="moments exactly as long as the video; shorter tracks skipped")
    snap: Literal["beats"] | None = Field(None, description="move each moment's start onto a beat")
    window_start: float = Field(0.0, ge=0.0, allow_inf_nan=False,
                                description="videos over 50 s: the second the model's 50 s start at")
    min_duration: float | None = Field(None, ge=0.0, allow_inf_nan=False,
                                       description="only tracks at least this many seconds long")
    licences: list[str] = Field([], description="only tracks with one of these licence tags (any of them)")
    tags: list[str] = Field([], description="only tracks with all of these KEY=VALUE tags (e.g. genre=ambient)")
    alternatives: int = Field(0, ge=0, le=MAX_ALTERNATIVES, description="up to N other moments of each listed track")
    diverse: bool = Field(False, description="near-duplicate tracks (same artist/album, close embeddings) give way")
    diverse_cosine: float = Field(DEFAULT_COSINE, ge=0.0, lt=1.0, allow_inf_nan=False,
                                  description="with diverse: embeddings this close start to count as the same music")

    @field_validator("licences", "tags", mode="before")
    @classmethod
    def _list(cls, value: Any) -> Any:
        """A form field is text: a JSON array, or comma-separated values."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value


class RegroundRequest(GroundForm):
    """POST /v1/reground: a kept upload grounded again with other options (the form fields of POST /v1/ground)."""

    upload_id: str = Field(pattern=ID_PATTERN, description="the upload_id a grounding returned")


class AlternativesRequest(BaseModel):
    """POST /v1/alternatives: other moments of one track for a kept upload."""

    model_config = ConfigDict(extra="forbid")

    upload_id: str = Field(pattern=ID_PATTERN, description="the upload_id a grounding returned")
    track_id: str = Field(min_length=1, max_length=512)
    avoid: list[tuple[float, float]] = Field(
        min_length=1, max_length=16, description="[start_s, end_s] moments the new ones must not overlap (seconds)"
    )
    alternatives: int = Field(MAX_ALTERNATIVES, ge=1, le=MAX_ALTERNATIVES, description="how many moments at most")
    fit_duration: bool = Field(False, description="moments exactly as long as the video (as the grounding asked)")
    snap: Literal["beats"] | None = Field(None, description="move each moment's start onto a beat")
    window_start: float = Field(0.0, ge=0.0, allow_inf_nan=False,
                                description="the part of a video over 50 s the model reads (as the grounding asked)")


class AlternativesResponse(BaseModel):
    track_id: str
    moments: list[MomentOut] = Field(description="other moments of the track, none overlapping `avoid`; may be empty")
    seconds: float = Field(description="server time spent")


class RenderRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    upload_id: str = Field(pattern=ID_PATTERN)
    track_id: str = Field(min_length=1, max_length=512)
    start_s: float = Field(ge=0.0, description="where the music starts, in seconds of the track")
    end_s: float | None = Field(
        None, description="where the music stops; default: it runs for the whole video (or to the track's end)"
    )
    keep_audio: float = Field(0.0, ge=0.0, le=1.0, description="gain of the video's own audio in the mix")


class AddTrackResponse(BaseModel):
    added: bool = Field(description="false: the same content was already in the library")
    track: TrackOut
    warnings: list[str] = []


class PeaksOut(BaseModel):
    """A track's waveform as `width` columns over its first `seconds` (the page draws them across the track)."""

    track_id: str
    duration: float = Field(description="seconds of the whole track (as in the library)")
    seconds: float = Field(description="seconds the columns cover: the decoded track, at most its first 30 min")
    width: int
    min: list[float] = Field(description="lowest sample in each column, in [-1, 1]")
    max: list[float] = Field(description="highest sample in each column, in [-1, 1]")


class BeatsOut(BaseModel):
    """A track's beats: the times `--snap beats` snaps a moment's start to."""

    track_id: str
    duration: float = Field(description="seconds of the whole track (as in the library)")
    seconds: float = Field(description="seconds analysed: the track's first 10 min at most")
    tempo_bpm: float | None = Field(description="60 / the median time between beats; null without beats")
    beats: list[float] = Field(description="beat times in seconds of the track, ascending; empty if it has no pulse")
