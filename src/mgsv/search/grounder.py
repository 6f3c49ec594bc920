"""The grounding service: a video in, the tracks of a music library that fit it and the moment of each out.

One service for every front door: `mgsv ground`, `mgsv serve` and Python all build a `Grounder` and call
`ground(video, GroundOptions(...))`; they only translate their inputs into options and the `GroundingResult` into
text or JSON.

    grounder = Grounder.from_checkpoint("runs/made/checkpoints/best_mor1_iou07", MusicLibrary("my-library"))
    result = grounder.ground("clip.mp4", GroundOptions(top=5, fit_duration=True))
    for moment in result.moments:
        print(moment.track_id, moment.start_s, moment.end_s, moment.score)

Steps: decode 1 fps frames (at most 50, from `window_start`), CLIP-encode them, `encode_video` (an `EncodedVideo`:
`encode` stops here, and `ground_encoded` grounds it with any options, as often as wanted), the K candidate
tracks of highest S0 among those the filters allow, exact p_s on them (the library's music-side work comes from
its per-model track index), the top k (by p_s, or `diverse`: `mgsv.search.diversity`), detection on them, moments
in seconds placed inside their tracks (see `mgsv.search.ranker`), best score first, each with up to
`alternatives` more moments of its track (`more_moments`, `mgsv.search.alternatives`). With K
(`SearchOptions.candidates`, 2,000 by default) at least the number of eligible tracks, every track is scored
exactly. Feature specs are checked at the boundary: CLIP's must be the checkpoint's video spec and the library's
its music spec.

Video longer than a track: by default every track is ranked, and a track shorter than the video gets its best
(partial) moment with `track_too_short=True`. With `fit_duration=True` every moment is exactly as long as the
video, so tracks shorter than the video are not eligible (a filter applied before the candidate stage); if no
track is long enough, grounding fails with a message naming the longest track.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mgsv.defaults import DEFAULT_CLIP_ID, MUSIC_HORIZON_S
from mgsv.errors import InputError, OptionError, SpecMismatchError
from mgsv.features.spec import FeatureSpec
from mgsv.features.store import UnknownIdsError
from mgsv.search import diversity, ranker
from mgsv.search.alternatives import MAX_ALTERNATIVES, Span, free_parts, part_windows, place_in_part
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

    rank: int  # 1 = best; 0 for `Grounder.more_moments` (moments of one track, outside a ranking)
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
    alternative: int = 0  # 0: the track's moment; n: its n-th other moment (`more_moments`)
    alternatives: tuple[GroundedMoment, ...] = ()  # other moments of the track (`GroundOptions.alternatives`)

    @property
    def duration(self) -> float:
        """Length of the moment in seconds."""
        return self.end_s - self.start_s

    @property
    def span(self) -> Span:
        """(start_s, end_s)."""
        return self.start_s, self.end_s

    def to_dict(self) -> dict[str, Any]:
        """The moment as plain JSON types (seconds rounded to milliseconds)."""
        data = asdict(replace(self, alternatives=()))
        for key in ("start_s", "end_s", "track_duration"):
            data[key] = round(data[key], 3)
        data["score"] = round(self.score, 6)
        data["notes"] = list(self.notes)
        data["alternatives"] = [other.to_dict() for other in self.alternatives]
        return data


@dataclass(frozen=True)
class EncodedVideo:
    """A video as the model read it (`Grounder.encode`): grounded with any options without reading it again."""

    source: str  # the file, or "video" for features given directly
    duration: float  # seconds of video in the file
    window_start: float  # the second the model's frames start at
    frames: int  # 1 fps frames the model read (at most 50)
    encoding: Any  # the model's encoding of this one video (opaque: `mgsv.models.contract`)
    notes: tuple[str, ...] = ()  # what reading the video noticed (e.g. only 50 s of a longer one were read)


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
        from mgsv.devices import device_name
        from mgsv.inference.batched import PRECISIONS
        from mgsv.models.contract import model_fingerprint, require

        if precision not in PRECISIONS:
            raise OptionError("precision", f"must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        require(model, searchable=True, purpose="grounding in a music library")
        device = device_name(device)
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
        from mgsv.devices import device_name
        from mgsv.models.checkpoint import load_checkpoint

        device = device_name(device)  # before anything is loaded: a device this machine lacks is refused first
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
        """Decode a video file and ground it."""
        options = options or GroundOptions()
        return self.ground_encoded(self.encode(video, options.window_start), options)

    def ground_frames(self, frames: VideoFrames, options: GroundOptions | None = None) -> GroundingResult:
        """Ground decoded frames (`mgsv.media.decode.read_video_frames`); CLIP encodes them here."""
        return self.ground_encoded(self.encode_frames(frames), options)

    def ground_features(
        self,
        frame_feats: np.ndarray,
        video_duration: float,
        options: GroundOptions | None = None,
        *,
        source: str = "video",
    ) -> GroundingResult:
        """Ground a video given its CLIP frame features [N, D] (made with the checkpoint's video spec)."""
        options = options or GroundOptions()
        video = self.encode_features(frame_feats, video_duration, source=source, window_start=options.window_start)
        return self.ground_encoded(video, options)

    # -- encoding a video once ---------------------------------------------------------------------------------

    def encode(self, video: str | os.PathLike[str], window_start: float = 0.0) -> EncodedVideo:
        """Decode a video file (50 s of 1 fps frames from `window_start`, as the checkpoint's video spec records)
        and encode it."""
        from mgsv.encoders.inputs import decode_video
        from mgsv.features.spec import decode_options

        if isinstance(window_start, bool) or not isinstance(window_start, (int, float)) or not window_start >= 0:
            raise OptionError("window_start", f"must be a number of seconds >= 0, got {window_start!r}")
        return self.encode_frames(decode_video(video, window_start, **decode_options(self.video_spec)))

    def encode_frames(self, frames: VideoFrames) -> EncodedVideo:
        """Encode decoded frames (`mgsv.media.decode.read_video_frames`); CLIP encodes them here."""
        if self.clip is None:
            raise ValueError("this Grounder has no CLIP encoder: pass clip= or use ground_features")
        from mgsv.encoders.inputs import encode_video

        feats, _ = encode_video(frames, self.clip)  # decoded again if not as CLIP's spec records
        notes = ()
        if frames.truncated:
            last = frames.timestamps[-1] + 1
            notes = (
                f"the video is {frames.duration:.1f} s long: the model read seconds {frames.window_start:g}-{last:g} "
                "(`window_start` picks another part)",
            )
        video = self.encode_features(feats, frames.duration, source=str(frames.path), window_start=frames.window_start)
        return replace(video, notes=notes)

    def encode_features(
        self, frame_feats: np.ndarray, video_duration: float, *, source: str = "video", window_start: float = 0.0
    ) -> EncodedVideo:
        """Encode a video given its CLIP frame features [N, D] (made with the checkpoint's video spec)."""
        import torch

        from mgsv.inference.batched import autocast

        feats = np.asarray(frame_feats, dtype=np.float32)
        if feats.ndim != 2 or feats.shape[1] != self.video_spec.dim or len(feats) == 0:
            raise InputError(source, f"frame features must be [frames, {self.video_spec.dim}], got {list(feats.shape)}")
        with torch.inference_mode():
            frames = torch.from_numpy(feats)[None].to(self.device)
            mask = torch.ones(frames.shape[:2], dtype=torch.bool, device=self.device)
            with autocast(self.precision, self.device):
                encoding = self.model.encode_video(frames, mask)
        return EncodedVideo(source, float(video_duration), float(window_start), len(feats), encoding)

    # -- grounding an encoded video ------------------------------------------------------------------------------

    def ground_encoded(self, video: EncodedVideo, options: GroundOptions | None = None) -> GroundingResult:
        """Ground an encoded video (`encode`); its own `window_start` holds, not the options'."""
        options = options or GroundOptions()
        encoded = self.prepare()
        condition = options.filters
        if options.fit_duration:
            condition = condition.with_min_duration(video.duration)
        eligible = encoded.catalog.eligible(condition)
        if eligible is not None and not eligible.any():
            raise self._nothing_eligible(video.source, encoded, condition, options.fit_duration, video.duration)
        query = video.encoding.embedding[0].float().cpu().numpy()
        candidates = encoded.candidates.search(query, self.search.candidates, eligible)
        scores = ranker.exact_scores(self.model, video.encoding, encoded.index, candidates, self.device)
        notes = list(video.notes)
        if options.diverse:
            best = self._diverse_top(encoded, candidates, scores, options, notes)
        else:
            best = ranker.top_rows(scores, options.top)
        rows = candidates[best]
        music = self.model.index_encodings(encoded.index.entries(rows, self.device))
        predicted, centres = ranker.detect_moments(
            self.model, video.encoding, music, np.arange(len(rows)), self.precision, self.device
        )
        tracks = self.library.tracks_by_rowid(encoded.catalog.track_rowid[rows])
        moments = [
            self._moment(rank, track, float(score), float(start), float(end), float(centre), video.duration, options)
            for rank, (track, score, (start, end), centre) in enumerate(
                zip(tracks, scores[best], predicted, centres, strict=True), start=1
            )
        ]
        if options.alternatives:
            found = self._alternatives(video, tracks, [(m.rank, m.score) for m in moments],
                                       [[m.span] for m in moments], options.alternatives, options)
            moments = [replace(m, alternatives=tuple(more)) for m, more in zip(moments, found, strict=True)]
        return GroundingResult(video.source, video.duration, video.window_start, video.frames, moments, notes)

    def _diverse_top(
        self, encoded: EncodedLibrary, candidates: np.ndarray, scores: np.ndarray, options: GroundOptions,
        notes: list[str],
    ) -> np.ndarray:
        """Positions in `candidates` of the diverse top k (`mgsv.search.diversity`); notes the tracks it left out."""
        plain = ranker.top_rows(scores, options.top)
        pool = ranker.top_rows(scores, diversity.pool_size(options.top))
        rows = candidates[pool]
        tracks = self.library.tracks_by_rowid(encoded.catalog.track_rowid[rows])
        order = diversity.diverse_order(scores[pool], encoded.index.embedding_rows(rows),
                                        [diversity.group_keys(t) for t in tracks], options.top, options.diverse_cosine)
        best = pool[order]
        left = [tracks[i].id for i, position in enumerate(pool.tolist())
                if position in set(plain.tolist()) - set(best.tolist())]  # fmt: skip
        if left:
            notes.append(
                f"`diverse`: {len(left)} track(s) of the top {options.top} by score gave way to others because they "
                f"sound like or share an artist or album with a better one: {', '.join(left)}"
            )
        return best

    # -- more moments of a track ---------------------------------------------------------------------------------

    def more_moments(
        self,
        video: EncodedVideo,
        track_id: str,
        avoid: Sequence[Span],
        options: GroundOptions | None = None,
        count: int = MAX_ALTERNATIVES,
    ) -> list[GroundedMoment]:
        """Up to `count` other moments of one track for `video`, none on a moment of `avoid` (start, end seconds:
        usually the moment grounding gave) nor on one another (see `mgsv.search.alternatives`). Fewer, or none,
        when the track has no room for more. `options` places them as grounding does (`fit_duration`, `snap`).

        Raises UnknownIdsError for a track not in the library, OptionError (`alternatives`, `avoid`) for a bad count
        or moment, and InputError (the track) when `fit_duration` asks for moments longer than the track.
        """
        options = options or GroundOptions()
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_ALTERNATIVES:
            raise OptionError("alternatives", f"must be a whole number from 1 to {MAX_ALTERNATIVES}, got {count!r}")
        spans = _check_spans(avoid)
        encoded = self.prepare()
        track = self.library.track(track_id)
        row = int(encoded.index.rows_of(np.array([track.content_hash], dtype="S64"))[0])
        if row < 0 or encoded.catalog.track_rowid[row] < 0:
            raise UnknownIdsError(str(self.library.root), [track_id])  # removed while this request ran
        if options.fit_duration and track.duration < video.duration:
            raise InputError(
                track.id,
                f"the track ({track.duration:.1f} s) is shorter than the video ({video.duration:.1f} s): it has no "
                "moment of the video's length (`fit_duration`)",
            )
        score = float(ranker.exact_scores(self.model, video.encoding, encoded.index, np.array([row]), self.device)[0])
        return self._alternatives(video, [track], [(0, score)], [spans], count, options)[0]

    def _alternatives(
        self,
        video: EncodedVideo,
        tracks: list[Track],
        ranked: list[tuple[int, float]],
        avoid: list[list[Span]],
        count: int,
        options: GroundOptions,
    ) -> list[list[GroundedMoment]]:
        """Up to `count` more moments for each track (`ranked`: the rank and score its moments carry), the n-th
        avoiding `avoid[i]` and the n - 1 found before it (`mgsv.search.alternatives`); each round encodes the free
        parts of every track at once, scores them, and detects in the best part of each track."""
        import torch

        from mgsv.inference.batched import autocast, concat_encodings

        stride = float(self.music_spec.params.get("stride_s", MUSIC_HORIZON_S / self.music_spec.max_tokens))
        feats, mask = self.library.features().batch([t.content_hash for t in tracks])
        # Windows past the last valid one are padding (a window is valid when its centre is within the track).
        windows = [int(np.flatnonzero(row).max(initial=-1)) + 1 for row in mask.numpy()]
        avoid = [list(spans) for spans in avoid]
        found: list[list[GroundedMoment]] = [[] for _ in tracks]
        active = list(range(len(tracks)))
        known: dict[tuple[int, int, int], tuple[float, Any]] = {}  # (track, first, stop) -> (p_s, encoding)
        for _ in range(count):
            parts = []  # (track, part, first window, stop window)
            for i in active:
                for part in free_parts(tracks[i].used_seconds, avoid[i], video.duration):
                    first, stop = part_windows(part, stride, windows[i])
                    if stop > first:
                        parts.append((i, part, first, stop))
            if not parts:
                break
            # A part the last round left alone is the same part again: only new ones are encoded and scored.
            new = [(i, first, stop) for i, _, first, stop in parts if (i, first, stop) not in known]
            if new:
                longest = max(stop - first for _, first, stop in new)
                part_feats = feats.new_zeros((len(new), longest, feats.shape[2]))
                part_mask = torch.zeros((len(new), longest), dtype=torch.bool, device="cpu")  # host, as `mask`
                for number, (i, first, stop) in enumerate(new):
                    part_feats[number, : stop - first] = feats[i, first:stop]
                    part_mask[number, : stop - first] = mask[i, first:stop]
                with torch.inference_mode(), autocast(self.precision, self.device):
                    music = self.model.encode_music(part_feats.to(self.device), part_mask.to(self.device))
                    relevance = self.model.relevance(video.encoding, music)[0].float().cpu().numpy()
                for number, key in enumerate(new):
                    known[key] = (float(relevance[number]), music.select([number]))
            best: dict[int, tuple[Span, int, int]] = {}  # track -> its part of highest relevance (the first of ties)
            for i, part, first, stop in parts:
                if i not in best or known[(i, first, stop)][0] > known[(i, *best[i][1:])][0]:
                    best[i] = (part, first, stop)
            music = concat_encodings([known[(i, first, stop)][1] for i, (_, first, stop) in best.items()])
            predicted, _ = ranker.detect_moments(
                self.model, video.encoding, music, np.arange(len(best)), self.precision, self.device
            )
            for (i, (part, first, _)), (start, end) in zip(best.items(), predicted, strict=True):
                offset = first * stride  # the part's window 0 is the track's window `first`
                length = video.duration if options.fit_duration else None
                start, end = place_in_part(part, float(start) + offset, float(end) + offset, length)
                rank, score = ranked[i]
                other = self._finish(rank, tracks[i], score, start, end, video.duration, options, [])
                found[i].append(replace(other, alternative=len(found[i]) + 1))
                avoid[i].append(other.span)
            active = list(best)
        return found

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

    @classmethod
    def _moment(
        cls,
        rank: int,
        track: Track,
        score: float,
        start: float,
        end: float,
        centre: float,
        video_duration: float,
        options: GroundOptions,
    ) -> GroundedMoment:
        """A predicted moment placed inside its track (`mgsv.search.ranker`), snapped if asked."""
        notes: list[str] = []
        if options.fit_duration:
            placed = ranker.fit_to_length(centre, video_duration, track.duration)
            assert placed is not None  # tracks too short were not eligible
            start, end = placed
        else:
            start, end = ranker.clip_to_track(start, end, track.used_seconds)
            if track.duration < video_duration:
                notes.append(f"the track ({track.duration:.1f} s) is shorter than the video ({video_duration:.1f} s)")
        return cls._finish(rank, track, score, start, end, video_duration, options, notes)

    @staticmethod
    def _finish(
        rank: int,
        track: Track,
        score: float,
        start: float,
        end: float,
        video_duration: float,
        options: GroundOptions,
        notes: list[str],
    ) -> GroundedMoment:
        """A placed moment, its start snapped onto a beat if asked."""
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
            track_too_short=track.duration < video_duration,
            snapped=snapped,
            notes=tuple(notes),
        )


def _check_spans(avoid: Sequence[Span]) -> list[Span]:
    """Moments to avoid as (start, end) floats; OptionError (`avoid`) unless each is 0 <= start < end, finite."""
    spans = []
    for item in avoid:
        try:
            start, end = (float(x) for x in item)
        except (TypeError, ValueError) as exc:
            raise OptionError("avoid", f"each moment must be (start_s, end_s), got {item!r}") from exc
        if not (np.isfinite(start) and np.isfinite(end) and 0 <= start < end):
            raise OptionError("avoid", f"each moment must satisfy 0 <= start_s < end_s, got {start:g}-{end:g}")
        spans.append((start, end))
    return spans


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
