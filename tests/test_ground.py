"""`mgsv ground` and `Grounder`: top-k moments in a real-music library, fitting, beat snapping, rendering, errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from grounding_factory import (
    SharedLibrary,
    make_synthetic_library,
    make_tiny_checkpoint,
    make_tiny_setup,
    shared_real_library,
)
from media_factory import write_test_video

from mgsv.cli import main
from mgsv.media.decode import read_audio, read_video_frames
from mgsv.media.probe import probe
from mgsv.models.checkpoint import load_checkpoint, save_checkpoint
from mgsv.models.made import standardize_tokens
from mgsv.models.registry import build_model
from mgsv.search import GroundOptions
from mgsv.search.beats import CONTEXT_S, MissingExtraError, beat_times, snap_to_beat
from mgsv.search.grounder import Grounder
from mgsv.search.library import MusicLibrary
from mgsv.search.ranker import clip_to_track, fit_to_length, top_rows


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, debian_music: dict[str, Path]) -> SharedLibrary:
    return shared_real_library(tmp_path_factory, debian_music)


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 10 s query video with a soundtrack of its own."""
    return write_test_video(tmp_path_factory.mktemp("query") / "query.mp4", seconds=10, fps=5, tone_hz=330)


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def ground_args(shared: SharedLibrary, *videos: Path, library: Path | None = None) -> list[str]:
    setup = shared.setup
    return ["ground", *map(str, videos), "--library", str(library or shared.library), "--checkpoint",
            str(setup.checkpoint), "--clip", str(setup.clip_dir), "--dtype", "fp32"]  # fmt: skip


# ---------------------------------------------------------------------------------------------------- grounding


def test_top_k_moments_lie_in_their_tracks_and_follow_p_s(
    shared: SharedLibrary, video: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli([*ground_args(shared, video), "--top", "5", "--json"], capsys)
    assert code == 0
    (result,) = json.loads(out)["results"]
    assert result["video"] == str(video) and result["duration"] == pytest.approx(10.0, abs=0.05)
    moments = result["moments"]
    assert [m["rank"] for m in moments] == [1, 2, 3, 4, 5]
    scores = [m["score"] for m in moments]
    assert scores == sorted(scores, reverse=True) and all(-2 <= s <= 2 for s in scores)
    tracks = {t.id: t for t in MusicLibrary(shared.library).tracks()}
    for moment in moments:
        track = tracks[moment["track_id"]]
        assert moment["path"] == track.path and moment["title"] == track.title
        assert 0 <= moment["start_s"] < moment["end_s"] <= min(track.duration, 240) + 1e-3

    # The same ranking, computed directly from the model (no track index): encode every track from its tokens.
    model, _ = load_checkpoint(shared.setup.checkpoint)
    feats = shared.setup.clip().encode(read_video_frames(video).frames)
    library = MusicLibrary(shared.library)
    ordered = library.tracks()
    with torch.inference_mode():
        tokens, mask = library.features().batch([t.content_hash for t in ordered])
        music = model.encode_music(tokens, mask)
        encoded = model.encode_video(torch.from_numpy(feats)[None], torch.ones(1, len(feats), dtype=torch.bool))
        p_s = model.relevance(encoded, music)[0].numpy()
        # The index stores X-Pool's standardised tokens in float16: with those rounded, p_s is the stored one.
        standard, _, _ = standardize_tokens(music.tokens, music.mask, model.xpool.norm_in.eps)
        rounded = model.relevance_standardized(encoded, music.embedding, standard.half(), music.mask)[0].numpy()
    best = np.argsort(-p_s, kind="stable")[:5]
    assert [m["track_id"] for m in moments] == [ordered[i].id for i in best]
    np.testing.assert_allclose(scores, rounded[best], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scores, p_s[best], rtol=0, atol=1e-4)  # float16 storage moves p_s by < 1e-4


def test_bf16_precision_ranks_like_fp32(shared: SharedLibrary, video: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = {}
    for precision in ("fp32", "bf16"):
        code, out, _ = run_cli([*ground_args(shared, video), "--top", "3", "--precision", precision, "--json"], capsys)
        assert code == 0
        results[precision] = json.loads(out)["results"][0]["moments"]
    np.testing.assert_allclose(
        [m["score"] for m in results["bf16"]], [m["score"] for m in results["fp32"]], rtol=0.05, atol=0.02
    )


def test_python_api(shared: SharedLibrary, video: Path) -> None:
    grounder = Grounder.from_checkpoint(shared.setup.checkpoint, MusicLibrary(shared.library),
                                        clip=shared.setup.clip_dir, dtype="fp32")
    moments = grounder.ground(video, GroundOptions(top=3)).moments
    assert [m.rank for m in moments] == [1, 2, 3]
    assert moments[0].score >= moments[1].score >= moments[2].score
    assert all(m.end_s > m.start_s for m in moments)
    assert set(moments[0].to_dict()) >= {"track_id", "title", "path", "start_s", "end_s", "score"}


def test_fit_duration_gives_moments_as_long_as_the_video(
    shared: SharedLibrary, video: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    count = len(shared.add_report["added"])
    code, out, _ = run_cli([*ground_args(shared, video), "--top", str(count), "--fit-duration", "--json"], capsys)
    assert code == 0
    moments = json.loads(out)["results"][0]["moments"]
    durations = {t.id: t.duration for t in MusicLibrary(shared.library).tracks()}
    # victory (5.5 s) and defeat (8.5 s) cannot hold a 10 s video: skipped; every other track is ranked.
    assert {m["track_id"] for m in moments} == {i for i, d in durations.items() if d >= 10.0}
    assert "victory" not in {m["track_id"] for m in moments}
    for moment in moments:
        assert moment["end_s"] - moment["start_s"] == pytest.approx(10.0, abs=2e-3)
        assert 0 <= moment["start_s"] and moment["end_s"] <= durations[moment["track_id"]] + 1e-3


def test_a_video_longer_than_the_tracks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    setup = make_tiny_setup(tmp_path / "models")
    library = make_synthetic_library(tmp_path / "lib", setup.music_spec, [4.0, 6.5, 9.0])
    long_video = write_test_video(tmp_path / "long.mp4", seconds=12, fps=2, audio=False)
    args = ["ground", str(long_video), "--library", str(library.root), "--checkpoint", str(setup.checkpoint),
            "--clip", str(setup.clip_dir), "--dtype", "fp32", "--json"]  # fmt: skip
    code, out, _err = run_cli([*args, "--fit-duration"], capsys)
    assert code == 1
    failure = json.loads(out)["failures"][0]
    assert failure["path"] == str(long_video)
    assert "12.0 s long but the longest track in the library is 9.0 s" in failure["reason"]
    assert "without --fit-duration" in failure["reason"]

    code, out, _ = run_cli(args, capsys)
    assert code == 0
    moments = json.loads(out)["results"][0]["moments"]
    assert len(moments) == 3 and all(m["track_too_short"] for m in moments)
    assert all("is shorter than the video (12.0 s)" in m["notes"][0] for m in moments)
    assert all(0 <= m["start_s"] < m["end_s"] <= m["track_duration"] for m in moments)


def test_long_video_window(shared: SharedLibrary, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    long_video = write_test_video(tmp_path / "long.mp4", seconds=55, fps=1, size=(64, 48), audio=False)
    code, out, _ = run_cli([*ground_args(shared, long_video), "--window", "20", "--top", "1", "--json"], capsys)
    assert code == 0
    result = json.loads(out)["results"][0]
    assert (result["window_start"], result["frames"], result["duration"]) == (20.0, 35, 55.0)


@pytest.mark.slow
def test_snap_to_beats(shared: SharedLibrary, video: Path) -> None:
    pytest.importorskip("librosa")
    library = MusicLibrary(shared.library)
    grounder = Grounder.from_checkpoint(shared.setup.checkpoint, library, clip=shared.setup.clip_dir, dtype="fp32")
    plain = {m.track_id: m for m in grounder.ground(video, GroundOptions(top=4, fit_duration=True)).moments}
    snapped = grounder.ground(video, GroundOptions(top=4, fit_duration=True, snap="beats")).moments
    assert [m.track_id for m in snapped] == list(plain)
    assert any(m.snapped for m in snapped)
    for moment in snapped:
        before = plain[moment.track_id]
        assert moment.end_s - moment.start_s == pytest.approx(10.0, abs=1e-3)  # the length is kept
        assert 0 <= moment.start_s and moment.end_s <= moment.track_duration + 1e-6
        if moment.snapped:
            beats = beat_times(moment.path, before.start_s)
            assert np.min(np.abs(beats - moment.start_s)) < 1e-6  # on a beat the tracker found
            assert abs(moment.start_s - before.start_s) <= CONTEXT_S
        else:
            assert moment.notes and moment.start_s == before.start_s


def test_render_the_top_moment(
    shared: SharedLibrary, video: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_file = tmp_path / "with-music.mp4"
    code, out, _ = run_cli(
        [*ground_args(shared, video), "--top", "2", "--render", str(out_file), "--keep-audio", "0.3", "--json"],
        capsys,
    )
    assert code == 0, out
    result = json.loads(out)["results"][0]
    rendered = result["rendered"]
    assert rendered["path"] == str(out_file) and rendered["keep_audio"] == 0.3
    top = result["moments"][0]
    assert rendered["music_start"] == pytest.approx(top["start_s"], abs=1e-3)
    info = probe(out_file)
    assert info.has_video and info.has_audio
    assert info.duration == pytest.approx(10.0, abs=0.1)
    audio = read_audio(out_file)
    assert len(audio) / 16000 == pytest.approx(10.0, abs=0.1) and np.abs(audio).max() > 0.01

    # An existing output is not overwritten without --force.
    code, out, _ = run_cli([*ground_args(shared, video), "--top", "1", "--render", str(out_file), "--json"], capsys)
    assert code == 1 and "already exists" in json.loads(out)["failures"][0]["reason"]


def test_a_folder_of_videos_with_a_bad_one(
    shared: SharedLibrary, video: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "videos"
    folder.mkdir()
    write_test_video(folder / "a.mp4", seconds=3, fps=5, audio=False)
    write_test_video(folder / "b.mkv", seconds=4, fps=5)
    (folder / "broken.mp4").write_bytes(b"\0" * 1000)
    renders = tmp_path / "renders"
    code, out, _ = run_cli([*ground_args(shared, folder), "--top", "2", "--render", str(renders), "--json"], capsys)
    assert code == 1
    report = json.loads(out)
    assert [Path(r["video"]).name for r in report["results"]] == ["a.mp4", "b.mkv"]
    assert [Path(f["path"]).name for f in report["failures"]] == ["broken.mp4"]
    assert "not a readable media file" in report["failures"][0]["reason"]
    assert sorted(p.name for p in renders.iterdir()) == ["a.mp4", "b.mp4"]

    code, out, _ = run_cli([*ground_args(shared, folder), "--top", "1"], capsys)
    assert code == 1 and "failed (1):" in out and "broken.mp4" in out and "a.mp4" in out


# ---------------------------------------------------------------------------------------------------- bad inputs


def test_spec_mismatches_are_refused(
    shared: SharedLibrary, video: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = make_tiny_setup(tmp_path / "other", seed=1)
    args = ground_args(shared, video)
    code, _, err = run_cli([*args[:-4], "--clip", str(other.clip_dir)], capsys)
    assert code == 1 and "feature spec mismatch for video" in err

    library = make_synthetic_library(tmp_path / "lib", other.music_spec, [30.0])
    code, _, err = run_cli(ground_args(shared, video, library=library.root), capsys)
    assert code == 1 and "feature spec mismatch for music" in err and str(library.root) in err

    bare = tmp_path / "bare-checkpoint"
    save_checkpoint(build_model("made", video_dim=16, music_dim=32, dim=32), bare)
    code, _, err = run_cli(["ground", str(video), "--library", str(shared.library), "--checkpoint", str(bare)], capsys)
    assert code == 1 and "records no video feature spec" in err

    code, _, err = run_cli(
        ["ground", str(video), "--library", str(shared.library), "--checkpoint", str(tmp_path / "nothing")], capsys
    )
    assert code == 1 and "no such checkpoint folder" in err


def test_missing_librosa_names_the_extra(
    tmp_path: Path, video: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    setup = make_tiny_setup(tmp_path / "models")
    library = make_synthetic_library(tmp_path / "lib", setup.music_spec, [30.0])
    monkeypatch.setitem(sys.modules, "librosa", None)  # import librosa -> ImportError
    grounder = Grounder.from_checkpoint(setup.checkpoint, library, clip=setup.clip_dir, dtype="fp32")
    with pytest.raises(MissingExtraError, match=r"pip install 'mgsv\[beats\]'"):
        grounder.ground(video, GroundOptions(snap="beats"))
    code, _, err = run_cli(
        ["ground", str(video), "--library", str(library.root), "--checkpoint", str(setup.checkpoint), "--clip",
         str(setup.clip_dir), "--snap", "beats"],
        capsys,
    )  # fmt: skip
    assert code == 1 and "mgsv[beats]" in err


def test_moved_track_files(tmp_path: Path, video: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("librosa")
    setup = make_tiny_setup(tmp_path / "models")
    gone = tmp_path / "moved-away.ogg"
    library = make_synthetic_library(tmp_path / "lib", setup.music_spec, [30.0], audio=gone)
    grounder = Grounder.from_checkpoint(setup.checkpoint, library, clip=setup.clip_dir, dtype="fp32")
    (moment,) = grounder.ground(video, GroundOptions(top=1, snap="beats")).moments
    assert not moment.snapped and moment.notes == ("not snapped: cannot read the track (file not found)",)

    code, out, _ = run_cli(
        ["ground", str(video), "--library", str(library.root), "--checkpoint", str(setup.checkpoint), "--clip",
         str(setup.clip_dir), "--render", str(tmp_path / "out.mp4"), "--json"],
        capsys,
    )  # fmt: skip
    assert code == 1
    assert json.loads(out)["failures"][0]["reason"] == f"{gone}: file not found"


def test_another_checkpoint_gets_its_own_cache(shared: SharedLibrary, video: Path, tmp_path: Path) -> None:
    setup = shared.setup
    second = make_tiny_checkpoint(tmp_path / "second", setup.video_spec, setup.music_spec, seed=5)
    library = MusicLibrary(shared.library)
    first = Grounder.from_checkpoint(setup.checkpoint, library, clip=setup.clip_dir, dtype="fp32").ground(video).moments
    other = Grounder.from_checkpoint(second, library, clip=setup.clip_dir, dtype="fp32").ground(video).moments
    assert [m.score for m in first] != [m.score for m in other]
    assert len(list((shared.library / "index").glob("*/manifest.json"))) >= 2


# ---------------------------------------------------------------------------------------------------- moment rules


def test_clip_to_track() -> None:
    assert clip_to_track(-3.0, 20.0, 60.0) == (0.0, 20.0)
    assert clip_to_track(50.0, 70.0, 60.0) == (50.0, 60.0)
    # Entirely past the end of a short track: moved back to end at the track's end, length kept.
    assert clip_to_track(70.0, 90.0, 60.0) == (40.0, 60.0)
    assert clip_to_track(70.0, 90.0, 12.0) == (0.0, 12.0)


def test_fit_to_length() -> None:
    assert fit_to_length(30.0, 10.0, 60.0) == (25.0, 35.0)
    assert fit_to_length(2.0, 10.0, 60.0) == (0.0, 10.0)
    assert fit_to_length(58.0, 10.0, 60.0) == (50.0, 60.0)
    assert fit_to_length(5.0, 10.0, 10.0) == (0.0, 10.0)
    assert fit_to_length(5.0, 10.5, 10.0) is None


def test_top_rows() -> None:
    scores = np.array([0.1, 0.9, 0.5, 0.9, -1.0], dtype=np.float32)
    assert top_rows(scores, 3).tolist() == [1, 3, 2]  # ties keep row order
    assert top_rows(scores, 10).tolist() == [1, 3, 2, 0, 4]
    eligible = np.array([True, False, True, False, True])
    assert top_rows(scores, 2, eligible).tolist() == [2, 0]
    assert top_rows(scores, 2, np.zeros(5, dtype=bool)).tolist() == []


def test_snap_to_beat_keeps_the_moment_inside_the_track() -> None:
    beats = np.array([9.4, 10.6, 11.8, 13.0])
    assert snap_to_beat(10.0, 20.0, beats, 60.0) == (9.4, 19.4)  # equally near 9.4 and 10.6: the earlier wins
    assert snap_to_beat(10.1, 20.1, beats, 60.0) == (10.6, 20.6)
    assert snap_to_beat(11.5, 21.5, beats, 60.0) == (11.8, 21.8)
    # Beats that would push the moment past the end are not used.
    assert snap_to_beat(11.5, 21.5, beats, 21.0) == (10.6, 20.6)
    assert snap_to_beat(11.5, 21.5, beats, 19.0) is None
    assert snap_to_beat(11.5, 21.5, np.zeros(0), 60.0) is None
