"""`mgsv extract`: media files -> feature store; ids, content hashes, resuming, spec checks and every bad file."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
from grounding_factory import TinySetup, make_tiny_setup
from media_factory import write_test_video, write_truncated_copy

from mgsv.cli import main
from mgsv.extract.hashing import ContentIndex
from mgsv.extract.pipeline import INDEX_FILE, EncoderOptions, extract_features
from mgsv.features.store import FeatureStore
from mgsv.files.discover import find_media
from mgsv.files.hashing import content_hash


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> TinySetup:
    return make_tiny_setup(tmp_path_factory.mktemp("extract-models"))


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Query videos named like MGSV-EC video ids, of 3-6 s."""
    folder = tmp_path_factory.mktemp("clips")
    for number, seconds in enumerate((3.0, 4.5, 6.0)):
        write_test_video(folder / f"11372218834{number}.mp4", seconds=seconds, fps=5, seed=number)
    return folder


def options(setup: TinySetup) -> EncoderOptions:
    return EncoderOptions(clip=str(setup.clip_dir), ast=str(setup.ast_dir), dtype="fp32", batch_size=32)


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def test_extract_videos_and_music_into_a_store(
    setup: TinySetup, clips: Path, debian_music: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    music = [debian_music["wesnoth"] / "victory.ogg", debian_music["hyperrogue"] / "hr-savino-ocean.ogg"]
    store_dir = tmp_path / "features"
    code, out, _ = run_cli(
        [
            "extract",
            "--videos",
            str(clips),
            "--music",
            str(music[0]),
            "--music",
            str(music[1]),
            "--store",
            str(store_dir),
            "--clip",
            str(setup.clip_dir),
            "--ast",
            str(setup.ast_dir),
            "--dtype",
            "fp32",
            "--json",
        ],
        capsys,
    )
    report = json.loads(out)
    assert code == 0 and report["ok"]
    assert report["modalities"]["video"]["encoded"] == 3 and report["modalities"]["music"]["encoded"] == 2

    store = FeatureStore(store_dir)
    assert store.specs == {"video": setup.video_spec, "music": setup.music_spec}
    assert store.verify() == {"video": 3, "music": 2}
    videos = store.modality("video")
    assert sorted(videos.ids) == ["113722188340", "113722188341", "113722188342"]
    # One frame per whole second shown: 3 s -> 3 frames, 4.5 s -> 5, 6 s -> 6; equal to encoding them directly.
    assert list(videos.lengths(["113722188340", "113722188341", "113722188342"])) == [3, 5, 6]
    from mgsv.media.decode import read_video_frames

    direct = setup.clip().encode(read_video_frames(clips / "113722188341.mp4").frames)
    stored, mask = videos.get("113722188341")
    np.testing.assert_allclose(stored.numpy(), direct, rtol=2e-3, atol=2e-3)  # stored as float16
    assert mask.all()
    tracks = store.modality("music")
    assert list(tracks.lengths(["victory", "hr-savino-ocean"])) == [3, 25]  # windows with centre <= duration

    index = ContentIndex(store_dir / INDEX_FILE)
    assert index.hash_of("music", "hr-savino-ocean") == content_hash(music[1])
    assert index.path_of("video", "113722188340") == str((clips / "113722188340.mp4").resolve())


def test_a_killed_run_resumes_and_skips_what_is_stored(setup: TinySetup, clips: Path, tmp_path: Path) -> None:
    class Killed(Exception):
        pass

    seen: list[int] = []

    def kill_after_two(stage: str, done: int, total: int) -> None:
        seen.append(done)
        if done == 2:
            raise Killed  # stands in for a kill: the process stops between two items

    store_dir = tmp_path / "features"
    with pytest.raises(Killed):
        extract_features(store_dir, [clips], encoders=options(setup), flush_every=1, progress=kill_after_two)
    # Item 1 was published with its index entry; item 2 was added but its shard never published.
    assert FeatureStore(store_dir).verify() == {"video": 1}

    report = extract_features(store_dir, [clips], encoders=options(setup), flush_every=1)
    video = report.modalities["video"]
    assert (video.already_stored, video.encoded) == (1, 2)
    assert FeatureStore(store_dir).verify() == {"video": 3}

    again = extract_features(store_dir, [clips], encoders=options(setup)).modalities["video"]
    assert (again.already_stored, again.encoded) == (3, 0)


def test_copies_are_not_encoded_twice_and_name_clashes_are_refused(
    setup: TinySetup, clips: Path, tmp_path: Path
) -> None:
    inputs = tmp_path / "in"
    shutil.copytree(clips, inputs)
    store_dir = tmp_path / "features"
    extract_features(store_dir, [inputs], encoders=options(setup))

    # A renamed copy: its stored features are copied, not recomputed.
    shutil.copyfile(inputs / "113722188340.mp4", inputs / "999.mp4")
    # Same stem, other content, in another folder: both files are named in the failure.
    (inputs / "sub").mkdir()
    clash = write_test_video(inputs / "sub" / "113722188341.mp4", seconds=2, fps=5, seed=9)
    report = extract_features(store_dir, [inputs], encoders=options(setup))
    video = report.modalities["video"]
    assert (video.encoded, video.copied, video.already_stored) == (0, 1, 2)
    assert sorted(f.path for f in video.failures) == sorted([str(inputs / "113722188341.mp4"), str(clash)])
    for failure in video.failures:
        assert "id '113722188341' is shared by files with different content" in failure.reason
        assert str(clash) in failure.reason and str(inputs / "113722188341.mp4") in failure.reason
    table = FeatureStore(store_dir).modality("video")
    np.testing.assert_array_equal(table.get("999")[0].numpy(), table.get("113722188340")[0].numpy())

    # A different file under a stored id is refused (the index knows the stored content).
    other = tmp_path / "other"
    other.mkdir()
    write_test_video(other / "113722188342.mp4", seconds=2, fps=5, seed=11)
    report = extract_features(store_dir, [other], encoders=options(setup))
    (failure,) = report.modalities["video"].failures
    assert "is already stored with other content" in failure.reason and "`ids` hash" in failure.reason


def test_hash_ids(setup: TinySetup, clips: Path, tmp_path: Path) -> None:
    report = extract_features(tmp_path / "features", [clips], encoders=options(setup), ids="hash")
    assert report.ok
    expected = sorted(content_hash(p)[:16] for p in clips.glob("*.mp4"))
    assert sorted(FeatureStore(tmp_path / "features").modality("video").ids) == expected


def test_long_videos_use_a_window(setup: TinySetup, tmp_path: Path) -> None:
    folder = tmp_path / "long"
    folder.mkdir()
    write_test_video(folder / "long.mp4", seconds=56, fps=2, size=(64, 48))
    report = extract_features(tmp_path / "a", [folder], encoders=options(setup))
    (warning,) = report.modalities["video"].warnings
    assert "56.0 s long: features cover seconds 0-50" in warning.reason and "`window_start`" in warning.reason
    assert FeatureStore(tmp_path / "a").modality("video").lengths(["long"])[0] == 50

    report = extract_features(tmp_path / "b", [folder], encoders=options(setup), window_start=10)
    assert report.modalities["video"].warnings == []  # seconds 10-55: nothing left out but what was asked
    assert FeatureStore(tmp_path / "b").modality("video").lengths(["long"])[0] == 46


def test_every_bad_file_is_reported_and_the_batch_goes_on(
    setup: TinySetup, clips: Path, debian_music: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    videos = tmp_path / "videos"
    shutil.copytree(clips, videos)
    (videos / "corrupt.mp4").write_bytes(os.urandom(5000))
    (videos / "empty.mp4").write_bytes(b"")
    write_truncated_copy(clips / "113722188342.mp4", videos / "truncated.mp4", 0.5)
    (videos / "text.mkv").write_text("not a video")
    (videos / "dangling.mp4").symlink_to(tmp_path / "gone.mp4")
    shutil.copyfile(debian_music["wesnoth"] / "victory.ogg", videos / "audio-only.mp4")
    with av.open(str(videos / "huge.mkv"), "w") as container:  # one 8200x8200 frame: beyond 8K, refused
        stream = container.add_stream("mjpeg", rate=1)
        stream.width = stream.height = 8200
        stream.pix_fmt = "yuvj420p"
        frame = av.VideoFrame(8200, 8200, "yuvj420p")
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    music = tmp_path / "music"
    music.mkdir()
    shutil.copyfile(debian_music["wesnoth"] / "silence.ogg", music / "silence.ogg")
    shutil.copyfile(debian_music["wesnoth"] / "defeat.ogg", music / "defeat.ogg")
    silent_video = write_test_video(tmp_path / "no-audio.mp4", seconds=2, audio=False)

    code, out, _ = run_cli(
        [
            "extract",
            "--videos",
            str(videos),
            "--videos",
            str(videos / "text.mkv"),
            "--videos",
            str(tmp_path / "nowhere"),
            "--music",
            str(music),
            "--music",
            str(silent_video),
            "--store",
            str(tmp_path / "features"),
            "--clip",
            str(setup.clip_dir),
            "--ast",
            str(setup.ast_dir),
            "--dtype",
            "fp32",
            "--json",
        ],
        capsys,
    )
    report = json.loads(out)
    assert code == 1 and not report["ok"]
    video, music_report = report["modalities"]["video"], report["modalities"]["music"]
    assert video["encoded"] == 3 and music_report["encoded"] == 1
    reasons = {Path(f["path"]).name: f["reason"] for part in (video, music_report) for f in part["failures"]}
    assert "not a readable media file" in reasons["corrupt.mp4"]
    assert reasons["empty.mp4"] == "empty file (0 bytes)"
    assert "not a readable media file" in reasons["truncated.mp4"]
    assert "not a readable media file" in reasons["text.mkv"]
    assert "cannot read" in reasons["dangling.mp4"] or "not found" in reasons["dangling.mp4"]
    assert reasons["audio-only.mp4"] == "has no video stream"
    assert "too large to decode" in reasons["huge.mkv"]
    assert "digital silence" in reasons["silence.ogg"]
    assert reasons["no-audio.mp4"] == "video has no audio track"
    assert report["input_problems"] == [{"path": str(tmp_path / "nowhere"), "reason": "not found"}]
    assert FeatureStore(tmp_path / "features").verify() == {"video": 3, "music": 1}

    code, out, _ = run_cli(
        ["extract", "--videos", str(videos), "--store", str(tmp_path / "features2"), "--clip", str(setup.clip_dir)],
        capsys,
    )
    assert code == 1
    assert "failed (7):" in out and "empty.mp4: empty file (0 bytes)" in out


def test_a_store_made_with_another_encoder_is_refused(
    setup: TinySetup, clips: Path, debian_music: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extract_features(tmp_path / "features", [clips], encoders=options(setup))
    other = make_tiny_setup(tmp_path / "other", seed=1)
    code, _, err = run_cli(
        ["extract", "--videos", str(clips), "--store", str(tmp_path / "features"), "--clip", str(other.clip_dir)],
        capsys,
    )
    assert code == 1 and "feature spec mismatch for video" in err and "encoder:" in err

    # A modality the store was created without.
    code, _, err = run_cli(
        [
            "extract",
            "--music",
            str(debian_music["wesnoth"] / "victory.ogg"),
            "--store",
            str(tmp_path / "features"),
            "--ast",
            str(setup.ast_dir),
        ],
        capsys,
    )
    assert code == 1 and "created without music features" in err


def test_no_inputs_and_discovery(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["extract", "--store", str(tmp_path / "s")], capsys)
    assert code == 2 and "give --videos and/or --music" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, _ = run_cli(["extract", "--videos", str(empty), "--store", str(tmp_path / "s")], capsys)
    assert code == 1 and f"{empty}: no video files in this folder" in out  # named, not silently ignored

    (empty / ".hidden.mp4").write_bytes(b"x")
    (empty / "notes.txt").write_text("x")
    (empty / "a").mkdir()
    (empty / "a" / "B.MP4").write_bytes(b"x")
    (empty / "a" / "song.flac").write_bytes(b"x")
    found = find_media([empty, empty / "notes.txt"], "video")
    assert found.files == [empty / "a" / "B.MP4", empty / "notes.txt"]
    assert find_media([empty], "music").files == [empty / "a" / "song.flac"]


def test_preprocessing_choices_are_recorded_and_applied(
    setup: TinySetup, debian_music: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mgsv.encoders.ast import AstMusicEncoder
    from mgsv.encoders.clip import ClipFrameEncoder
    from mgsv.encoders.inputs import decode_video, encode_track, encode_video
    from mgsv.features.spec import music_spec, video_spec
    from mgsv.media.tracks import decode_track

    song = debian_music["wesnoth"] / "victory.ogg"
    (tmp_path / "v").mkdir()
    ntsc = write_test_video(tmp_path / "v" / "113722188349.mp4", seconds=3.5, fps=30000 / 1001, pattern="noise")
    store_dir = tmp_path / "features"
    code, out, _ = run_cli(["extract", "--videos", str(ntsc), "--music", str(song), "--store", str(store_dir),
                            "--clip", str(setup.clip_dir), "--ast", str(setup.ast_dir), "--dtype", "fp32",
                            "--music-channel", "mean", "--resampler", "soxr", "--frame-times", "shown",
                            "--jpeg-quality", "90", "--json"], capsys)
    assert code == 0 and json.loads(out)["ok"]
    store = FeatureStore(store_dir)
    assert store.spec("music").params == music_spec(channel="mean", resampler="soxr").params
    assert store.spec("video").params == video_spec(frame_times="shown", jpeg_quality=90).params
    # The stored features are those of media decoded with these choices.
    ast = AstMusicEncoder.from_pretrained(setup.ast_dir, dtype="float32", channel="mean", resampler="soxr")
    tokens, _ = encode_track(decode_track(song, channel="mean", resampler="soxr"), ast)
    np.testing.assert_allclose(store.modality("music").get("victory")[0].numpy(), tokens[:3], rtol=2e-3, atol=2e-3)
    clip = ClipFrameEncoder.from_pretrained(setup.clip_dir, dtype="float32", frame_times="shown", jpeg_quality=90)
    frames, _ = encode_video(decode_video(ntsc, frame_times="shown", jpeg_quality=90), clip)
    np.testing.assert_allclose(store.modality("video").get("113722188349")[0].numpy(), frames, rtol=2e-3, atol=2e-3)
    # A track or video decoded with other choices than its encoder's is decoded again, as the encoder needs.
    official = decode_track(song)
    assert official.decode_options == {"channel": 0, "resampler": "sinc"}
    np.testing.assert_array_equal(encode_track(official, ast)[0], tokens)
    np.testing.assert_array_equal(encode_video(decode_video(ntsc), clip)[0], frames)
    # An existing store refuses an encoder of other choices, saying which.
    code, _, err = run_cli(["extract", "--music", str(song), "--store", str(store_dir), "--ast", str(setup.ast_dir),
                            "--dtype", "fp32"], capsys)
    assert code == 1 and "made with channel=0 where channel='mean' is expected" in err
    assert f"re-make the music features of {store_dir}" in err
