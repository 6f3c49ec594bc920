"""Tiny encoders, a tiny MaDe checkpoint whose feature specs match them, and music libraries, for grounding tests.

    from grounding_factory import make_tiny_setup, make_synthetic_library, shared_real_library

    setup = make_tiny_setup(tmp_path)              # setup.clip_dir, setup.ast_dir, setup.checkpoint, specs
    library = make_synthetic_library(tmp_path / "lib", setup.music_spec, durations=[30, 60, 300])
    shared = shared_real_library(tmp_path_factory, debian_music)   # >= 20 real tracks, built once per session

`make_tiny_setup` saves the tiny CLIP / AST of `encoder_factory` and a randomly initialised MaDe sized for their
16-d / 32-d tokens, recording the encoders' own feature specs in the checkpoint, so the whole CLI path (encoders,
spec checks, model) runs for real in seconds. `shared_real_library` runs `mgsv library add` once on real Debian
music (decoding, the libsndfile fallback, the silence refusal) and hands every test a
read-only library; tests that change a library copy it first (`copy_library`).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from encoder_factory import make_tiny_ast, make_tiny_clip

from mgsv.encoders.ast import AstMusicEncoder
from mgsv.encoders.clip import ClipFrameEncoder
from mgsv.features.spec import FeatureSpec
from mgsv.models.checkpoint import save_checkpoint
from mgsv.models.registry import build_model
from mgsv.search.library import MusicLibrary

# MaDe sized for the tiny encoders (16-d frames, 32-d windows), small everywhere else.
TINY_MADE = {
    "video_dim": 16,
    "music_dim": 32,
    "dim": 32,
    "enhance_heads": 2,
    "enhance_ffn_dim": 64,
    "detr_heads": 2,
    "detr_ffn_dim": 64,
    "decoder_layers": 2,
    "contrastive_dim": 32,
}

# The 20 shortest real tracks (5-78 s) of the three packages: >= 20 tracks at the smallest encoding cost (~430 AST
# windows). hr-savino-ocean.ogg is refused by FFmpeg and must go through the libsndfile fallback; silence.ogg is
# digital silence and must be refused.
SHARED_TRACKS = {
    "wesnoth": [
        "defeat.ogg",
        "defeat2.ogg",
        "victory.ogg",
        "victory2.ogg",
        "elf-land.ogg",
        "sad.ogg",
        "transience.ogg",
        "main_menu.ogg",
        "battle-epic.ogg",
        "revelation.ogg",
        "silence.ogg",
    ],
    "singularity": ["lose/Chimes They Fade.ogg", "lose/March Thee to Dis.ogg"],
    "hyperrogue": [
        "hr-savino-ocean.ogg",
        "hr3-caves.ogg",
        "hr3-crossroads.ogg",
        "hr-savino-caribbean.ogg",
        "hr-savino-ivory.ogg",
        "hr-savino-palace.ogg",
        "hr-domina-hunting.ogg",
        "hr3-desert.ogg",
    ],
}


@dataclass
class TinySetup:
    """Folders of a tiny CLIP, a tiny AST and a MaDe checkpoint trained on (well: initialised for) their specs."""

    clip_dir: Path
    ast_dir: Path
    checkpoint: Path
    video_spec: FeatureSpec
    music_spec: FeatureSpec

    def clip(self) -> ClipFrameEncoder:
        """The tiny CLIP, loaded in float32."""
        return ClipFrameEncoder.from_pretrained(self.clip_dir, dtype="float32")

    def ast(self) -> AstMusicEncoder:
        """The tiny AST, loaded in float32 with large batches (it is cheap per window)."""
        return AstMusicEncoder.from_pretrained(self.ast_dir, dtype="float32", batch_size=32)


def make_tiny_setup(folder: Path, seed: int = 0) -> TinySetup:
    """Save tiny encoders and a MaDe checkpoint with their feature specs under `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    clip_dir = make_tiny_clip(folder / "clip", seed=seed)
    ast_dir = make_tiny_ast(folder / "ast", seed=seed)
    video_spec = ClipFrameEncoder.from_pretrained(clip_dir, dtype="float32").spec
    music_spec = AstMusicEncoder.from_pretrained(ast_dir, dtype="float32").spec
    checkpoint = make_tiny_checkpoint(folder / "checkpoint", video_spec, music_spec, seed=seed)
    return TinySetup(clip_dir, ast_dir, checkpoint, video_spec, music_spec)


def make_tiny_checkpoint(folder: Path, video_spec: FeatureSpec, music_spec: FeatureSpec, seed: int = 0) -> Path:
    """A randomly initialised tiny MaDe checkpoint recording the given feature specs."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model("made", **TINY_MADE)
    return save_checkpoint(model, folder, feature_specs={"video": video_spec, "music": music_spec})


def make_synthetic_library(
    folder: Path, spec: FeatureSpec, durations: list[float], audio: Path | None = None, seed: int = 0
) -> MusicLibrary:
    """A library of random tokens (no audio decoding): one track per duration, all pointing at `audio` if given."""
    library = MusicLibrary.create(folder, spec)
    rng = np.random.default_rng(seed)
    with library.writer(commit_every=len(durations)) as writer:
        for number, duration in enumerate(durations):
            windows = min(spec.max_tokens, int(min(duration, 240.0) // 2.5) + 1)
            tokens = rng.standard_normal((spec.max_tokens, spec.dim)).astype(np.float32)
            mask = np.arange(spec.max_tokens) < windows
            path = audio if audio is not None else folder.parent / f"synthetic-{number}.ogg"
            digest = f"{seed:04d}{number:060d}"
            writer.add_tokens(
                tokens,
                mask,
                path=path,
                content_hash=digest,
                duration=duration,
                tags={"title": f"Synthetic {number}", "license": "CC0"},
            )
    return library


@dataclass
class SharedLibrary:
    """A library built once per test session by `mgsv library add` on real music."""

    setup: TinySetup
    library: Path
    tracks: list[Path]  # every file given to `library add`
    add_exit_code: int
    add_report: dict  # the --json output of that add


_SHARED: dict[str, SharedLibrary] = {}


def shared_real_library(tmp_path_factory: pytest.TempPathFactory, music_dirs: dict[str, Path]) -> SharedLibrary:
    """The session's real-music library (built on first use; treat it as read-only, `copy_library` to change)."""
    if "real" not in _SHARED:
        from mgsv.cli import main

        root = tmp_path_factory.mktemp("shared-grounding")
        setup = make_tiny_setup(root / "models")
        tracks = [music_dirs[package] / name for package, names in SHARED_TRACKS.items() for name in names]
        library = root / "library"
        import contextlib
        import io

        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
            main(
                [
                    "library",
                    "add",
                    *map(str, tracks),
                    "--library",
                    str(library),
                    "--ast",
                    str(setup.ast_dir),
                    "--dtype",
                    "fp32",
                    "--batch-size",
                    "32",
                    "--json",
                ]
            )
        _SHARED["real"] = SharedLibrary(
            setup, library, tracks, int(exit_info.value.code or 0), json.loads(out.getvalue())
        )
    return _SHARED["real"]


def copy_library(library: Path, target: Path) -> Path:
    """A copy of a library folder that a test may change, without what the library computes and keeps for itself
    (model indexes, and the peaks and beats another test's server may have written into the shared library)."""
    shutil.copytree(library, target, ignore=shutil.ignore_patterns("cache", "index", "track-media"))
    return target
