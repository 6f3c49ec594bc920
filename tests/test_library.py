"""The music library: `mgsv library add/list/remove` on real music, crash safety, format and spec checks, track index."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from grounding_factory import (
    SHARED_TRACKS,
    SharedLibrary,
    copy_library,
    make_synthetic_library,
    make_tiny_setup,
    shared_real_library,
)
from media_factory import write_test_video, write_truncated_copy

from mgsv.cli import main
from mgsv.encoders.ast import MusicTokens, window_layout
from mgsv.errors import InputError
from mgsv.features.store import StoreBusyError, UnknownIdsError
from mgsv.models.checkpoint import load_checkpoint
from mgsv.models.contract import model_fingerprint
from mgsv.search.library import EncodedLibrary, MusicLibrary
from mgsv.search.ranker import exact_scores

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, debian_music: dict[str, Path]) -> SharedLibrary:
    return shared_real_library(tmp_path_factory, debian_music)


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # rich tables fold cells at the default 80 columns of a non-terminal


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `mgsv ARGS`."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def windows_of(duration: float) -> int:
    return int(window_layout(duration).mask.sum())


# ---------------------------------------------------------------------------------------------------- add / list


def test_add_real_tracks(shared: SharedLibrary) -> None:
    report = shared.add_report
    expected = sum(len(names) for names in SHARED_TRACKS.values()) - 1  # silence.ogg is refused
    assert expected >= 20
    assert shared.add_exit_code == 1  # one file failed
    assert len(report["added"]) == expected and report["encoded"] == expected
    assert [Path(f["path"]).name for f in report["failures"]] == ["silence.ogg"]
    assert "digital silence" in report["failures"][0]["reason"]

    library = MusicLibrary(shared.library)
    tracks = {t.id: t for t in library.tracks()}
    assert len(tracks) == expected
    # FFmpeg refuses this file; the libsndfile fallback decoded all of it.
    ocean = tracks["hr-savino-ocean"]
    assert ocean.title == "Ocean" and ocean.artist == "Will Savino"
    assert ocean.duration == pytest.approx(60.48, abs=0.05)
    defeat = tracks["defeat"]
    assert (defeat.title, defeat.artist, defeat.licence) == ("Defeat", "Timothy Pinkham", "GPL")
    assert defeat.tags["copyright"] == "Timothy Pinkham (C)2005"
    assert defeat.path == str(shared.tracks[0].resolve())
    # Tokens are stored under the content hash, one valid window per 2.5 s of track.
    table = library.features()
    assert library.store.verify() == {"music": expected}
    for track in tracks.values():
        assert table.lengths([track.content_hash])[0] == windows_of(track.duration)


def test_list_json_and_table(shared: SharedLibrary, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["library", "list", "--library", str(shared.library), "--json"], capsys)
    assert code == 0
    listed = json.loads(out)
    assert len(listed) == len(shared.add_report["added"])
    victory = next(t for t in listed if t["id"] == "victory")
    assert victory["duration"] == pytest.approx(5.5, abs=0.1)
    assert victory["licence"] == "GPL" and victory["beyond_horizon"] is False
    assert set(victory) >= {"id", "title", "artist", "album", "duration", "licence", "path", "added_at"}

    code, out, _ = run_cli(["library", "list", "--library", str(shared.library)], capsys)
    assert code == 0
    assert "Timothy Pinkham" in out and "0:08.5" in out and "GPL" in out


def test_adding_the_same_content_again_is_a_no_op(
    shared: SharedLibrary, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    library = copy_library(shared.library, tmp_path / "lib")
    revision = MusicLibrary(library).revision
    renamed = tmp_path / "renamed-copy.ogg"
    shutil.copyfile(shared.tracks[0], renamed)
    # --ast points nowhere: nothing may need the encoder.
    code, out, _ = run_cli(
        [
            "library",
            "add",
            *map(str, shared.tracks[:5]),
            str(renamed),
            "--library",
            str(library),
            "--ast",
            str(tmp_path / "no-encoder"),
            "--json",
        ],
        capsys,
    )
    report = json.loads(out)
    assert code == 0 and report["added"] == [] and report["encoded"] == 0
    assert sorted(i for _, i in ((a["path"], a["id"]) for a in report["already"])) == sorted(
        ["defeat", "defeat2", "victory", "victory2", "elf-land", "defeat"]
    )
    assert MusicLibrary(library).revision == revision
    assert len(MusicLibrary(library)) == len(shared.add_report["added"])


def test_remove_and_add_back(shared: SharedLibrary, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    library = copy_library(shared.library, tmp_path / "lib")
    before = len(MusicLibrary(library))
    code, out, _ = run_cli(["library", "remove", "defeat", "sad", "--library", str(library), "--json"], capsys)
    assert code == 0 and [t["id"] for t in json.loads(out)] == ["defeat", "sad"]
    opened = MusicLibrary(library)
    assert len(opened) == before - 2 and "defeat" not in opened and "victory" in opened

    # An unknown id removes nothing.
    code, _, err = run_cli(["library", "remove", "victory", "no-such-track", "--library", str(library)], capsys)
    assert code == 1 and "unknown id(s): 'no-such-track'" in err
    assert "victory" in MusicLibrary(library)

    # Adding a removed track back reuses its stored tokens (no encoder needed).
    code, out, _ = run_cli(
        ["library", "add", str(shared.tracks[0]), "--library", str(library), "--ast", str(tmp_path / "none"), "--json"],
        capsys,
    )
    report = json.loads(out)
    assert code == 0 and [t["id"] for t in report["added"]] == ["defeat"] and report["encoded"] == 0
    assert len(MusicLibrary(library)) == before - 1


# ---------------------------------------------------------------------------------------------------- bad inputs


def test_bad_files_are_reported_and_the_rest_is_added(
    shared: SharedLibrary, debian_music: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "corrupt.ogg").write_bytes(os.urandom(4096))
    (bad / "empty.ogg").write_bytes(b"")
    (bad / "notes.txt").write_text("not music")
    silent_video = write_test_video(bad / "silent-film.mp4", seconds=2, audio=False)
    truncated = write_truncated_copy(debian_music["wesnoth"] / "defeat.ogg", bad / "cut.ogg", 0.001)
    good = debian_music["wesnoth"] / "victory.ogg"
    library = tmp_path / "lib"
    code, out, _ = run_cli(
        [
            "library",
            "add",
            str(bad / "corrupt.ogg"),
            str(bad / "empty.ogg"),
            str(bad / "notes.txt"),
            str(silent_video),
            str(truncated),
            str(tmp_path / "missing.ogg"),
            str(good),
            "--library",
            str(library),
            "--ast",
            str(shared.setup.ast_dir),
            "--dtype",
            "fp32",
            "--json",
        ],
        capsys,
    )
    report = json.loads(out)
    assert code == 1
    assert [t["id"] for t in report["added"]] == ["victory"]
    reasons = {Path(f["path"]).name: f["reason"] for f in report["failures"]}
    assert set(reasons) == {"corrupt.ogg", "empty.ogg", "notes.txt", "silent-film.mp4", "cut.ogg", "missing.ogg"}
    assert "not a readable media file" in reasons["corrupt.ogg"]
    assert reasons["empty.ogg"] == "empty file (0 bytes)"
    assert "not a readable media file" in reasons["notes.txt"]
    assert reasons["silent-film.mp4"] == "video has no audio track"
    assert "not a readable media file" in reasons["cut.ogg"]
    assert reasons["missing.ogg"] == "not found"
    assert MusicLibrary(library).store.verify() == {"music": 1}


def test_a_track_past_the_horizon_keeps_its_length_and_is_flagged(
    debian_music: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    setup = make_tiny_setup(tmp_path / "models")

    class CountingEncoder:
        """Stands in for the AST (its cost is not the point here): zero tokens over the real window layout."""

        spec = setup.music_spec
        calls: list[int] = []

        def encode(self, samples: np.ndarray, sample_rate: int, source: str) -> MusicTokens:
            self.calls.append(len(samples))
            layout = window_layout(len(samples) / sample_rate)
            return MusicTokens(np.zeros((len(layout.mask), self.spec.dim), np.float32), layout.mask.copy())

    encoder = CountingEncoder()
    library = MusicLibrary.create(tmp_path / "lib", setup.music_spec)
    report = library.add_files([debian_music["wesnoth"] / "knalgan_theme.ogg"], encoder)
    assert encoder.calls == [240 * 16000]  # only the horizon is decoded and encoded
    (track,) = report.added
    assert track.duration == pytest.approx(557.2, abs=0.1) and track.beyond_horizon
    assert "557.2 s long: only its first 240 s" in report.warnings[0].reason
    code, out, _ = run_cli(["library", "list", "--library", str(tmp_path / "lib")], capsys)
    assert code == 0 and "9:17.2 *" in out and "only the first 240 s can be found" in out


def test_another_ast_is_refused(shared: SharedLibrary, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = make_tiny_setup(tmp_path / "other", seed=1)
    library = copy_library(shared.library, tmp_path / "lib")
    new_file = tmp_path / "new.ogg"
    shutil.copyfile(shared.tracks[0], new_file)
    with open(new_file, "ab") as handle:  # other content, so it needs encoding
        handle.write(b"\0")
    code, _, err = run_cli(
        ["library", "add", str(new_file), "--library", str(library), "--ast", str(other.ast_dir)], capsys
    )
    assert code == 1
    assert "feature spec mismatch for music" in err and "encoder:" in err
    assert len(MusicLibrary(library)) == len(shared.add_report["added"])


def test_libraries_from_a_newer_version_or_broken_are_refused(
    shared: SharedLibrary, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    newer = copy_library(shared.library, tmp_path / "newer")
    (newer / "library.json").write_text(json.dumps({"format": "mgsv-music-library", "format_version": 99}))
    code, _, err = run_cli(["library", "list", "--library", str(newer)], capsys)
    assert code == 1 and "written by a newer mgsv (music library description format_version 99" in err

    code, _, err = run_cli(["library", "list", "--library", str(tmp_path / "nowhere")], capsys)
    assert code == 1 and "no music library here" in err

    not_library = tmp_path / "plain"
    not_library.mkdir()
    (not_library / "x.txt").write_text("x")
    code, _, err = run_cli(["library", "list", "--library", str(not_library)], capsys)
    assert code == 1 and "not a music library" in err

    broken = copy_library(shared.library, tmp_path / "broken")
    for leftover in broken.glob("tracks.sqlite*"):
        leftover.unlink()
    (broken / "tracks.sqlite").write_bytes(b"this is not a database" * 100)
    code, _, err = run_cli(["library", "list", "--library", str(broken)], capsys)
    assert code == 1 and "tracks.sqlite" in err and "unreadable" in err


def test_one_writer_at_a_time(shared: SharedLibrary, tmp_path: Path) -> None:
    library = MusicLibrary(copy_library(shared.library, tmp_path / "lib"))
    with library.writer(), pytest.raises(StoreBusyError, match="another process is writing"), library.writer():
        pass


# ---------------------------------------------------------------------------------------------------- crash safety


KILLED_ADD = textwrap.dedent(
    """
    import sys
    from mgsv.encoders.ast import AstMusicEncoder
    from mgsv.search.library import MusicLibrary

    encoder = AstMusicEncoder.from_pretrained(sys.argv[2], dtype="float32", batch_size=32)
    library = MusicLibrary.open_or_create(sys.argv[1], encoder.spec)
    library.add_files(sys.argv[3:], encoder, commit_every=1)
    """
)


def committed_tracks(db: Path) -> int:
    try:
        connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return int(connection.execute("SELECT COUNT(*) FROM tracks").fetchone()[0])
        finally:
            connection.close()
    except sqlite3.Error:
        return 0  # not created yet, or mid-write


@pytest.mark.slow
def test_add_killed_with_sigkill_loses_nothing_added(
    shared: SharedLibrary, debian_music: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wesnoth = debian_music["wesnoth"]
    files = [
        wesnoth / "defeat2.ogg",
        wesnoth / "victory2.ogg",
        debian_music["hyperrogue"] / "hr-savino-ocean.ogg",
        wesnoth / "elf-land.ogg",
        wesnoth / "transience.ogg",
    ]
    library = tmp_path / "lib"
    script = tmp_path / "add.py"
    script.write_text(KILLED_ADD)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO / "src")}
    process = subprocess.Popen(
        [sys.executable, str(script), str(library), str(shared.setup.ast_dir), *map(str, files)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while committed_tracks(library / "tracks.sqlite") < 2:
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "the add never committed two tracks"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL

    # Whatever the kill interrupted: the library opens, every listed track has its tokens, the store verifies.
    survivor = MusicLibrary(library)
    committed = survivor.tracks()
    assert 2 <= len(committed) < len(files)
    stored = set(survivor.features().ids)
    assert all(t.content_hash in stored for t in committed)
    survivor.store.verify()

    code, out, _ = run_cli(
        [
            "library",
            "add",
            *map(str, files),
            "--library",
            str(library),
            "--ast",
            str(shared.setup.ast_dir),
            "--dtype",
            "fp32",
            "--json",
        ],
        capsys,
    )
    report = json.loads(out)
    assert code == 0
    assert sorted(i for _, i in ((a["path"], a["id"]) for a in report["already"])) == sorted(t.id for t in committed)
    assert report["encoded"] <= len(files) - len(committed)
    final = MusicLibrary(library)
    assert sorted(t.id for t in final.tracks()) == sorted(f.stem for f in files)
    assert final.store.verify() == {"music": len(files)}


# ---------------------------------------------------------------------------------------------------- track index


def all_scores(model: torch.nn.Module, encoding: EncodedLibrary, video) -> dict[str, float]:
    """p_s of every live track of an encoded library, by content hash."""
    rows = np.flatnonzero(encoding.catalog.live)
    scores = exact_scores(model, video, encoding.index, rows)
    return {encoding.index.hashes[r].decode(): float(s) for r, s in zip(rows, scores, strict=True)}


def test_track_index_is_reused_and_updated_when_tracks_change(shared: SharedLibrary, tmp_path: Path) -> None:
    model, _ = load_checkpoint(shared.setup.checkpoint)
    path = copy_library(shared.library, tmp_path / "lib")
    library = MusicLibrary(path)
    first = library.encoded(model)
    root = path / "index" / model_fingerprint(model)
    manifest = json.loads((root / "manifest.json").read_text())
    assert len(first) == len(library) == len(first.index) and len(manifest["segments"]) == 1
    assert len(manifest["segments"][0]["buckets"]) > 1  # tracks grouped by length

    # A fresh process (here: a fresh instance) reads the index instead of encoding.
    reread = MusicLibrary(path).encoded(model)
    assert reread.index.generation == first.index.generation
    np.testing.assert_array_equal(reread.index.hashes, first.index.hashes)

    # Removing tracks hides them at once; adding one encodes only it, as a new segment.
    video = model.encode_video(torch.randn(1, 7, 16), torch.ones(1, 7, dtype=torch.bool))
    library.remove(["defeat", "sad"])
    hidden = library.encoded(model)
    assert hidden.catalog.count == len(library) and hidden.index.generation == first.index.generation
    rng = np.random.default_rng(3)
    with library.writer() as writer:
        writer.add_tokens(
            rng.standard_normal((96, 32)).astype(np.float32),
            np.arange(96) < 30,
            path=tmp_path / "new.ogg",
            content_hash="f" * 64,
            duration=73.0,
        )
    updated = library.encoded(model)
    assert len(updated.index.segments) == 2 and updated.catalog.count == len(library)
    incremental = all_scores(model, updated, video)
    assert set(incremental) == {t.content_hash for t in library.tracks()}

    # The same scores as an index built from scratch, and as the model on every track's tokens.
    shutil.rmtree(path / "index")
    scratch = all_scores(model, MusicLibrary(path).encoded(model), video)
    assert scratch == pytest.approx(incremental, rel=1e-6, abs=1e-6)
    hashes = list(incremental)
    with torch.inference_mode():
        direct = model.relevance(video, model.encode_music(*library.features().batch(hashes)))[0]
    np.testing.assert_allclose([incremental[h] for h in hashes], direct.numpy(), rtol=0, atol=1e-4)

    # Removing most tracks compacts the index into one segment of the remaining tracks.
    library.remove([t.id for t in library.tracks()[: len(library) // 2]])
    compacted = library.encoded(model)
    assert len(compacted.index.segments) == 1 and len(compacted.index) == len(library) == compacted.catalog.count
    kept = all_scores(model, compacted, video)
    assert kept == pytest.approx({h: incremental[h] for h in kept}, rel=1e-6, abs=1e-6)
    assert sorted(p.name for p in root.iterdir() if p.name.startswith("seg-")) == [compacted.index.segments[0].info.name]


def test_model_fingerprint_follows_the_weights(tmp_path: Path) -> None:
    setup = make_tiny_setup(tmp_path / "a")
    model, _ = load_checkpoint(setup.checkpoint)
    same, _ = load_checkpoint(setup.checkpoint)
    assert model_fingerprint(model) == model_fingerprint(same)
    with torch.no_grad():
        next(same.parameters()).view(-1)[0] += 1e-3
    assert model_fingerprint(model) != model_fingerprint(same)


def test_synthetic_library_and_empty_library_errors(tmp_path: Path) -> None:
    setup = make_tiny_setup(tmp_path / "models")
    model, _ = load_checkpoint(setup.checkpoint)
    empty = MusicLibrary.create(tmp_path / "empty", setup.music_spec)
    with pytest.raises(InputError, match="has no tracks"):
        empty.encoded(model)
    library = make_synthetic_library(tmp_path / "lib", setup.music_spec, [30.0, 250.0])
    assert [t.beyond_horizon for t in library.tracks()] == [False, True]
    with pytest.raises(UnknownIdsError, match="'nope'"):
        library.track("nope")


def test_an_unwritable_index_does_not_stop_grounding(
    shared: SharedLibrary, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = copy_library(shared.library, tmp_path / "lib")
    (path / "index").write_text("a file where the index folder should be")  # mkdir fails, as on a read-only disk
    model, _ = load_checkpoint(shared.setup.checkpoint)
    library = MusicLibrary(path)
    encoding = library.encoded(model)
    assert len(encoding) == len(shared.add_report["added"])
    assert "cannot write the track index" in caplog.text
    scratch = encoding.index.root.parent
    assert scratch.is_dir() and not scratch.is_relative_to(path)
    del encoding, library
    import gc

    gc.collect()
    assert not scratch.exists()  # the private copy goes with the library object


def test_adding_nothing_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    setup = make_tiny_setup(tmp_path / "models")
    library = MusicLibrary.create(tmp_path / "lib", setup.music_spec)
    (tmp_path / "empty").mkdir()
    report = library.add_files([tmp_path / "empty"], setup.ast)  # the empty folder is a failure naming it
    assert not report.ok and not report.added
    assert [(p.path, p.reason.split(" (")[0]) for p in report.failures] == [
        (str(tmp_path / "empty"), "no music files in this folder")
    ]
    code, out, _ = run_cli(["library", "add", str(tmp_path / "empty"), "--library", str(tmp_path / "lib")], capsys)
    assert code == 1 and f"{tmp_path / 'empty'}: no music files in this folder" in out
