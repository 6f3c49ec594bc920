"""Libraries built before feature spec version 2: refused with the way out, and `mgsv library reindex`."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from grounding_factory import TinySetup, make_tiny_setup

from mgsv.cli import main
from mgsv.errors import SpecMismatchError
from mgsv.features.spec import FeatureSpec
from mgsv.files.hashing import content_hash
from mgsv.search.library import FEATURES_DIR, MusicLibrary
from mgsv.search.library_index import INDEX_DIR
from mgsv.search.reindex import READY, STAGING, finish_interrupted_swap

TRACKS = ("defeat.ogg", "victory.ogg")  # 8.5 s and 5.5 s: cheap to encode


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> TinySetup:
    return make_tiny_setup(tmp_path_factory.mktemp("tiny"))


def version_1(spec: FeatureSpec) -> FeatureSpec:
    """The spec mgsv recorded for the same encoder before version 2: no channel, no resampler."""
    params = {k: v for k, v in spec.params.items() if k not in ("channel", "resampler")}
    return dataclasses.replace(spec, params=params, version=1)


def old_library(folder: Path, setup: TinySetup, music: Path) -> MusicLibrary:
    """A library as mgsv built it before version 2: v1 spec, tokens of the channel mean (here: of the encoder
    with channel='mean' and soxr, which is what it computed)."""
    from mgsv.encoders.ast import AstMusicEncoder
    from mgsv.encoders.inputs import encode_track
    from mgsv.media.tracks import decode_track

    old_encoder = AstMusicEncoder.from_pretrained(setup.ast_dir, dtype="float32", channel="mean", resampler="soxr")
    library = MusicLibrary.create(folder, version_1(setup.music_spec))
    with library.writer() as writer:
        for name in TRACKS:
            track = decode_track(music / name, channel="mean", resampler="soxr")
            tokens, mask = encode_track(track, old_encoder)
            writer.add_tokens(tokens, mask, path=track.path, content_hash=content_hash(track.path),
                              duration=track.duration, tags=track.tags)
    return library


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def test_an_old_library_is_refused_with_the_command_that_fixes_it(
    setup: TinySetup, tmp_path: Path, debian_music: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    music = debian_music["wesnoth"]
    library = old_library(tmp_path / "lib", setup, music)
    # What the grounder checks (checkpoint spec vs library spec):
    with pytest.raises(SpecMismatchError) as info:
        setup.music_spec.check_compatible(library.spec, what=f"library {library.root} vs checkpoint x")
    message = str(info.value)
    assert "version: 2 != 1" in message and "params.channel: 0 != (absent)" in message
    assert "before mgsv recorded the preprocessing choices" in message and "mean of all channels" in message
    assert f"mgsv library reindex --library {library.root}" in message
    # Adding a track with today's encoder is refused the same way, before anything is encoded.
    code, _, err = run_cli(["library", "add", str(music / "victory2.ogg"), "--library", str(library.root),
                            "--ast", str(setup.ast_dir), "--dtype", "fp32"], capsys)
    assert code == 1 and f"mgsv library reindex --library {library.root}" in err
    assert len(MusicLibrary(library.root)) == 2


def test_reindex_encodes_every_track_as_a_new_library_would(
    setup: TinySetup, tmp_path: Path, debian_music: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    music = debian_music["wesnoth"]
    library = old_library(tmp_path / "lib", setup, music)
    (library.root / INDEX_DIR / "some-model").mkdir(parents=True)  # a track index computed from the old tokens
    code, out, _ = run_cli(["library", "reindex", "--library", str(library.root), "--ast", str(setup.ast_dir),
                            "--dtype", "fp32", "--json"], capsys)
    assert code == 0
    report = json.loads(out)
    assert report["replaced"] and report["encoded"] == report["tracks"] == 2
    again = MusicLibrary(library.root)
    assert again.spec == setup.music_spec and report["spec"] == setup.music_spec.fingerprint()
    assert [t.id for t in again.tracks()] == ["defeat", "victory"]
    assert not (library.root / INDEX_DIR).exists() and not (library.root / STAGING).exists()
    # The tokens are those a library built today gets for the same files.
    fresh = MusicLibrary.create(tmp_path / "fresh", setup.music_spec)
    fresh.add_files([music / name for name in TRACKS], setup.ast())
    for track in again.tracks():
        ours, theirs = again.features().get(track.content_hash), fresh.features().get(track.content_hash)
        np.testing.assert_array_equal(ours[0], theirs[0])
        np.testing.assert_array_equal(ours[1], theirs[1])


def test_reindex_with_a_missing_file_changes_nothing(
    setup: TinySetup, tmp_path: Path, debian_music: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    copies = tmp_path / "music"
    copies.mkdir()
    for name in TRACKS:
        shutil.copy(debian_music["wesnoth"] / name, copies / name)
    library = old_library(tmp_path / "lib", setup, copies)
    manifest = (library.root / FEATURES_DIR / "manifest.json").read_text()
    (copies / "victory.ogg").unlink()
    code, out, _ = run_cli(["library", "reindex", "--library", str(library.root), "--ast", str(setup.ast_dir),
                            "--dtype", "fp32"], capsys)
    assert code == 1
    assert "left unchanged" in out and "victory.ogg" in out and "cannot read the file" in out
    assert (library.root / FEATURES_DIR / "manifest.json").read_text() == manifest
    assert not (library.root / STAGING).exists() and MusicLibrary(library.root).spec.version == 1


def test_a_swap_cut_short_is_finished(setup: TinySetup, tmp_path: Path, debian_music: dict[str, Path]) -> None:
    library = old_library(tmp_path / "lib", setup, debian_music["wesnoth"])
    root = library.root
    # As a run killed between its two renames leaves it: the new store ready, the old one moved away.
    shutil.copytree(root / FEATURES_DIR, root / STAGING)
    (root / READY).write_text("")
    shutil.rmtree(root / FEATURES_DIR)
    finish_interrupted_swap(root)
    assert len(MusicLibrary(root)) == 2 and not (root / READY).exists() and not (root / STAGING).exists()
