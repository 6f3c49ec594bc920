"""`mgsv demo` end to end through the console script: library, rendered video, what it says, and its folder rules."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import av
import pandas as pd
import pytest

from mgsv.cli import main
from mgsv.demo.music import find_debian_music
from mgsv.demo.run import MARKER, prepare_folder
from mgsv.errors import OutputExistsError
from mgsv.search.library import MusicLibrary

MEDIA_ROOT = Path(os.environ.get("MGSV_TEST_MEDIA", Path(__file__).resolve().parents[1] / ".media"))
GENERATED = {f"generated-{i:02d}" for i in range(1, 11)}


def run_demo_cli(out: Path, music_root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m mgsv demo --out OUT --epochs 1 ...` with the demo's music looked for only under `music_root`."""
    env = {**os.environ, "MGSV_DEMO_MUSIC_ROOT": str(music_root), "COLUMNS": "200", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "mgsv", "demo", "--out", str(out), "--epochs", "1", *args],
                          capture_output=True, text=True, env=env, timeout=600, check=False)


def decoded_seconds(path: Path) -> tuple[float, float | None]:
    """Seconds of video (frames / rate) and of audio (samples / rate; None: no audio stream) PyAV decodes."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        video_s = sum(1 for _ in container.decode(video)) / float(video.average_rate)
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return video_s, None
        audio = container.streams.audio[0]
        return video_s, sum(frame.samples for frame in container.decode(audio)) / audio.rate


def shown_query(out: Path, stdout: str) -> pd.Series:
    """The test video the demo grounded: the row of test_data.csv its output names ("cut from TRACK A-B s")."""
    found = re.search(r"cut from (.+) (\d+\.\d)-(\d+\.\d) s\)", stdout)
    assert found, stdout
    rows = pd.read_csv(out / "data" / "test_data.csv")
    track, start, end = found.group(1), float(found.group(2)), float(found.group(3))
    rows = rows[(rows.music_id == track) & (rows.music_start == start) & (rows.music_end == end)]
    assert len(rows) == 1, f"{found.group(0)!r} is not one of the demo's test videos"
    return rows.iloc[0]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str], set[str]]:
    """One demo run on Debian's music when `.media` has it (else on generated music): (folder, process, track ids)."""
    debian = find_debian_music([MEDIA_ROOT])
    music_root = MEDIA_ROOT if debian else tmp_path_factory.mktemp("no-music")
    out = tmp_path_factory.mktemp("demo") / "demo"
    expected = {path.stem for path in debian} if debian else GENERATED
    return out, run_demo_cli(out, music_root), expected


@pytest.mark.slow
def test_demo_builds_a_library_grounds_and_renders(demo_run: tuple) -> None:
    out, result, expected = demo_run
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    library = MusicLibrary(out / "library")
    tracks = library.tracks()
    assert {track.id for track in tracks} == expected
    if expected != GENERATED:
        assert all(track.duration <= 60.5 for track in tracks)  # one-minute excerpts
    query = shown_query(out, result.stdout)
    video_s, _ = decoded_seconds(out / "query-video.mp4")
    assert video_s == pytest.approx(query.video_end, abs=0.1)
    rendered_video_s, rendered_audio_s = decoded_seconds(out / "query-video-with-music.mp4")
    assert rendered_audio_s is not None, "the rendered video has no audio stream"
    assert rendered_video_s == pytest.approx(video_s, abs=0.1)
    assert rendered_audio_s == pytest.approx(video_s, abs=0.1)
    for name in ("last", "best_r1"):
        assert (out / "run" / "checkpoints" / name / "model.safetensors").is_file()
    assert (out / "run" / "curves.png").is_file() and (out / MARKER).is_file()
    assert str(out / "query-video-with-music.mp4") in result.stdout
    # It says plainly that the model is a demo, and how to get real encoders and train on MGSV-EC.
    assert "This was a DEMO" in result.stdout and "knows nothing about real videos" in result.stdout
    for step in ("openai/clip-vit-base-patch32", "MIT/ast-finetuned-audioset-10-10-0.4593", "docs/encoders.md",
                 "mgsv data fetch --out data/MGSV-EC --import", "xxayt/MGSV-EC", "mgsv train --preset made"):
        assert step in result.stdout, step


@pytest.mark.slow
def test_generated_music_and_an_earlier_demo_folder_is_replaced(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    out.mkdir()
    (out / MARKER).write_text("made by mgsv demo; safe to delete\n")
    (out / "left-over.txt").write_text("from the earlier demo")
    no_music = tmp_path / "no-music"  # MGSV_DEMO_MUSIC_ROOT at an empty folder: generated tracks
    no_music.mkdir()
    result = run_demo_cli(out, no_music)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "10 generated tracks" in result.stdout
    assert not (out / "left-over.txt").exists()
    assert {track.id for track in MusicLibrary(out / "library").tracks()} == GENERATED
    query = shown_query(out, result.stdout)
    video_s, audio_s = decoded_seconds(out / "query-video-with-music.mp4")
    assert video_s == pytest.approx(query.video_end, abs=0.1)
    assert audio_s is not None and audio_s == pytest.approx(query.video_end, abs=0.1)


def test_a_folder_the_demo_did_not_make_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--out", str(out), "--epochs", "1"])
    assert exit_info.value.code != 0
    error = capsys.readouterr().err
    assert "is not an mgsv demo folder" in error and "--force" in error and "Traceback" not in error
    assert (out / "precious.txt").read_text() == "keep me" and not (out / MARKER).exists()


def test_out_must_be_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    regular = tmp_path / "notes.txt"
    regular.write_text("not a folder")
    for extra in ([], ["--force"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["demo", "--out", str(regular), *extra])
        assert exit_info.value.code != 0
        error = capsys.readouterr().err
        assert str(regular) in error.replace("\n", "") and "is not a folder" in error and "Traceback" not in error
    assert regular.read_text() == "not a folder"
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--out", str(tmp_path / "x"), "--epochs", "0"])
    assert exit_info.value.code == 2 and "Traceback" not in capsys.readouterr().err  # usage error
    assert not (tmp_path / "x").exists()


def test_force_replaces_another_folder_but_never_the_current_or_home_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "old.txt").write_text("replace me")
    prepare_folder(out, force=True)
    assert sorted(p.name for p in out.iterdir()) == [MARKER]
    (tmp_path / "work.txt").write_text("keep me")
    monkeypatch.chdir(out)
    for folder in (out, tmp_path):  # the current folder (an earlier demo's) and a parent of it
        with pytest.raises(OutputExistsError, match="refusing to replace the current folder"):
            prepare_folder(folder, force=True)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "notes.txt").write_text("keep me")
    with pytest.raises(OutputExistsError, match="home"):
        prepare_folder(tmp_path / "home", force=True)
    assert (tmp_path / "work.txt").exists() and (tmp_path / "home" / "notes.txt").exists()
