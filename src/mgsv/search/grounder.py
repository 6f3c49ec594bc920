"""The grounding service: a video in, the tracks of a music library that fit it and the moment of each out.

One service for every front door: `mgsv ground`, `mgsv serve` and Python all build a `Grounder` and call
`ground(video, GroundOptions(...))`; they only translate their inputs into options and the `GroundingResult` into
text or JSON.

    grounder = Grounder.from_checkpoint("runs/made/checkpoints/best_mor1_iou07", MusicLibrary("my-library"))
    result = grounder.ground("clip.mp4", GroundOptions(top=5, fit_duration=True))
    for moment in result.moments:
        print(moment.track_id, moment.start_s, moment.end_s, moment.score)

Steps: decode 1 fps frames (at most 50, from `window_start`), CLIP-encode them, `encode_video`, the K candidate
tracks of highest S0 among those the filters allow, exact p_s on them (the library's music-side work comes from
its per-model track index), detection on the top k, moments in seconds placed inside their tracks (see
`mgsv.search.ranker`), best score first. With K (`SearchOptions.candidates`, 2,000 by default) at least the
number of eligible tracks, every track is scored exactly. Feature specs are checked at the boundary: CLIP's must
be the checkpoint's video spec and the library's its music spec.

Video longer than a track: by default every track is ranked, and a track shorter than the video gets its best
(partial) moment with `track_too_short=True`. With `fit_duration=True` every moment is exactly as long as the
video, so tracks shorter than the video are not eligible (a filter applied before the candidate stage); if no
track is long enough, grounding fails with a message naming the longest track.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mgsv.defaults import DEFAULT_CLIP_ID
from mgsv.errors import InputError, OptionError, SpecMismatchError
from mgsv.features.spec import FeatureSpec
from mgsv.search import ranker
from mgsv.search.catalog import Track
from mgsv.search.filters import TrackFilter
from mgsv.search.library import EncodedLibrary, MusicLibrary, Progress
from mgsv.search.options import GroundOptions, SearchOptions

if TYPE_CHECKING:
    import torch

    from mgsv.encoders.clip import ClipFrameEncoder
    from mgsv.media.decode import VideoFrames
    from mgsv.media.render import RenderResult


@dataclass(frozen=True)
class GroundedMoment:
    """One track's moment for a video: where to cut the music, and how well the track fits."""

    rank: int  # 1 = best
    track_id: str
    title: str | None
    artist: str | None
    licence: str | None
    path: str  # the music file
    start_s: float
    end_s: float
    score: float  # p_s = S0 + S1 in [-2, 2]
    track_duration: float
    track_too_short: bool = False  # the whole track is shorter than the video
    snapped: bool = False  # the start was moved onto a beat
    notes: tuple[str, ...] = ()

    @property
    def duration(self) -> float:
        """Length of the moment in seconds."""
        return self.end_s - self.start_s

    def to_dict(self) -> dict[str, Any]:
        """The moment as plain JSON types (seconds rounded to milliseconds)."""
        data = asdict(self)
        for key in ("start_s", "end_s", "track_duration"):
            data[key] = round(data[key], 3)
        data["score"] = round(self.score, 6)
        data["notes"] = list(self.notes)
        return data


@dataclass
class GroundingResult:
    """What grounding one video gave: the video as the model read it, the moments (best first), and notes."""

    video: str  # the file, or "video" for features given directly
    duration: float  # seconds of video in the file
    window_start: float  # the second the model's frames start at
    frames: int  # 1 fps frames the model read (at most 50)
    moments: list[GroundedMoment]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types."""
        return {
            "video": self.video,
            "duration": round(self.duration, 3),
            "window_start": self.window_start,
            "frames": self.frames,
            "moments": [m.to_dict() for m in self.moments],
            "notes": list(self.notes),
        }


def checkpoint_specs(feature_specs: Mapping[str, Any], where: str) -> dict[str, FeatureSpec]:
    """The checkpoint's video and music specs as FeatureSpecs; a checkpoint without them cannot be checked."""
    specs = {}
    for modality in ("video", "music"):
        if modality not in feature_specs:
            raise SpecMismatchError(
                f"{where}: the checkpoint records no {modality} feature spec, so it is unknown which encoder its "
                "features came from; re-save it with feature specs (mgsv train and mgsv convert record them)"
            )
        specs[modality] = FeatureSpec.from_dict(feature_specs[modality], where=f"{where} ({modality} spec)")
    return specs


class Grounder:
    """A grounding model, its frame encoder and a music library: grounds videos (see the module docstring)."""

    def __init__(
        self,
        model: torch.nn.Module,
        feature_specs: Mapping[str, FeatureSpec],
        library: MusicLibrary | str | os.PathLike[str],
        clip: ClipFrameEncoder | None = None,
        *,
        device: str = "cpu",
        precision: str = "fp32",
        search: SearchOptions | None = None,
        source: str = "model",
    ) -> None:
        from mgsv.inference.batched import PRECISIONS
        from mgsv.models.contract import model_fingerprint, require

        if precision not in PRECISIONS:
            raise OptionError("precision", f"must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        require(model, searchable=True, purpose="grounding in a music library")
        self.model = model.to(device).eval()
        self.video_spec = feature_specs["video"]
        self.music_spec = feature_specs["music"]
        self.device = device
        self.precision = precision
        self.source = source
        self.clip = clip
        self.search = search or SearchOptions()
        self.library = library if isinstance(library, MusicLibrary) else MusicLibrary(library)
        self.fingerprint = model_fingerprint(self.model)  # names the model's track index in every library
        if clip is not None:
            self.video_spec.check_compatible(clip.spec, what=f"CLIP encoder {clip.encoder_id} vs checkpoint {source}")
        self.music_spec.check_compatible(
            self.library.spec, what=f"library {self.library.root} vs checkpoint {source}"
        )

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | os.PathLike[str],
        library: MusicLibrary | str | os.PathLike[str],
        clip: str | os.PathLike[str] | ClipFrameEncoder | None = DEFAULT_CLIP_ID,
        *,
        encoder_id: str | None = None,
        dtype: str = "auto",
        device: str = "cpu",
        precision: str = "fp32",
        search: SearchOptions | None = None,
    ) -> Grounder:
        """Load a checkpoint folder and a CLIP encoder (hub id, local folder, a loaded encoder, or None)."""
        from mgsv.models.checkpoint import load_checkpoint

        model, info = load_checkpoint(checkpoint, map_location=device)
        specs = checkpoint_specs(info.feature_specs, str(checkpoint))
        if isinstance(clip, (str, os.PathLike)):
            from mgsv.encoders.clip import ClipFrameEncoder
            from mgsv.features.spec import recorded_choices

            try:  # CLIP decodes frames as the checkpoint's features were made
                choices = recorded_choices(specs["video"])
            except SpecMismatchError:
                choices = {}  # an old spec: the check in __init__ says how to re-make its features
            clip = ClipFrameEncoder.from_pretrained(clip, device=device, dtype=dtype, encoder_id=encoder_id,
                                                    **choices)
        return cls(model, specs, library, clip, device=device, precision=precision, search=search,
                   source=str(checkpoint))

    def prepare(self, progress: Progress | None = None) -> EncodedLibrary:
        """The library as this model sees it: its track index built or updated first if needed (`progress`
        reports the tracks encoded). Grounding calls it too; call it first to do that work before any video."""
        return self.library.encoded(self.model, self.device, progress, self.fingerprint, self.search)

    # -- grounding --------------------------------------------------------------------------------------------

    def ground(self, video: str | os.PathLike[str], options: GroundOptions | None = None) -> GroundingResult:
        """Decode a video file (as the checkpoint's video spec records) and ground it."""
        from mgsv.encoders.inputs import decode_video
        from mgsv.features.spec import decode_options

        options = options or GroundOptions()
        frames = decode_video(video, options.window_start, **decode_options(self.video_spec))
        return self.ground_frames(frames, options)

    def ground_frames(self, frames: VideoFrames, options: GroundOptions | None = None) -> GroundingResult:
        """Ground decoded frames (`mgsv.media.decode.read_video_frames`); CLIP encodes them here."""
        if self.clip is None:
            raise ValueError("this Grounder has no CLIP encoder: pass clip= or use ground_features")
        from mgsv.encoders.inputs import encode_video

        options = options or GroundOptions()
        feats, _ = encode_video(frames, self.clip)  # decoded again if not as CLIP's spec records
        result = self.ground_features(feats, frames.duration, options, source=str(frames.path))
        result.window_start = frames.window_start
        if frames.truncated:
            last = frames.timestamps[-1] + 1
            result.notes.append(
                f"the video is {frames.duration:.1f} s long: the model read seconds {frames.window_start:g}-{last:g} "
                "(`window_start` picks another part)"
            )
        return result

    def ground_features(
        self,
        frame_feats: np.ndarray,
        video_duration: float,
        options: GroundOptions | None = None,
        *,
        source: str = "video",
    ) -> GroundingResult:
        """Ground a video given its CLIP frame features [N, D] (made with the checkpoint's video spec)."""
        import torch

        from mgsv.inference.batched import autocast

        options = options or GroundOptions()
        feats = np.asarray(frame_feats, dtype=np.float32)
        if feats.ndim != 2 or feats.shape[1] != self.video_spec.dim or len(feats) == 0:
            raise InputError(source, f"frame features must be [frames, {self.video_spec.dim}], got {list(feats.shape)}")
        encoded = self.prepare()
        condition = options.filters
        if options.fit_duration:
            condition = condition.with_min_duration(video_duration)
        eligible = encoded.catalog.eligible(condition)
        if eligible is not None and not eligible.any():
            raise self._nothing_eligible(source, encoded, condition, options.fit_duration, video_duration)
        with torch.inference_mode():
            frames = torch.from_numpy(feats)[None].to(self.device)
            mask = torch.ones(frames.shape[:2], dtype=torch.bool, device=self.device)
            with autocast(self.precision, self.device):
                video = self.model.encode_video(frames, mask)
        query = video.embedding[0].float().cpu().numpy()
        candidates = encoded.candidates.search(query, self.search.candidates, eligible)
        scores = ranker.exact_scores(self.model, video, encoded.index, candidates)
        best = ranker.top_rows(scores, options.top)
        rows = candidates[best]
        music = self.model.index_encodings(encoded.index.entries(rows, self.device))
        predicted, centres = ranker.detect_moments(
            self.model, video, music, np.arange(len(rows)), self.precision, self.device
        )
        tracks = self.library.tracks_by_rowid(encoded.catalog.track_rowid[rows])
        moments = [
            self._moment(rank, track, float(score), float(start), float(end), float(centre), video_duration, options)
            for rank, (track, score, (start, end), centre) in enumerate(
                zip(tracks, scores[best], predicted, centres, strict=True), start=1
            )
        ]
        return GroundingResult(source, float(video_duration), options.window_start, len(feats), moments)

    def _nothing_eligible(
        self,
        source: str,
        encoded: EncodedLibrary,
        condition: TrackFilter,
        fit_duration: bool,
        video_duration: float,
    ) -> InputError:
        """The error for a search that no track can answer."""
        catalog = encoded.catalog
        longest_row = int(np.argmax(np.where(catalog.live, catalog.duration, -1.0)))
        longest = self.library.tracks_by_rowid([catalog.track_rowid[longest_row]])[0]
        if fit_duration and longest.duration < video_duration:
            return InputError(
                source,
                f"the video is {video_duration:.1f} s long but the longest track in the library is "
                f"{longest.duration:.1f} s ({longest.id}): no track can cover the whole video; ground without "
                "`fit_duration` to get the best partial moments",
            )
        return InputError(source, f"no track of the library matches the filters ({condition.describe()})")

    @staticmethod
    def _moment(
        rank: int,
        track: Track,
        score: float,
        start: float,
        end: float,
        centre: float,
        video_duration: float,
        options: GroundOptions,
    ) -> GroundedMoment:
        notes: list[str] = []
        too_short = track.duration < video_duration
        if options.fit_duration:
            placed = ranker.fit_to_length(centre, video_duration, track.duration)
            assert placed is not None  # tracks too short were not eligible
            start, end = placed
        else:
            start, end = ranker.clip_to_track(start, end, track.used_seconds)
            if too_short:
                notes.append(f"the track ({track.duration:.1f} s) is shorter than the video ({video_duration:.1f} s)")
        snapped = False
        if options.snap == "beats":
            from mgsv.search.beats import beat_times, snap_to_beat

            try:
                moved = snap_to_beat(start, end, beat_times(track.path, start), track.duration)
            except InputError as exc:
                notes.append(f"not snapped: cannot read the track ({exc.problem})")
            else:
                if moved is None:
                    notes.append("not snapped: no beat found near the start that keeps the moment inside the track")
                else:
                    start, end = moved
                    snapped = True
        return GroundedMoment(
            rank=rank,
            track_id=track.id,
            title=track.title,
            artist=track.artist,
            licence=track.licence,
            path=track.path,
            start_s=start,
            end_s=end,
            score=score,
            track_duration=track.duration,
            track_too_short=too_short,
            snapped=snapped,
            notes=tuple(notes),
        )


def render_moment(
    video: str | os.PathLike[str],
    moment: GroundedMoment,
    out: str | os.PathLike[str],
    video_duration: float,
    keep_audio: float = 0.0,
    force: bool = False,
) -> RenderResult:
    """Render `video` with the moment's track as its soundtrack, from the moment's start for the video's length.

    The music runs on past the predicted end when the track has more (a video needs sound to its last frame); it
    stops at the track's end, and `mgsv.media.render` fills the rest with silence.
    """
    from mgsv.media.render import render_with_music

    end = min(moment.start_s + video_duration, moment.track_duration)
    return render_with_music(video, Path(moment.path), moment.start_s, end, out=out, keep_audio=keep_audio, force=force)
