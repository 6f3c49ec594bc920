"""`mgsv demo`: the whole pipeline, offline, in a couple of minutes on a laptop CPU.

1. A music library: real tracks from Debian's game-music packages when installed, generated tracks otherwise,
   AST-encoded with a TINY random AST (real encoders cannot be downloaded offline).
2. Query videos with a planted answer: music-visualiser clips cut from moments of those tracks (see `visuals`),
   CLIP-encoded with a tiny random CLIP.
3. A small MaDe trained for about a minute on them (`mgsv train` with the official recipe, smaller sizes).
4. A held-out query video grounded against the library (`mgsv ground`), and rendered with the top moment as its
   soundtrack (`mgsv render`).

The model is a demo: it has learned to read these visualiser videos, nothing about real videos or real music.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from mgsv.data.annotations import COLUMNS
from mgsv.errors import OutputExistsError

log = logging.getLogger(__name__)

MARKER = ".mgsv-demo"
LOOKS = 3  # renderings of each second (colour cast, noise) the query videos draw from
# A small MaDe; dropout as the paper's text (0.1) rather than the official 0.8, which needs far longer training.
DEMO_MODEL = {"dim": 64, "enhance_ffn_dim": 128, "detr_ffn_dim": 128, "decoder_layers": 3, "enhance_dropout": 0.1,
              "xpool_dropout": 0.1}
NEXT_STEPS = """\
This was a DEMO: tiny random encoders and a model trained for a minute on music-visualiser videos made from the
music itself. It shows the pipeline end to end; it knows nothing about real videos. For real use:
  1. Encoders: run once with network access (or copy the folders) to cache `openai/clip-vit-base-patch32` and
     `MIT/ast-finetuned-audioset-10-10-0.4593` (docs/encoders.md).
  2. Data: `mgsv data fetch --out data/MGSV-EC --import` (MGSV-EC features from the Hugging Face dataset xxayt/MGSV-EC).
  3. Train: `mgsv train --preset made --data data/MGSV-EC --out runs/made`, then `mgsv eval runs/made --split test`.
  4. Ground your videos: `mgsv library add ~/music --library lib`, then
     `mgsv ground clip.mp4 --library lib --checkpoint runs/made/checkpoints/best_mor1_iou07 --render out.mp4`."""


@dataclass
class DemoResult:
    """Where the demo put things, and what it found."""

    out: Path
    music_source: str
    tracks: int
    library: Path
    data: Path
    run: Path
    checkpoint: Path
    query_video: Path
    truth: tuple[str, float, float]  # (track id, start s, end s)
    moments: list = field(default_factory=list)
    rendered: Path | None = None
    seconds: dict[str, float] = field(default_factory=dict)


def prepare_folder(out: Path, force: bool) -> None:
    """A fresh demo folder: an earlier demo's folder is replaced; anything else is refused."""
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).exists() and not force:
            raise OutputExistsError(f"{out}: exists and is not an mgsv demo folder; choose another --out or --force")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by mgsv demo; safe to delete\n")


def run_demo(out: Path, epochs: int = 30, force: bool = False, say: Callable[[str], None] = print) -> DemoResult:
    """Run every step of the demo in `out` (see the module docstring)."""
    from mgsv.demo.music import find_debian_music, synthesize_tracks
    from mgsv.encoders.ast import AstMusicEncoder
    from mgsv.encoders.clip import ClipFrameEncoder
    from mgsv.encoders.tiny import make_tiny_ast, make_tiny_clip
    from mgsv.search.library import MusicLibrary

    timings: dict[str, float] = {}
    clock = time.perf_counter()
    prepare_folder(out, force)

    music = find_debian_music()
    source = f"{len(music)} tracks from Debian's game-music packages"
    if not music:
        music = synthesize_tracks(out / "music")
        source = f"{len(music)} generated tracks (install wesnoth-1.16-music etc. for real music)"
    say(f"[1/5] music library: {source}")
    clip_dir = make_tiny_clip(out / "encoders" / "tiny-clip", vision_only=True, init_scale=3.0)
    ast_dir = make_tiny_ast(out / "encoders" / "tiny-ast")
    clip = ClipFrameEncoder.from_pretrained(clip_dir, dtype="float32", batch_size=256)
    ast = AstMusicEncoder.from_pretrained(ast_dir, dtype="float32", batch_size=32)
    library = MusicLibrary.open_or_create(out / "library", ast.spec)
    report = library.add_files(music, ast)
    tracks = [t for t in library.tracks() if t.used_seconds >= 20]
    timings["library"] = time.perf_counter() - clock

    say(f"[2/5] query videos: music-visualiser clips cut from {len(tracks)} tracks (tiny random CLIP)")
    clock = time.perf_counter()
    data = out / "data"
    queries, profiles = build_dataset(data, tracks, clip, library)
    timings["videos"] = time.perf_counter() - clock

    say(f"[3/5] training a small MaDe for {epochs} epochs on {len(queries[queries.split == 'train'])} videos")
    clock = time.perf_counter()
    run = out / "run"
    checkpoint = train_demo_model(data, run, epochs)
    timings["training"] = time.perf_counter() - clock

    say("[4/5] grounding a held-out video against the library")
    clock = time.perf_counter()
    from mgsv.demo.visuals import render_frames, write_video
    from mgsv.search.grounder import Grounder, render_moment

    query = queries[queries.split == "test"].iloc[0]
    seconds = np.arange(query.music_start, query.music_start + query.video_end)
    video = write_video(out / "query-video.mp4", render_frames(profiles[query.music_id], seconds))
    grounder = Grounder.from_checkpoint(checkpoint, clip=clip)
    moments = grounder.ground(video, library, top=5, fit_duration=True)
    timings["grounding"] = time.perf_counter() - clock

    say("[5/5] rendering the video with the top moment as its soundtrack")
    clock = time.perf_counter()
    rendered = out / "query-video-with-music.mp4"
    render_moment(video, moments[0], rendered, video_duration=float(query.video_end))
    timings["render"] = time.perf_counter() - clock
    del report
    return DemoResult(out, source, len(tracks), library.root, data, run, checkpoint, video,
                      (str(query.music_id), float(query.music_start), float(query.music_end)), moments, rendered,
                      timings)


def _draw_queries(tracks: list, per_track: int, rng: np.random.Generator) -> pd.DataFrame:
    """Train queries (`per_track` per track) plus one val and one test query per track."""
    rows = []
    for split, count in (("train", per_track), ("val", 1), ("test", 1)):
        for track in tracks:
            for _ in range(count):
                length = float(min(rng.uniform(6, 25), track.used_seconds - 2))
                start = 0.0 if rng.random() < 0.2 else float(np.floor(rng.uniform(0, track.used_seconds - length)))
                rows.append((split, track.id, start, length, track.used_seconds, track.path))
    frame = pd.DataFrame(rows, columns=["split", "music_id", "music_start", "video_end", "music_total_duration",
                                        "music_path"])
    frame["video_id"] = [str(900_000_000_000 + i) for i in range(len(frame))]
    frame["video_start"] = 0.0
    frame["music_end"] = frame.music_start + frame.video_end
    frame["video_segment_duration"] = frame.video_end
    frame["music_segment_duration"] = frame.video_end
    frame["video_total_duration"] = frame.video_end
    frame["video_width"] = frame["video_height"] = 224
    frame["video_total_frames"] = (frame.video_end * 4).round().astype(int)
    frame["video_frame_rate"] = 4
    frame["video_category"] = "Demo"
    return frame


def build_dataset(folder: Path, tracks: list, clip, library, per_track: int = 40, seed: int = 0):
    """A dataset folder (CSVs + features) of visualiser queries over the library's tracks; returns (rows, profiles).

    Every second of every track is drawn and CLIP-encoded once in a few looks (colour cast + noise); a query video
    takes one look of each second of its moment, so thousands of query frames cost a few hundred encodings.
    """
    from mgsv.demo.visuals import band_profile, render_frames
    from mgsv.features.store import FeatureStore
    from mgsv.media.decode import read_audio

    rng = np.random.default_rng(seed)
    profiles = {t.id: band_profile(read_audio(t.path, max_seconds=t.used_seconds)) for t in tracks}
    looks = {}
    for track in tracks:
        seconds = np.arange(len(profiles[track.id]))
        looks[track.id] = np.stack([
            clip.encode(render_frames(profiles[track.id], seconds, cast=rng.uniform(0.8, 1.2, 3).astype(np.float32),
                                      noise=8.0, rng=rng), source=f"demo visuals of {track.id}")
            for _ in range(LOOKS)
        ])
    queries = _draw_queries(tracks, per_track, rng)
    store = FeatureStore.create(folder / "features", {"video": clip.spec, "music": library.spec})
    table = library.features()
    with store.writer("music") as writer:
        for track in tracks:
            tokens, mask = table.get(track.content_hash)
            writer.add(track.id, np.asarray(tokens, dtype=np.float32), np.asarray(mask, dtype=bool))
    with store.writer("video") as writer:
        for row in queries.itertuples():
            table_of_track = looks[row.music_id]
            seconds = np.arange(row.music_start, row.music_start + row.video_end)[:50].astype(int)
            seconds = np.minimum(seconds, table_of_track.shape[1] - 1)
            look = rng.integers(0, LOOKS, len(seconds))
            writer.add(row.video_id, table_of_track[look, seconds], np.ones(len(seconds), dtype=bool))
    for split in ("train", "val", "test"):
        rows = queries[queries.split == split].loc[:, list(COLUMNS)]
        rows.to_csv(folder / f"{split}_data.csv", index=False)
    return queries, profiles


def train_demo_model(data: Path, run: Path, epochs: int) -> Path:
    """Train the demo's MaDe (official recipe, small sizes, paper dropout); returns its best-R@1 checkpoint."""
    from mgsv.features.store import FeatureStore
    from mgsv.training.trainer import TrainSettings, Trainer

    specs = FeatureStore(data / "features").specs
    model = {**DEMO_MODEL, "video_dim": specs["video"].dim, "music_dim": specs["music"].dim}
    recipe = {"epochs": epochs, "batch_size": 32, "min_epochs": epochs, "eval_batch_size": 128}
    trainer = Trainer(TrainSettings(preset="made", data_dir=data, out_dir=run, model_overrides=model,
                                    recipe_overrides=recipe, precision="bf16", progress=True))
    trainer.fit()
    return run / "checkpoints" / "best_r1"
