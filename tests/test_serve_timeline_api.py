"""The timeline API (`GET /v1/tracks/{id}/peaks`, `/beats`, `/audio`) and its per-track cache in the library folder
(`mgsv.search.track_media`): what is computed, that it is computed once, and every bad input."""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from grounding_factory import copy_library, make_synthetic_library
from media_factory import write_test_video
from serve_factory import API_TOKEN, ServeLibrary, bearer, ready_client, serve_library

from mgsv.cli import main
from mgsv.errors import InputError
from mgsv.media.decode import read_audio
from mgsv.media.probe import probe
from mgsv.media.waveform import PEAK_HOP, PEAKS_SAMPLE_RATE, resample_peaks, track_peaks
from mgsv.search import beats as beats_module
from mgsv.search import track_media
from mgsv.search.beats import MissingExtraError, analyse_beats
from mgsv.search.library import MusicLibrary
from mgsv.search.track_media import MEDIA_DIR, PEAKS_FOLDER, TrackMedia, beats_folder

AUTH = bearer(API_TOKEN)
ENDPOINTS = ("peaks", "beats", "audio")


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory, debian_music: dict[str, Path]) -> ServeLibrary:
    return serve_library(tmp_path_factory, debian_music)


@pytest.fixture(scope="module")
def client(lib: ServeLibrary, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """A server on its own copy of the serve library (its cache starts empty)."""
    folder = tmp_path_factory.mktemp("timeline-api")
    library = copy_library(lib.library, folder / "library")
    with ready_client(lib.settings(library=library, work_dir=folder)) as test_client:
        yield test_client


@pytest.fixture(autouse=True)
def fresh_beat_memo(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no beats remembered in this process, so that counted analyses are real."""
    monkeypatch.setattr(beats_module, "_memo", OrderedDict())


def assert_error(response, status: int, code: str, *words: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code, body
    for word in words:
        assert word in body["message"], body["message"]
    return body


def counting(monkeypatch: pytest.MonkeyPatch, module: object, name: str, pause: float = 0.0) -> list[str]:
    """Replace module.name by a wrapper that records each call (after `pause` seconds: calls overlap)."""
    real = getattr(module, name)
    calls: list[str] = []

    def wrapper(path, *args, **kwargs):
        calls.append(str(path))
        time.sleep(pause)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return calls


# -------------------------------------------------------------------------------------------------- peaks maths


@pytest.mark.parametrize("width", [1, 2, 3, 7, 10, 11, 25, 40])
def test_resample_peaks_takes_the_extremes_of_each_columns_slices(width: int) -> None:
    rng = np.random.default_rng(width)
    peaks = np.sort(rng.uniform(-1, 1, (10, 2)), axis=1).astype(np.float16)
    columns = resample_peaks(peaks, width)
    assert columns.shape == (width, 2)
    for i in range(width):
        # Column i covers slices floor(i * n / width) .. floor((i + 1) * n / width), at least one of them.
        first = int(np.floor(i * 10 / width))
        last = max(first + 1, int(np.floor((i + 1) * 10 / width)))
        assert columns[i, 0] == peaks[first:last, 0].astype(np.float32).min()
        assert columns[i, 1] == peaks[first:last, 1].astype(np.float32).max()
    assert resample_peaks(np.zeros((0, 2), np.float16), 5).shape == (5, 2)
    with pytest.raises(ValueError, match="width"):
        resample_peaks(peaks, 0)


def test_track_peaks_are_the_extremes_of_each_10_ms(debian_music: dict[str, Path]) -> None:
    path = debian_music["wesnoth"] / "defeat2.ogg"
    peaks = track_peaks(path)
    samples = read_audio(path, sample_rate=PEAKS_SAMPLE_RATE)
    assert peaks.dtype == np.float16 and len(peaks) == -(-len(samples) // PEAK_HOP)
    blocks = [samples[i : i + PEAK_HOP] for i in range(0, len(samples), PEAK_HOP)]
    expected = np.array([[b.min(), b.max()] for b in blocks], dtype=np.float16)
    np.testing.assert_array_equal(peaks, expected)
    assert len(track_peaks(path, max_seconds=2.0)) == 200
    with pytest.raises(InputError, match="file not found"):
        track_peaks(path.parent / "no-such-track.ogg")


# ------------------------------------------------------------------------------------------------------ the API


def test_peaks_of_a_track(client: TestClient, lib: ServeLibrary) -> None:
    response = client.get("/v1/tracks/Chimes They Fade/peaks", params={"width": 300}, headers=AUTH)
    assert response.status_code == 200, response.text
    body = response.json()
    track = MusicLibrary(lib.library).track("Chimes They Fade")
    assert body["track_id"] == track.id and body["duration"] == track.duration and body["width"] == 300
    assert body["seconds"] == pytest.approx(track.duration, abs=0.011)
    low, high = np.array(body["min"]), np.array(body["max"])
    assert low.shape == high.shape == (300,) and (low <= high).all() and low.min() >= -1 and high.max() <= 1
    expected = resample_peaks(track_peaks(track.path), 300)
    np.testing.assert_allclose(low, expected[:, 0], atol=6e-5)  # the answer is rounded to 4 decimals
    np.testing.assert_allclose(high, expected[:, 1], atol=6e-5)
    default = client.get("/v1/tracks/Chimes They Fade/peaks", headers=AUTH).json()
    assert default["width"] == 1000 and len(default["min"]) == 1000


@pytest.mark.parametrize("width", ["0", "-1", "nan", "inf", "1e3", "1.5", "4097", str(10**30), "abc", ""])
def test_bad_widths_are_refused(client: TestClient, width: str) -> None:
    response = client.get(f"/v1/tracks/defeat2/peaks?width={width}", headers=AUTH)
    assert_error(response, 422, "invalid_request", "width")


def test_peaks_and_beats_are_computed_once_per_track(
    lib: ServeLibrary, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    library = copy_library(lib.library, tmp_path / "library")
    track = MusicLibrary(library).track("elf-land")
    peak_calls = counting(monkeypatch, track_media, "track_peaks", pause=0.5)
    beat_calls = counting(monkeypatch, beats_module, "analyse_beats", pause=0.5)
    peaks_file = library / MEDIA_DIR / PEAKS_FOLDER / f"{track.content_hash}.npy"
    beats_file = library / MEDIA_DIR / beats_folder() / f"{track.content_hash}.npy"
    with ready_client(lib.settings(library=library, work_dir=tmp_path)) as client, ThreadPoolExecutor(8) as pool:
        # Eight requests at once (two media workers): one computation each.
        urls = ["/v1/tracks/elf-land/peaks?width=64"] * 4 + ["/v1/tracks/elf-land/beats"] * 4
        answers = list(pool.map(lambda url: client.get(url, headers=AUTH), urls))
        assert [a.status_code for a in answers] == [200] * 8
        assert len({str(a.json()) for a in answers[:4]}) == 1 and len({str(a.json()) for a in answers[4:]}) == 1
        assert peak_calls == [track.path] and beat_calls == [track.path]
        assert peaks_file.is_file() and beats_file.is_file()
        assert [p.name for p in peaks_file.parent.iterdir()] == [peaks_file.name]  # no temporary file left
        stamps = peaks_file.stat().st_mtime_ns, beats_file.stat().st_mtime_ns
        assert client.get("/v1/tracks/elf-land/peaks?width=500", headers=AUTH).status_code == 200
        assert client.get("/v1/tracks/elf-land/beats", headers=AUTH).status_code == 200
    assert (peaks_file.stat().st_mtime_ns, beats_file.stat().st_mtime_ns) == stamps
    monkeypatch.setattr(beats_module, "_memo", OrderedDict())
    with ready_client(lib.settings(library=library, work_dir=tmp_path)) as client:  # a restarted server
        assert client.get("/v1/tracks/elf-land/peaks", headers=AUTH).status_code == 200
        assert client.get("/v1/tracks/elf-land/beats", headers=AUTH).json()["beats"] == answers[4].json()["beats"]
        assert len(peak_calls) == 1 and len(beat_calls) == 1  # read from the library folder

        # A damaged cache file is computed again and replaced.
        peaks_file.write_bytes(b"not a numpy file")
        beats_file.write_bytes(b"\x93NUMPY truncated")
        assert client.get("/v1/tracks/elf-land/peaks", headers=AUTH).status_code == 200
        assert client.get("/v1/tracks/elf-land/beats", headers=AUTH).status_code == 200
        assert len(peak_calls) == 2 and len(beat_calls) == 2
    assert np.load(peaks_file).dtype == np.float16 and np.load(beats_file).dtype == np.float64


def test_a_malformed_cache_file_is_not_served(lib: ServeLibrary, tmp_path: Path) -> None:
    library = copy_library(lib.library, tmp_path / "library")
    track = MusicLibrary(library).track("defeat2")
    media = TrackMedia(library)
    file = library / MEDIA_DIR / PEAKS_FOLDER / f"{track.content_hash}.npy"
    file.parent.mkdir(parents=True)
    np.save(file, np.full((5, 2), np.nan, dtype=np.float16))  # a readable array, but not peaks
    assert media.cached_peaks(track) is None
    assert len(media.peaks(track)) == len(track_peaks(track.path))
    np.save(file, np.zeros((4, 3), dtype=np.float16))
    assert media.cached_peaks(track) is None


def test_the_beats_are_the_ones_snapping_uses(client: TestClient, lib: ServeLibrary, tmp_path: Path) -> None:
    video = write_test_video(tmp_path / "clip.mp4", seconds=6, fps=5, tone_hz=330)
    response = client.post(
        "/v1/ground",
        headers=AUTH,
        files={"video": ("clip.mp4", video.read_bytes(), "video/mp4")},
        data={"top": "5", "fit_duration": "true", "snap": "beats"},
    )
    assert response.status_code == 200, response.text
    moments = response.json()["moments"]
    assert any(m["snapped"] for m in moments)
    library = MusicLibrary(lib.library)
    for moment in moments:
        body = client.get(f"/v1/tracks/{moment['track_id']}/beats", headers=AUTH).json()
        beats = np.array(body["beats"])
        # A fresh analysis in this process (no memo, no cache file) gives the same times.
        np.testing.assert_array_equal(beats, analyse_beats(library.track(moment["track_id"]).path))
        if moment["snapped"]:
            assert np.min(np.abs(beats - moment["start_s"])) <= 5e-4, moment  # moments are given to the ms
        assert body["tempo_bpm"] == pytest.approx(60 / np.median(np.diff(beats)), abs=0.01)
        assert body["seconds"] == pytest.approx(body["duration"]) and (np.diff(beats) > 0).all()


def test_the_whole_track_as_mp3(client: TestClient, lib: ServeLibrary, tmp_path: Path) -> None:
    response = client.get("/v1/tracks/Chimes They Fade/audio", headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/mpeg"
    clip = tmp_path / "track.mp3"
    clip.write_bytes(response.content)
    track = MusicLibrary(lib.library).track("Chimes They Fade")
    info = probe(clip)
    assert info.audio is not None and info.audio.channels == 2
    assert info.duration == pytest.approx(track.duration, abs=0.1)
    # It is that track from its start: the loudness envelopes (0.25 s blocks) follow each other.
    original, heard = read_audio(track.path, 16000), read_audio(clip, 16000)
    n = min(len(original), len(heard)) // 4000 * 4000
    a = np.sqrt((original[:n].reshape(-1, 4000) ** 2).mean(axis=1))
    b = np.sqrt((heard[:n].reshape(-1, 4000) ** 2).mean(axis=1))
    assert np.corrcoef(a, b)[0, 1] > 0.95


def test_unknown_tracks_and_tracks_without_a_readable_file(client: TestClient, lib: ServeLibrary, tmp_path: Path):
    for endpoint in ENDPOINTS:
        assert_error(client.get(f"/v1/tracks/no-such-track/{endpoint}", headers=AUTH), 404, "unknown_track")
        traversal = client.get(f"/v1/tracks/..%2F..%2Fetc%2Fpasswd/{endpoint}", headers=AUTH)
        assert traversal.status_code == 404
        assert client.get(f"/v1/tracks/defeat2/{endpoint}").status_code == 401
    gone = tmp_path / "moved-away.ogg"
    moved = make_synthetic_library(tmp_path / "moved", lib.setup.music_spec, [30.0], audio=gone)
    garbage = tmp_path / "garbage.ogg"
    garbage.write_bytes(os.urandom(50_000))
    broken = make_synthetic_library(tmp_path / "broken", lib.setup.music_spec, [30.0], audio=garbage)
    for library, status, code in ((moved, 500, "track_file_missing"), (broken, 500, "track_unreadable")):
        with ready_client(lib.settings(library=library.root, work_dir=tmp_path)) as server:
            track_id = server.get("/v1/tracks", headers=AUTH).json()["tracks"][0]["id"]
            for endpoint in ENDPOINTS:
                body = assert_error(server.get(f"/v1/tracks/{track_id}/{endpoint}", headers=AUTH), status, code)
                assert track_id in body["message"] and str(tmp_path) not in body["message"]  # no server paths
        assert not (library.root / MEDIA_DIR).exists() or not any((library.root / MEDIA_DIR).rglob("*.npy"))


def test_beats_need_librosa(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    def missing():
        raise MissingExtraError("snapping to beats needs librosa, which is not installed: pip install 'mgsv[beats]'")

    monkeypatch.setattr(track_media, "require_librosa", missing)
    assert_error(client.get("/v1/tracks/defeat2/beats", headers=AUTH), 501, "beats_unavailable", "mgsv[beats]")
    assert client.get("/v1/tracks/defeat2/peaks", headers=AUTH).status_code == 200  # the waveform needs no librosa


def test_a_library_folder_that_cannot_be_written_still_answers(
    lib: ServeLibrary, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    library = copy_library(lib.library, tmp_path / "library")

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(track_media, "atomic_writer", refused)
    with ready_client(lib.settings(library=library, work_dir=tmp_path)) as client, caplog.at_level(logging.WARNING):
        assert client.get("/v1/tracks/victory2/peaks", headers=AUTH).status_code == 200
        assert client.get("/v1/tracks/victory2/beats", headers=AUTH).status_code == 200
    assert not any((library / MEDIA_DIR).rglob("*.npy"))
    assert "cannot cache it" in caplog.text


def test_removing_a_track_forgets_its_media(
    lib: ServeLibrary, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    library = copy_library(lib.library, tmp_path / "library")
    music = MusicLibrary(library)
    media = TrackMedia(library)
    kept, removed = music.track("defeat2"), music.track("victory2")
    for track in (kept, removed):
        media.peaks(track)
        media.beats(track)
    with pytest.raises(SystemExit) as exit_info:
        main(["library", "remove", "victory2", "--library", str(library)])
    assert exit_info.value.code in (0, None), capsys.readouterr()
    files = sorted(p.name for p in (library / MEDIA_DIR).rglob("*.npy"))
    assert files == [f"{kept.content_hash}.npy"] * 2
    assert media.forget(["not-a-hash", "../../etc"]) == 0


def test_the_endpoints_are_in_the_schema(client: TestClient) -> None:
    paths = client.get("/v1/openapi.json", headers=AUTH).json()["paths"]
    for endpoint in ENDPOINTS:
        assert f"/v1/tracks/{{track_id}}/{endpoint}" in paths
    width = next(p for p in paths["/v1/tracks/{track_id}/peaks"]["get"]["parameters"] if p["name"] == "width")
    assert width["schema"]["minimum"] == 1 and width["schema"]["maximum"] == 4096
