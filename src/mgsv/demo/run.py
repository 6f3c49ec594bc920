"""`mgsv demo`: the whole pipeline, offline, in about two minutes on 2 CPU cores.

1. A music library: one-minute excerpts of real tracks from Debian's game-music packages when installed, generated
   tracks otherwise, AST-encoded with a TINY random AST (real encoders cannot be downloaded offline).
2. Query videos with a planted answer: music-visualiser clips cut from moments of those tracks (see `visuals`),
   CLIP-encoded with a tiny random CLIP.
3. A small MaDe trained for about a minute on them (`mgsv train`'s trainer, smaller sizes, a faster recipe).
4. A held-out query video grounded against the library (`mgsv ground`), and rendered with the top moment as its
   soundtrack (`mgsv render`).

The model is a demo: it has learned to read these visualiser videos, nothing about real videos or real music.
What makes it fast (measured on 2 cores): one-minute excerpts (encoding, rendering and training all scale with the
music's length, and a minute of music has fewer look-alike moments), 2 attention heads of 32 dims instead of 8 of 8
(3x faster per epoch), float32 (bf16 autocast was slower for a model this small), no dropout and lr 1e-3.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mgsv.data.annotations import COLUMNS
from mgsv.demo import EPOCHS
from mgsv.errors import InputError, OptionError, OutputExistsError

log = logging.getLogger(__name__)

MARKER = ".mgsv-demo"
LOOKS = 3  # renderings of each second (each with its own noise) the training videos draw from
NOISE = 8.0  # standard deviation of the pictures' pixel noise (of 255)
EXCERPT_S = 60.0  # seconds of each Debian track in the library
QUERY_SECONDS = (10, 25)  # query video lengths, whole seconds (inclusive)
TRAIN_PER_TRACK = 120  # training videos per track
# A small MaDe; no dropout (the official 0.8, or even the paper's 0.1, needs far longer training).
DEMO_MODEL = {"dim": 64, "enhance_ffn_dim": 128, "detr_ffn_dim": 128, "decoder_layers": 3, "enhance_heads": 2,
              "detr_heads": 2, "enhance_dropout": 0.0, "xpool_dropout": 0.0, "detr_dropout": 0.0}
DEMO_RECIPE = {"batch_size": 32, "eval_batch_size": 128,
               "lr": {"enhancement": 1e-3, "matching": 1e-3, "detection": 1e-3}}
NEXT_STEPS = """\
This was a DEMO: tiny random encoders and a model trained for about a minute on music-visualiser videos made from
the music itself. It shows the pipeline end to end; it knows nothing about real videos. For real use:
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
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per stage
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # CPU time per stage (all threads)


def prepare_folder(out: Path, force: bool) -> None:
    """A fresh demo folder: an earlier demo's folder is replaced; anything else is refused unless `force`.

    Never replaced, even with `force`: the current folder, one of its parents, and the home folder.
    """
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).exists() and not force:
            raise OutputExistsError(f"{out}: exists and is not an mgsv demo folder; choose another `out` or "
                                    "`force` (nothing was changed)")
        here = Path.cwd().resolve()
        if out.resolve() in (here, *here.parents, Path.home().resolve()):
            raise OutputExistsError(f"{out}: refusing to replace the current folder, a parent of it or the home "
                                    "folder, even with --force; choose another --out")
        shutil.rmtree(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / MARKER).write_text("made by mgsv demo; safe to delete\n")
    except OSError as exc:
        raise InputError(out, f"cannot create the demo folder: {exc.strerror or exc}") from exc


@contextlib.contextmanager
def _one_torch_thread() -> Iterator[None]:
    """Run torch on one thread: the demo's models are too small to gain from more, and on a busy 2-core machine
    two threads waiting on each other made training epochs 10-17x slower (measured)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class _Stages:
    """Wall and CPU time of each stage of the demo."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        yield
        self.wall[name] = time.perf_counter() - wall
        self.cpu[name] = time.process_time() - cpu


def run_demo(out: Path, epochs: int = EPOCHS, force: bool = False, say: Callable[[str], None] = print) -> DemoResult:
    """Run every step of the demo in `out` (see the module docstring)."""
    if epochs < 1:
        raise OptionError("epochs", f"must be at least 1, got {epochs}")
    prepare_folder(out, force)
    with _one_torch_thread():
        return _run(out, epochs, say)


def _run(out: Path, epochs: int, say: Callable[[str], None]) -> DemoResult:
    from mgsv.demo.music import excerpt_tracks, find_debian_music, synthesize_tracks
    from mgsv.encoders.ast import AstMusicEncoder
    from mgsv.encoders.clip import ClipFrameEncoder
    from mgsv.encoders.tiny import make_tiny_ast, make_tiny_clip
    from mgsv.search.library import MusicLibrary

    stages = _Stages()
    with stages.stage("library"):
        music = find_debian_music()
        if music:
            source = f"{len(music)} one-minute excerpts of tracks from Debian's game-music packages"
            say(f"[1/5] music library: {source}")
            music = excerpt_tracks(music, out / "music", EXCERPT_S)
        else:
            music = synthesize_tracks(out / "music")
            source = f"{len(music)} generated tracks (install wesnoth-1.16-music etc. for real music)"
            say(f"[1/5] music library: {source}")
        clip_dir = make_tiny_clip(out / "encoders" / "tiny-clip", vision_only=True, init_scale=3.0)
        ast_dir = make_tiny_ast(out / "encoders" / "tiny-ast")
        clip = ClipFrameEncoder.from_pretrained(clip_dir, dtype="float32", batch_size=256)
        ast = AstMusicEncoder.from_pretrained(ast_dir, dtype="float32", batch_size=32)
        library = MusicLibrary.open_or_create(out / "library", ast.spec)
        report = library.add_files(music, ast)
        for problem in report.failures:
            log.warning("%s: %s", problem.path, problem.reason)
        shortest = QUERY_SECONDS[1] + 5
        tracks = [t for t in library.tracks() if t.used_seconds >= shortest]
        if len(tracks) < 2:
            raise InputError(out / "library", f"only {len(tracks)} track(s) of at least {shortest} s could be added; "
                                              "the demo needs two or more")

    with stages.stage("videos"):
        say(f"[2/5] query videos: music-visualiser clips cut from {len(tracks)} tracks (tiny random CLIP)")
        data = out / "data"
        queries, test_frames = build_dataset(data, tracks, clip, library)

    with stages.stage("training"):
        train_videos = int((queries.split == "train").sum())
        say(f"[3/5] training a small MaDe for {epochs} epochs on {train_videos} videos")
        run = out / "run"
        checkpoint = train_demo_model(data, run, epochs)

    with stages.stage("grounding"):
        say("[4/5] grounding a held-out video against the library")
        from mgsv.demo.visuals import write_video
        from mgsv.search import Grounder, GroundOptions, render_moment

        # The first test video cut from inside a track: one from its first second would make a moment at 0 s look
        # like a default answer.
        tests = queries[queries.split == "test"]
        query = tests[tests.music_start > 0].iloc[0] if (tests.music_start > 0).any() else tests.iloc[0]
        video = write_video(out / "query-video.mp4", test_frames[query.video_id])
        grounder = Grounder.from_checkpoint(checkpoint, library, clip=clip)
        moments = grounder.ground(video, GroundOptions(top=5, fit_duration=True)).moments

    with stages.stage("render"):
        say("[5/5] rendering the video with the top moment as its soundtrack")
        rendered = out / "query-video-with-music.mp4"
        render_moment(video, moments[0], rendered, video_duration=float(query.video_end))
    return DemoResult(out, source, len(tracks), library.root, data, run, checkpoint, video,
                      (str(query.music_id), float(query.music_start), float(query.music_end)), moments, rendered,
                      stages.wall, stages.cpu)


def _draw_queries(tracks: list, per_track: int, rng: np.random.Generator) -> pd.DataFrame:
    """Train queries (`per_track` per track) plus one val and one test query per track, whole seconds long."""
    rows = []
    low, high = QUERY_SECONDS
    for split, count in (("train", per_track), ("val", 1), ("test", 1)):
        for track in tracks:
            for _ in range(count):
                length = float(rng.integers(low, high + 1))
                start = 0.0 if rng.random() < 0.2 else float(rng.integers(0, int(track.used_seconds - length) + 1))
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


def build_dataset(folder: Path, tracks: list, clip, library, per_track: int = TRAIN_PER_TRACK, looks: int = LOOKS,
                  seed: int = 0) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """A dataset folder (CSVs + features) of visualiser queries over the library's tracks.

    Returns the queries and the pictures of each test video (by video id; the demo grounds one of them).
    Training videos: every second of every track is drawn and CLIP-encoded `looks` times, each time with new noise,
    and a video takes a random look of each second of its moment, so thousands of videos cost a few thousand
    encodings. Val and test videos are drawn afresh, with noise of their own, like the video the demo grounds: on
    the training looks a model is scored on feature vectors it has memorised (R@1 100 % where new videos got 30 %).
    Pictures are encoded as a decoder returns them from an MP4 (`as_decoded`), as grounding sees the query video.
    """
    from mgsv.demo.visuals import as_decoded, band_profile, render_frames
    from mgsv.features.store import FeatureStore
    from mgsv.media.decode import read_audio

    rng = np.random.default_rng(seed)

    def draw(track_id: str, seconds: np.ndarray) -> np.ndarray:
        return render_frames(profiles[track_id], seconds, noise=NOISE, rng=rng)

    def encode(frames: np.ndarray, source: str) -> np.ndarray:
        return clip.encode(as_decoded(frames), source=source)

    profiles = {t.id: band_profile(read_audio(t.path, max_seconds=t.used_seconds)) for t in tracks}
    tables = {t.id: np.stack([encode(draw(t.id, np.arange(len(profiles[t.id]))), f"demo visuals of {t.id}")
                              for _ in range(looks)]) for t in tracks}
    queries = _draw_queries(tracks, per_track, rng)
    store = FeatureStore.create(folder / "features", {"video": clip.spec, "music": library.spec})
    table = library.features()
    with store.writer("music") as writer:
        for track in tracks:
            tokens, mask = table.get(track.content_hash)
            writer.add(track.id, np.asarray(tokens, dtype=np.float32), np.asarray(mask, dtype=bool))
    test_frames = {}
    with store.writer("video") as writer:
        for row in queries.itertuples():
            seconds = np.arange(row.music_start, row.music_end).astype(int)
            if row.split == "train":
                look = rng.integers(0, looks, len(seconds))
                feats = tables[row.music_id][look, np.minimum(seconds, tables[row.music_id].shape[1] - 1)]
            else:
                frames = draw(row.music_id, seconds)
                feats = encode(frames, f"demo video {row.video_id}")
                if row.split == "test":
                    test_frames[row.video_id] = frames
            writer.add(row.video_id, feats, np.ones(len(seconds), dtype=bool))
    for split in ("train", "val", "test"):
        rows = queries[queries.split == split].loc[:, list(COLUMNS)]
        rows.to_csv(folder / f"{split}_data.csv", index=False)
    return queries, test_frames


def train_demo_model(data: Path, run: Path, epochs: int) -> Path:
    """Train the demo's MaDe; returns its last checkpoint.

    The last one, not the best on val: the schedule ends at lr 0 and val has only one video per track, too few to
    pick an epoch by (its metrics jump by a video at a time).
    """
    from mgsv.features.store import FeatureStore
    from mgsv.training.trainer import Trainer, TrainSettings

    specs = FeatureStore(data / "features").specs
    model = {**DEMO_MODEL, "video_dim": specs["video"].dim, "music_dim": specs["music"].dim}
    recipe = {**DEMO_RECIPE, "epochs": epochs, "min_epochs": epochs}
    trainer = Trainer(TrainSettings(preset="made", data_dir=data, out_dir=run, model_overrides=model,
                                    recipe_overrides=recipe, precision="fp32", progress=True,
                                    plot_every=max(1, epochs // 4)))
    trainer.fit()
    return run / "checkpoints" / "last"
