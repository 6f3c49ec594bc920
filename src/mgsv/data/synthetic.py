"""Planted-signal benchmark: MGSV-EC-shaped data whose true track and moment are known.

Real MGSV-EC features need the internet; this generator builds a dataset folder of any size (annotation CSVs with
the 16 MGSV-EC columns + a feature store) in which matching and detection are learnable, so that training,
evaluation and model comparisons can run on this machine with a known answer.

How the signal is planted:
- A track is a sequence of AST-like 768-d tokens, one per 2.5 s window centre up to its duration (as the real
  mask), with temporal structure: a track identity vector, a few sections each with its own style vector, and a
  slow AR(1) drift, so neighbouring windows are similar and distant sections differ.
- A query video uses a moment [start, start + duration] of one track. Its CLIP-like 512-d frame tokens (one per
  second, as the real pipeline) are a fixed non-linear map of the music token at the frame's time in the moment
  (linear interpolation between window centres), plus a per-video offset (visual content unrelated to the music)
  and per-frame noise.
- Tracks are re-used across videos (about 14 videos per track in MGSV-EC's train split); val and test each hold
  every track at most once, like the official splits. About 23% of moments start at 0 s, as in MGSV-EC, so the
  start-zero baseline is a meaningful bar.

Every item is drawn from its own seeded generator (seed, kind, index), so the dataset does not depend on the
order or chunking of generation.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mgsv.atomic_io import atomic_writer
from mgsv.data.annotations import COLUMNS
from mgsv.defaults import MUSIC_HORIZON_S as HORIZON_S
from mgsv.errors import MgsvError, OutputExistsError
from mgsv.features.spec import FeatureSpec

GENERATOR_VERSION = 1
ENCODER_ID = "mgsv/synthetic-planted"
STRIDE_S = 2.5
MAX_FRAMES = 50
MAX_SEGMENTS = 96
CATEGORIES = ("Fashion", "Beauty", "Food", "Travel", "Pets", "Sports", "Home Furnishings", "Games")

# Streams of the per-item generators: (seed, stream, index) -> np.random.Generator.
_STREAM_TRACK, _STREAM_VIDEO, _STREAM_MAP, _STREAM_LAYOUT = 1, 2, 3, 4


@dataclass(frozen=True)
class SyntheticConfig:
    """Size and difficulty of a planted-signal dataset."""

    num_tracks: int = 400
    num_train_videos: int = 5600
    val_size: int = 200
    test_size: int = 200
    seed: int = 0
    video_dim: int = 512
    music_dim: int = 768
    min_track_s: float = 30.0
    max_track_s: float = 239.9
    min_video_s: float = 5.2
    max_video_s: float = 49.5
    start_at_zero: float = 0.23
    frame_noise: float = 0.5
    video_offset: float = 0.5
    min_sections: int = 3
    max_sections: int = 8

    def __post_init__(self) -> None:
        problems = []
        if self.num_tracks < 1 or self.num_train_videos < 1:
            problems.append("num_tracks and num_train_videos must be >= 1")
        if max(self.val_size, self.test_size) > self.num_tracks:
            problems.append(
                f"val_size ({self.val_size}) and test_size ({self.test_size}) cannot exceed num_tracks "
                f"({self.num_tracks}): each split holds every track at most once"
            )
        if not (0 < self.min_video_s <= self.max_video_s and self.min_video_s <= self.min_track_s
                <= self.max_track_s <= HORIZON_S):
            problems.append("durations must satisfy 0 < min_video <= max_video, min_video <= min_track <= max_track <= 240")
        if not 0.0 <= self.start_at_zero <= 1.0:
            problems.append("start_at_zero must be a fraction in [0, 1]")
        if not 1 <= self.min_sections <= self.max_sections:
            problems.append("need 1 <= min_sections <= max_sections")
        if problems:
            raise MgsvError("invalid synthetic dataset config: " + "; ".join(problems))

    @property
    def num_videos(self) -> int:
        """All query videos: train + val + test."""
        return self.num_train_videos + self.val_size + self.test_size

    def feature_specs(self) -> dict[str, FeatureSpec]:
        """Specs that tie a store to this generator and its parameters (another seed is another feature space)."""
        params = {"generator_version": GENERATOR_VERSION, **dataclasses.asdict(self)}
        return {
            "video": FeatureSpec("video", ENCODER_ID, self.video_dim, MAX_FRAMES, params),
            "music": FeatureSpec("music", ENCODER_ID, self.music_dim, MAX_SEGMENTS, params),
        }


def _rng(seed: int, stream: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream, index])


def num_segments(duration_s: float) -> int:
    """Valid AST windows of a track: centres 0, 2.5, ... that are <= its duration (docs/official-code.md), at most 96."""
    return min(MAX_SEGMENTS, math.floor(duration_s / STRIDE_S) + 1)


def num_frames(duration_s: float) -> int:
    """Frames at 1 fps of a video starting at 0 s: whole seconds 0..floor(duration), at most 50 (docs/official-code.md)."""
    return min(MAX_FRAMES, math.floor(duration_s) + 1)


class PlantedSignal:
    """Generates the tokens of tracks and query videos for one config."""

    def __init__(self, config: SyntheticConfig) -> None:
        self.config = config
        rng = _rng(config.seed, _STREAM_MAP, 0)
        # The fixed "visual rendering" of music: a random projection followed by tanh.
        self.music_to_video = (
            rng.standard_normal((config.music_dim, config.video_dim), dtype=np.float32) / math.sqrt(config.music_dim)
        )
        layout = _rng(config.seed, _STREAM_LAYOUT, 0)
        self.track_durations = np.round(layout.uniform(config.min_track_s, config.max_track_s, config.num_tracks), 3)

    def track_tokens(self, track: int) -> np.ndarray:
        """Tokens [n_valid, music_dim] of a track: identity + section style + slow drift, unit-variance scale."""
        cfg = self.config
        rng = _rng(cfg.seed, _STREAM_TRACK, track)
        n = num_segments(float(self.track_durations[track]))
        identity = rng.standard_normal(cfg.music_dim)
        n_sections = int(rng.integers(cfg.min_sections, cfg.max_sections + 1))
        styles = rng.standard_normal((n_sections, cfg.music_dim))
        cuts = np.sort(rng.choice(np.arange(1, max(n, 2)), size=min(n_sections - 1, max(n - 1, 0)), replace=False))
        section_of = np.searchsorted(cuts, np.arange(n), side="right")
        drift = np.empty((n, cfg.music_dim))
        drift[0] = rng.standard_normal(cfg.music_dim)
        innovations = rng.standard_normal((n, cfg.music_dim)) * math.sqrt(1 - 0.8**2)
        for i in range(1, n):
            drift[i] = 0.8 * drift[i - 1] + innovations[i]
        tokens = 0.5 * identity + 0.6 * styles[section_of] + 0.6 * drift
        return (tokens / np.sqrt(0.5**2 + 0.6**2 + 0.6**2)).astype(np.float32)

    def music_at(self, tokens: np.ndarray, times_s: np.ndarray) -> np.ndarray:
        """The music token at arbitrary times: linear interpolation between window centres."""
        position = np.clip(times_s / STRIDE_S, 0, len(tokens) - 1)
        lower = np.floor(position).astype(int)
        upper = np.minimum(lower + 1, len(tokens) - 1)
        weight = (position - lower)[:, None]
        return (1 - weight) * tokens[lower] + weight * tokens[upper]

    def video_tokens(self, video: int, track_tokens: np.ndarray, start_s: float, duration_s: float) -> np.ndarray:
        """Frame tokens [n_frames, video_dim] of a video showing the moment [start, start + duration]."""
        cfg = self.config
        rng = _rng(cfg.seed, _STREAM_VIDEO, video)
        frame_times = start_s + np.minimum(np.arange(num_frames(duration_s), dtype=float), duration_s)
        music = self.music_at(track_tokens, frame_times).astype(np.float32)
        signal = np.tanh(music @ self.music_to_video * np.float32(1.5))
        offset = rng.standard_normal(cfg.video_dim, dtype=np.float32) * np.float32(cfg.video_offset)
        noise = rng.standard_normal(signal.shape, dtype=np.float32) * np.float32(cfg.frame_noise)
        return signal + offset + noise


def _draw_queries(config: SyntheticConfig, durations: np.ndarray) -> pd.DataFrame:
    """Which track, moment and split each query video gets (annotation rows, MGSV-EC columns)."""
    rng = _rng(config.seed, _STREAM_LAYOUT, 1)
    splits = (
        ["train"] * config.num_train_videos + ["val"] * config.val_size + ["test"] * config.test_size
    )
    tracks = np.concatenate(
        [
            rng.integers(0, config.num_tracks, config.num_train_videos),
            rng.permutation(config.num_tracks)[: config.val_size],  # distinct tracks, as the official val split
            rng.permutation(config.num_tracks)[: config.test_size],
        ]
    )
    n = len(tracks)
    track_s = durations[tracks]
    video_s = np.round(rng.uniform(config.min_video_s, np.minimum(config.max_video_s, track_s)), 3)
    at_zero = rng.random(n) < config.start_at_zero
    start = np.where(at_zero, 0.0, np.round(rng.uniform(0, 1, n) * (track_s - video_s), 3))
    end = np.minimum(np.round(start + video_s, 3), track_s)
    fps = rng.choice([25, 30, 60], n)
    return pd.DataFrame(
        {
            "video_id": [str(100_000_000_000 + i) for i in range(n)],
            "music_id": [f"syn+{t:06d}" for t in tracks],
            "video_start": 0.0,
            "video_end": video_s,
            "music_start": start,
            "music_end": end,
            "music_total_duration": track_s,
            "video_segment_duration": video_s,
            "music_segment_duration": np.round(end - start, 3),
            "music_path": [f"synthetic/track-{t:06d}" for t in tracks],
            "video_total_duration": video_s,
            "video_width": 720,
            "video_height": 1280,
            "video_total_frames": np.round(video_s * fps).astype(int),
            "video_frame_rate": fps,
            "video_category": rng.choice(CATEGORIES, n),
            "split": splits,
            "track_index": tracks,
        }
    )


@dataclass
class SyntheticDataset:
    """The annotations of a planted-signal dataset and a generator of its tokens."""

    config: SyntheticConfig
    signal: PlantedSignal
    queries: pd.DataFrame  # MGSV-EC columns + "split" and "track_index"

    @classmethod
    def build(cls, config: SyntheticConfig) -> SyntheticDataset:
        """Draw the layout (tracks, moments, splits); tokens are generated lazily."""
        signal = PlantedSignal(config)
        return cls(config, signal, _draw_queries(config, signal.track_durations))

    def annotations(self, split: str) -> pd.DataFrame:
        """The rows of one split with exactly the 16 MGSV-EC columns."""
        rows = self.queries[self.queries["split"] == split]
        return rows.loc[:, list(COLUMNS)].reset_index(drop=True)

    def iter_tracks(self) -> Iterator[tuple[str, np.ndarray]]:
        """(music_id, tokens [n_valid, music_dim]) for every track."""
        for track in range(self.config.num_tracks):
            yield f"syn+{track:06d}", self.signal.track_tokens(track)

    def iter_videos(self, track_cache: dict[int, np.ndarray] | None = None) -> Iterator[tuple[str, np.ndarray]]:
        """(video_id, tokens [n_frames, video_dim]) for every query video, in row order."""
        cache = track_cache if track_cache is not None else {}
        for index, row in enumerate(self.queries.itertuples(index=False)):
            track = int(row.track_index)
            if track not in cache:
                cache[track] = self.signal.track_tokens(track)
            yield row.video_id, self.signal.video_tokens(index, cache[track], row.music_start, row.video_end)


def write_synthetic_dataset(out: str | Path, config: SyntheticConfig, force: bool = False) -> Path:
    """Write a dataset folder (train/val/test CSVs + features/) for `config`; returns its path.

    The CSVs are written last, so a folder with CSVs always has a complete feature store.
    """
    from mgsv.features.store import FeatureStore

    out = Path(out)
    csv_names = [f"{split}_data.csv" for split in ("train", "val", "test")]
    existing = [name for name in (*csv_names, "features") if (out / name).exists()]
    if existing and not force:
        raise OutputExistsError(f"{out}: already holds {', '.join(existing)}; pass --force to replace it")
    if force:
        _remove_outputs(out, csv_names)
    out.mkdir(parents=True, exist_ok=True)

    dataset = SyntheticDataset.build(config)
    store = FeatureStore.create(out / "features", config.feature_specs())
    tracks: dict[int, np.ndarray] = {}
    with store.writer("music") as writer:
        for track, (music_id, tokens) in enumerate(dataset.iter_tracks()):
            tracks[track] = tokens
            writer.add(music_id, tokens, np.ones(len(tokens), dtype=bool))
    with store.writer("video") as writer:
        for video_id, tokens in dataset.iter_videos(tracks):
            writer.add(video_id, tokens, np.ones(len(tokens), dtype=bool))
    for split, name in zip(("train", "val", "test"), csv_names):
        _write_csv(dataset.annotations(split), out / name)
    return out


def _remove_outputs(out: Path, csv_names: list[str]) -> None:
    import shutil

    for name in csv_names:
        (out / name).unlink(missing_ok=True)
    if (out / "features").exists():
        shutil.rmtree(out / "features")


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    with atomic_writer(path, newline="") as handle:
        frame.to_csv(handle, index=False)
