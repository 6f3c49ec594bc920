"""`mgsv serve` HTTP API: tokens, grounding, previews, renders, admin uploads, every limit and bad upload, the queue."""

from __future__ import annotations

import fcntl
import io
import json
import logging
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient
from grounding_factory import copy_library, make_synthetic_library
from media_factory import write_test_video, write_tone
from serve_factory import ADMIN_TOKEN, API_TOKEN, ServeLibrary, bearer, ready_client, serve_library, wait_ready

from mgsv.cli import main
from mgsv.media.decode import read_audio
from mgsv.media.probe import probe
from mgsv.search import GroundOptions
from mgsv.search.grounder import Grounder
from mgsv.search.library import MusicLibrary
from mgsv.serve import ground_api
from mgsv.serve.app import create_app
from mgsv.serve.jobs import JobQueue, QueueFull
from mgsv.serve.media_checks import peek_video_duration
from mgsv.serve.settings import MB, Limits
from mgsv.serve.tempdirs import PrivateTempRoot

AUTH = bearer(API_TOKEN)


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory, debian_music: dict[str, Path]) -> ServeLibrary:
    return serve_library(tmp_path_factory, debian_music)


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6 s query video with its own soundtrack."""
    return write_test_video(tmp_path_factory.mktemp("serve-query") / "query.mp4", seconds=6, fps=5, tone_hz=330)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serve-work")


@pytest.fixture(scope="module")
def client(lib: ServeLibrary, work: Path) -> Iterator[TestClient]:
    """A server with default limits, shared by the tests that do not change settings."""
    with ready_client(lib.settings(work_dir=work)) as test_client:
        yield test_client


def post_video(client: TestClient, data: bytes, name: str = "clip.mp4", **fields: str):
    return client.post("/v1/ground", headers=AUTH, files={"video": (name, data, "video/mp4")}, data=fields)


def private_dirs(base: Path) -> list[Path]:
    return sorted(base.glob("mgsv-serve-*"))


def leftover_request_dirs(base: Path) -> list[Path]:
    return [p for d in private_dirs(base) for p in d.glob("req-*")]


def assert_error(response, status: int, code: str, *words: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code, body
    assert body["request_id"] == response.headers["X-Request-ID"]
    for word in words:
        assert word in body["message"], body["message"]
    return body


# ------------------------------------------------------------------------------------------- status and tokens


def test_health_is_open_and_ready_reports_the_library(client: TestClient, lib: ServeLibrary) -> None:
    health = client.get("/v1/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    ready = client.get("/v1/ready", headers=AUTH)
    assert ready.status_code == 200
    body = ready.json()
    assert body["ready"] and body["tracks"] == len(lib.tracks)
    assert body["limits"]["max_upload_mb"] == 200 and body["limits"]["max_video_seconds"] == 60
    # Security headers on every response, the page included.
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert client.get("/static/app.js").status_code == 200


def test_tokens(client: TestClient) -> None:
    missing = assert_error(client.get("/v1/tracks"), 401, "missing_token", "Authorization: Bearer")
    assert missing["message"]
    assert client.get("/v1/tracks").headers["WWW-Authenticate"].startswith("Bearer")
    assert_error(client.get("/v1/tracks", headers=bearer("wrong-token-wrong-token")), 401, "invalid_token")
    assert_error(client.get("/v1/tracks", headers={"Authorization": "Basic abc"}), 401, "unauthorized", "Bearer")
    assert_error(client.get("/v1/ready"), 401, "missing_token")
    assert_error(client.get("/v1/openapi.json"), 401, "missing_token")
    assert_error(client.post("/v1/ground"), 401, "missing_token")
    # The admin token opens the user endpoints; the API token does not open the admin ones.
    assert client.get("/v1/tracks", headers=bearer(ADMIN_TOKEN)).status_code == 200
    assert_error(client.post("/v1/admin/tracks", headers=AUTH), 403, "forbidden", "admin token")
    assert_error(client.post("/v1/admin/tracks"), 401, "missing_token")


def test_openapi_schema(client: TestClient) -> None:
    schema = client.get("/v1/openapi.json", headers=AUTH).json()
    assert {"/v1/health", "/v1/ready", "/v1/tracks", "/v1/tracks/{track_id}/preview", "/v1/ground", "/v1/render",
            "/v1/admin/tracks"} <= set(schema["paths"])  # fmt: skip
    body = schema["paths"]["/v1/ground"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["required"] == ["video"] and {"video", "top", "fit_duration", "snap"} <= set(body["properties"])
    assert "video/mp4" in schema["paths"]["/v1/render"]["post"]["responses"]["200"]["content"]
    # No CDN-backed docs pages.
    assert client.get("/docs").status_code == 404


def test_errors_are_json(client: TestClient) -> None:
    assert_error(client.get("/v1/nothing-here", headers=AUTH), 404, "not_found", "/v1/nothing-here")
    assert_error(client.delete("/v1/tracks", headers=AUTH), 405, "method_not_allowed")
    assert_error(client.post("/v1/render", headers=AUTH, content=b"{not json"), 422, "invalid_request")


def test_list_tracks_hides_server_paths(client: TestClient, lib: ServeLibrary) -> None:
    body = client.get("/v1/tracks", headers=AUTH).json()
    assert body["count"] == len(lib.tracks)
    ids = {t["id"] for t in body["tracks"]}
    assert {"defeat2", "victory2", "elf-land", "Chimes They Fade", "hr-savino-ocean"} == ids
    assert all("path" not in t for t in body["tracks"])
    assert str(lib.library) not in json.dumps(body) and "/usr/share" not in json.dumps(body)


# ----------------------------------------------------------------------------------------------------- grounding


def test_ground_returns_the_models_moments(client: TestClient, lib: ServeLibrary, video: Path, work: Path) -> None:
    response = post_video(client, video.read_bytes(), top="3", fit_duration="true")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["video"]["duration"] == pytest.approx(6.0, abs=0.05)
    assert body["video"]["frames_used"] == 6 and body["video"]["has_audio"]
    moments = body["moments"]
    assert [m["rank"] for m in moments] == [1, 2, 3]
    # The same moments as the Python API on the same file.
    grounder = Grounder.from_checkpoint(lib.setup.checkpoint, MusicLibrary(lib.library), clip=lib.setup.clip_dir,
                                        dtype="fp32")
    expected = grounder.ground(video, GroundOptions(top=3, fit_duration=True)).moments
    assert [m["track_id"] for m in moments] == [m.track_id for m in expected]
    for got, want in zip(moments, expected, strict=True):
        assert got["score"] == pytest.approx(want.score, abs=1e-5)
        assert (got["start_s"], got["end_s"]) == pytest.approx((want.start_s, want.end_s), abs=1e-3)
        assert got["end_s"] - got["start_s"] == pytest.approx(6.0, abs=0.01)
        assert "path" not in got
    # The upload is kept for rendering under a server-made name; no request folder is left behind.
    kept = [p for d in private_dirs(work) for p in (d / "kept").iterdir()]
    assert any(p.name.startswith(body["upload_id"]) for p in kept)
    assert all("clip" not in p.name for p in kept)
    assert leftover_request_dirs(work) == []


def test_bad_form_fields(client: TestClient, video: Path) -> None:
    data = video.read_bytes()
    assert_error(post_video(client, data, top="abc"), 422, "invalid_field", "top")
    assert_error(post_video(client, data, top="0"), 422, "invalid_field", "top")
    assert_error(post_video(client, data, top="51"), 422, "invalid_field", "top")
    assert_error(post_video(client, data, window_start="-1"), 422, "invalid_field", "window_start")
    assert_error(post_video(client, data, topk="3"), 422, "unknown_field", "'topk'")
    no_file = client.post("/v1/ground", headers=AUTH, files={"other": ("x", b"1")}, data={})
    assert_error(no_file, 422, "unknown_field", "'other'")
    only_fields = client.post("/v1/ground", headers=AUTH, files={"top": (None, "3")})
    assert_error(only_fields, 422, "missing_file", "'video'")
    as_text = client.post("/v1/ground", headers=AUTH, files={"video": (None, "not a file")})
    assert_error(as_text, 400, "malformed_upload", "must be a file")
    assert_error(client.post("/v1/ground", headers=AUTH, json={"video": "x"}), 415, "not_multipart")
    garbage = client.post(
        "/v1/ground",
        headers={**AUTH, "Content-Type": "multipart/form-data; boundary=XYZ"},
        content=b"--XYZ\r\nno headers here\r\n\r\nabc",
    )
    assert garbage.status_code == 400 and garbage.json()["error"] == "malformed_upload"


def test_filters_and_option_names_in_errors(client: TestClient, lib: ServeLibrary, video: Path) -> None:
    """The server takes mgsv ground's filters; errors name options as this API's fields, never as CLI flags."""
    data = video.read_bytes()
    durations = [t.duration for t in MusicLibrary(lib.library).tracks()]
    response = post_video(client, data, top="5", min_duration=str(max(durations) - 1))
    assert response.status_code == 200, response.text
    assert len(response.json()["moments"]) == sum(d >= max(durations) - 1 for d in durations) >= 1
    nothing = assert_error(post_video(client, data, licences='["no-such-licence", "nor this"]'), 422,
                           "cannot_ground", "no track of the library matches the filters")
    assert "'nor this'" in nothing["message"]
    bad_tag = assert_error(post_video(client, data, tags="genre"), 422, "invalid_field", "tags: expected KEY=VALUE")
    assert "--" not in bad_tag["message"] and "`" not in bad_tag["message"]
    assert_error(post_video(client, data, min_duration="nan"), 422, "invalid_field", "min_duration")
    assert_error(post_video(client, data, tags="[1, 2"), 422, "invalid_field", "tags")


def test_uploads_that_are_not_videos(client: TestClient, tmp_path: Path, work: Path) -> None:
    assert_error(post_video(client, b""), 400, "empty_upload", "empty")
    assert_error(post_video(client, b"hello, this is text\n" * 50), 415, "not_a_video")
    song = write_tone(tmp_path / "song.ogg", seconds=3)
    assert_error(post_video(client, song.read_bytes(), name="song.mp4"), 415, "not_a_video", "no video stream")
    good = write_test_video(tmp_path / "cut.mp4", seconds=4, fps=5)
    truncated = good.read_bytes()[: good.stat().st_size // 3]  # an MP4 cut before its index
    assert_error(post_video(client, truncated), 415, "not_a_video")
    assert leftover_request_dirs(work) == []


def test_a_video_longer_than_the_limit(lib: ServeLibrary, tmp_path: Path) -> None:
    long_video = write_test_video(tmp_path / "long.mp4", seconds=5, fps=4, audio=False)
    settings = lib.settings(work_dir=tmp_path, limits=Limits(max_video_seconds=3))
    with ready_client(settings) as client:
        body = assert_error(post_video(client, long_video.read_bytes()), 422, "video_too_long", "5.0 s", "3 s")
        assert str(tmp_path) not in body["message"]  # the server's own file names never reach the client
        short = write_test_video(tmp_path / "short.webm", seconds=2.5, fps=4, audio=False)
        assert post_video(client, short.read_bytes(), name="short.webm").status_code == 200
    assert private_dirs(tmp_path) == []  # the server's folder goes with it


def test_an_upload_over_the_size_limit(lib: ServeLibrary, video: Path, tmp_path: Path) -> None:
    limit = 20_000
    assert video.stat().st_size > limit
    settings = lib.settings(work_dir=tmp_path, limits=Limits(max_upload_bytes=limit, max_kept_bytes=MB))
    with ready_client(settings) as client:
        # With a Content-Length: refused before reading the body.
        assert_error(post_video(client, video.read_bytes()), 413, "upload_too_large", "20000 bytes")
        # Without one (chunked): cut off while streaming.
        data = video.read_bytes()
        boundary = "b0undary"
        head = (f'--{boundary}\r\nContent-Disposition: form-data; name="video"; filename="v.mp4"\r\n'
                "Content-Type: video/mp4\r\n\r\n").encode()  # fmt: skip
        body = head + data + f"\r\n--{boundary}--\r\n".encode()

        def chunks() -> Iterator[bytes]:
            for start in range(0, len(body), 4096):
                yield body[start : start + 4096]

        headers = {**AUTH, "Content-Type": f"multipart/form-data; boundary={boundary}"}
        response = client.post("/v1/ground", headers=headers, content=chunks())
        assert "content-length" not in {k.lower() for k in response.request.headers}
        assert_error(response, 413, "upload_too_large", "20000 bytes")
        assert leftover_request_dirs(tmp_path) == []


# ------------------------------------------------------------------------------------------------------ previews


def envelope(samples: np.ndarray, rate: int, block_s: float = 0.25) -> np.ndarray:
    block = int(rate * block_s)
    count = len(samples) // block
    return np.sqrt((samples[: count * block].reshape(count, block) ** 2).mean(axis=1))


@pytest.mark.parametrize(("track_id", "start"), [("Chimes They Fade", 12.0), ("hr-savino-ocean", 20.0)])
def test_preview_is_the_moment_as_mp3(
    client: TestClient, lib: ServeLibrary, track_id: str, start: float, tmp_path: Path
) -> None:
    response = client.get(
        f"/v1/tracks/{track_id}/preview", params={"start_s": start, "end_s": start + 30}, headers=AUTH
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/mpeg"
    clip = tmp_path / "preview.mp3"
    clip.write_bytes(response.content)
    info = probe(clip)
    assert info.format == "mp3" and info.audio is not None and info.audio.channels == 2
    assert info.duration == pytest.approx(10.0, abs=0.1)  # a 30 s moment previews its first 10 s (the limit)
    # It is that part of that track: the loudness envelope follows the original's.
    track = MusicLibrary(lib.library).track(track_id)
    original = read_audio(track.path, 16000, max_seconds=10, offset=start)
    heard = read_audio(clip, 16000)
    a, b = envelope(original, 16000), envelope(heard, 16000)
    n = min(len(a), len(b))
    assert np.corrcoef(a[:n], b[:n])[0, 1] > 0.9


def test_preview_errors(client: TestClient) -> None:
    url = "/v1/tracks/defeat2/preview"
    assert_error(client.get("/v1/tracks/no-such-track/preview?start_s=0&end_s=3", headers=AUTH), 404, "unknown_track")
    traversal = client.get("/v1/tracks/..%2F..%2Fetc%2Fpasswd/preview?start_s=0&end_s=3", headers=AUTH)
    assert traversal.status_code == 404 and traversal.json()["error"] in ("unknown_track", "not_found")
    assert_error(client.get(f"{url}?start_s=10&end_s=20", headers=AUTH), 422, "moment_outside_track", "14.17 s long")
    assert_error(client.get(f"{url}?start_s=15&end_s=16", headers=AUTH), 422, "moment_outside_track")
    assert_error(client.get(f"{url}?start_s=5&end_s=5", headers=AUTH), 422, "invalid_moment")
    assert_error(client.get(f"{url}?start_s=-1&end_s=5", headers=AUTH), 422, "invalid_request", "start_s")
    assert_error(client.get(f"{url}?start_s=0", headers=AUTH), 422, "invalid_request", "end_s")
    assert_error(client.get(f"{url}?start_s=0&end_s=inf", headers=AUTH), 422, "invalid_moment")


# ------------------------------------------------------------------------------------------------------- renders


def test_render_the_video_with_a_moment(client: TestClient, video: Path, tmp_path: Path, work: Path) -> None:
    grounded = post_video(client, video.read_bytes(), top="1").json()
    moment = grounded["moments"][0]
    request = {"upload_id": grounded["upload_id"], "track_id": moment["track_id"], "start_s": moment["start_s"]}
    response = client.post("/v1/render", headers=AUTH, json=request)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "video/mp4"
    assert response.headers["content-disposition"].startswith("attachment; filename=")
    out = tmp_path / "out.mp4"
    out.write_bytes(response.content)
    info = probe(out)
    assert info.has_video and info.has_audio and info.duration == pytest.approx(6.0, abs=0.1)
    assert np.abs(read_audio(out)).max() > 0.01
    assert leftover_request_dirs(work) == []  # the rendered file went with the response
    # The same upload renders again, with another track.
    again = client.post("/v1/render", headers=AUTH, json={**request, "track_id": "victory2", "start_s": 2.0})
    assert again.status_code == 200


def test_render_errors(client: TestClient, video: Path) -> None:
    upload_id = post_video(client, video.read_bytes(), top="1").json()["upload_id"]
    base = {"upload_id": upload_id, "track_id": "defeat2", "start_s": 1.0}
    assert_error(client.post("/v1/render", headers=AUTH, json={**base, "upload_id": "x" * 22}), 404, "unknown_upload")
    assert_error(client.post("/v1/render", headers=AUTH, json={**base, "upload_id": "../../x"}), 422, "invalid_request")
    assert_error(client.post("/v1/render", headers=AUTH, json={**base, "track_id": "nope"}), 404, "unknown_track")
    assert_error(client.post("/v1/render", headers=AUTH, json={**base, "start_s": 14.5}), 422, "moment_outside_track")
    assert_error(client.post("/v1/render", headers=AUTH, json={**base, "end_s": 30.0}), 422, "moment_outside_track")
    assert_error(client.post("/v1/render", headers=AUTH, json={**base, "keep_audio": 2}), 422, "invalid_request")
    assert_error(client.post("/v1/render", headers=AUTH, json={**base, "extra": 1}), 422, "invalid_request")


def test_kept_uploads_expire(lib: ServeLibrary, video: Path, tmp_path: Path) -> None:
    settings = lib.settings(work_dir=tmp_path, limits=Limits(keep_upload_seconds=0.2))
    with ready_client(settings) as client:
        upload_id = post_video(client, video.read_bytes(), top="1").json()["upload_id"]
        time.sleep(0.3)
        body = client.post("/v1/render", headers=AUTH, json={"upload_id": upload_id, "track_id": "defeat2",
                                                                "start_s": 0.0})  # fmt: skip
        assert_error(body, 404, "unknown_upload", "expired")
        assert list((private_dirs(tmp_path)[0] / "kept").iterdir()) == []


# -------------------------------------------------------------------------------------------------- admin uploads


def test_admin_adds_a_track(lib: ServeLibrary, debian_music: dict[str, Path], video: Path, tmp_path: Path) -> None:
    library = copy_library(lib.library, tmp_path / "library")
    settings = lib.settings(library=library, work_dir=tmp_path / "work")
    admin = bearer(ADMIN_TOKEN)
    sad = debian_music["wesnoth"] / "sad.ogg"
    with ready_client(settings) as client:
        upload = {"file": ("../../My Song (final)!.ogg", sad.read_bytes(), "audio/ogg")}
        added = client.post("/v1/admin/tracks", headers=admin, files=upload)
        assert added.status_code == 201, added.text
        track = added.json()["track"]
        assert (
            added.json()["added"]
            and track["id"] == "My-Song-final"
            and track["duration"] == pytest.approx(44.4, abs=0.1)
        )
        stored = MusicLibrary(library).track("My-Song-final")
        assert Path(stored.path).parent.name == stored.content_hash and Path(stored.path).suffix == ".ogg"
        assert Path(stored.path).is_relative_to(library / "uploaded-music")
        # The same content again: nothing new.
        again = client.post("/v1/admin/tracks", headers=admin, files={"file": ("copy.ogg", sad.read_bytes())})
        assert again.status_code == 200 and not again.json()["added"] and again.json()["track"]["id"] == "My-Song-final"
        # Grounding now ranks it, and it previews.
        moments = post_video(client, video.read_bytes(), top="6").json()["moments"]
        assert "My-Song-final" in {m["track_id"] for m in moments}
        preview = client.get("/v1/tracks/My-Song-final/preview?start_s=1&end_s=3", headers=AUTH)
        assert preview.status_code == 200
        # Bad files are refused with a reason, and leave nothing behind.
        assert_error(client.post("/v1/admin/tracks", headers=admin, files={"file": ("a.ogg", b"text" * 100)}),
                     415, "not_audio")  # fmt: skip
        silent = write_tone(tmp_path / "quiet.wav", seconds=3, amplitude=0.0)
        assert_error(client.post("/v1/admin/tracks", headers=admin, files={"file": ("quiet.wav", silent.read_bytes())}),
                     422, "cannot_add_track", "silence")  # fmt: skip
        assert_error(
            client.post("/v1/admin/tracks", headers=admin, files={"song": ("a.ogg", b"x")}), 422, "unknown_field"
        )
        folders = [p for p in (library / "uploaded-music").rglob("*") if p.is_file()]
        assert folders == [Path(stored.path)]
        assert client.get("/v1/tracks", headers=AUTH).json()["count"] == len(lib.tracks) + 1


def test_admin_endpoints_are_off_without_an_admin_token(lib: ServeLibrary, tmp_path: Path) -> None:
    with ready_client(lib.settings(work_dir=tmp_path, admin_token=None)) as client:
        response = client.post("/v1/admin/tracks", headers=AUTH, files={"file": ("a.ogg", b"x")})
        assert_error(response, 403, "admin_disabled", "MGSV_ADMIN_TOKEN")


# ------------------------------------------------------------------------------------------------- queue and crash


def test_a_burst_beyond_the_queue_gets_503(
    lib: ServeLibrary, video: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate, entered = threading.Event(), threading.Event()
    real_job = ground_api._ground_job

    def held_job(*args):  # the first job holds the model worker until the test lets it go
        entered.set()
        assert gate.wait(60)
        return real_job(*args)

    monkeypatch.setattr(ground_api, "_ground_job", held_job)
    settings = lib.settings(work_dir=tmp_path, limits=Limits(queue_size=1))
    data = video.read_bytes()
    with ready_client(settings) as client, ThreadPoolExecutor(2) as pool:
        runtime = client.app.state.runtime
        first = pool.submit(post_video, client, data, top="1")
        assert entered.wait(30)
        second = pool.submit(post_video, client, data, top="1")  # takes the one waiting place
        deadline = time.monotonic() + 30
        while runtime.model_queue.stats()["reserved"] < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        busy = post_video(client, data, top="1")
        body = assert_error(busy, 503, "busy", "retry in")
        assert int(busy.headers["Retry-After"]) >= 1 and busy.headers["Retry-After"] in body["message"]
        gate.set()
        assert first.result().status_code == 200 and second.result().status_code == 200
        assert runtime.model_queue.stats()["reserved"] == 0
        assert post_video(client, data, top="1").status_code == 200  # room again


def test_an_unexpected_error_is_a_500_without_details(
    lib: ServeLibrary, video: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(ground_api, "_ground_job", broken)
    settings = lib.settings(work_dir=tmp_path)
    with (
        caplog.at_level(logging.ERROR, logger="mgsv.serve"),
        ready_client(settings, raise_server_exceptions=False) as client,
    ):
        response = post_video(client, video.read_bytes())
        body = assert_error(response, 500, "internal_error", response.headers["X-Request-ID"])
        assert "secret" not in response.text and "Traceback" not in response.text
        assert leftover_request_dirs(tmp_path) == []
    assert any(body["request_id"] in r.getMessage() and r.exc_info for r in caplog.records)


def test_readiness_while_loading_and_after_a_failed_load(lib: ServeLibrary, tmp_path: Path) -> None:
    not_a_checkpoint = tmp_path / "empty-checkpoint"
    not_a_checkpoint.mkdir()
    with TestClient(create_app(lib.settings(work_dir=tmp_path, checkpoint=not_a_checkpoint))) as client:
        body = wait_ready(client)
        assert body["status"] == "failed" and str(not_a_checkpoint) in body["message"]
        response = client.get("/v1/ready", headers=AUTH)
        assert response.status_code == 503 and not response.json()["ready"]
        assert_error(post_video(client, b"x"), 503, "not_ready", "could not load")
        assert client.get("/v1/health").status_code == 200


def test_an_empty_library_and_a_missing_track_file(lib: ServeLibrary, video: Path, tmp_path: Path) -> None:
    empty = MusicLibrary.create(tmp_path / "empty", lib.setup.music_spec)
    with ready_client(lib.settings(library=empty.root, work_dir=tmp_path)) as client:
        assert client.get("/v1/ready", headers=AUTH).json()["tracks"] == 0  # ready: admins may add tracks
        assert_error(post_video(client, video.read_bytes()), 409, "library_empty", "no tracks")
    gone = tmp_path / "moved-away.ogg"
    moved = make_synthetic_library(tmp_path / "moved", lib.setup.music_spec, [30.0], audio=gone)
    with ready_client(lib.settings(library=moved.root, work_dir=tmp_path)) as client:
        track_id = client.get("/v1/tracks", headers=AUTH).json()["tracks"][0]["id"]
        response = client.get(f"/v1/tracks/{track_id}/preview?start_s=0&end_s=5", headers=AUTH)
        body = assert_error(response, 500, "track_file_missing", track_id)
        assert str(gone) not in body["message"]  # server paths stay in the log


def test_cors_for_configured_origins(lib: ServeLibrary, tmp_path: Path) -> None:
    settings = lib.settings(work_dir=tmp_path, cors_origins=("https://editor.example",))
    with ready_client(settings) as client:
        preflight = client.options(
            "/v1/ground",
            headers={"Origin": "https://editor.example", "Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "authorization"},
        )  # fmt: skip
        assert preflight.headers["access-control-allow-origin"] == "https://editor.example"
        other = client.get("/v1/tracks", headers={**AUTH, "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


# ------------------------------------------------------------------------------------------- temporary folders


def test_stale_temporary_folders_are_swept_at_start(tmp_path: Path) -> None:
    dead = tmp_path / "mgsv-serve-dead1234"
    (dead / "req-1").mkdir(parents=True)
    (dead / ".lock").touch()
    (dead / "req-1" / "upload").write_bytes(b"left by a killed server")
    live = tmp_path / "mgsv-serve-live5678"
    live.mkdir()
    fd = os.open(live / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # what a running server holds
    try:
        root = PrivateTempRoot(tmp_path)
        assert not dead.exists() and live.exists() and root.path.exists()
        assert dead in root.swept
        second = PrivateTempRoot(tmp_path)  # a second server sharing the folder spares the first one's
        assert root.path.exists() and second.path != root.path
        second.close()
        root.close()
        assert not root.path.exists()
    finally:
        os.close(fd)


def test_job_queue_bounds_and_releases() -> None:
    import asyncio

    queue = JobQueue("test", workers=1, waiting=1)
    order: list[str] = []

    async def scenario() -> None:
        gate = threading.Event()
        first, second = queue.reserve(), queue.reserve()
        with pytest.raises(QueueFull) as full:
            queue.reserve()
        assert full.value.retry_after >= 1
        with first:
            first.on_done(lambda: order.append("first cleaned"))
            task = asyncio.ensure_future(first.run(gate.wait, 10))
            await asyncio.sleep(0.05)
            task.cancel()  # the request goes away; its running job does not
        assert queue.stats()["reserved"] == 2 and order == []
        gate.set()
        while queue.stats()["reserved"] > 1:
            await asyncio.sleep(0.01)
        assert order == ["first cleaned"]
        with second:
            assert await second.run(lambda: 42) == 42
        assert queue.stats()["reserved"] == 0

    asyncio.run(scenario())
    queue.shutdown()


# ----------------------------------------------------------------------------------- a real server on loopback


@contextmanager
def live_server(settings) -> Iterator[int]:
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    port = server.servers[0].sockets[0].getsockname()[1]
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
        assert wait_ready(http, settings.api_token)["status"] == "ready"
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(30)


def read_response(sock: socket.socket) -> bytes:
    """One HTTP response (headers and a Content-Length body) read from a socket."""
    response = b""
    try:
        while True:
            head, _, body = response.partition(b"\r\n\r\n")
            lines = head.lower().split(b"\r\n")
            length = [int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length")]
            if length and len(body) >= length[0]:
                break
            data = sock.recv(65536)
            if not data:
                break
            response += data
    except (ConnectionResetError, TimeoutError):
        pass
    return response


def stream_until_answered(port: int, head: bytes, filler: bytes, total: int) -> tuple[int, int, bytes]:
    """Send a chunked multipart body until the server answers; (bytes of body sent, status, response)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    request = (f"POST /v1/ground HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {API_TOKEN}\r\n"
               "Content-Type: multipart/form-data; boundary=BOUNDARY\r\nTransfer-Encoding: chunked\r\n\r\n")  # fmt: skip
    sock.sendall(request.encode())
    sent = 0
    payload = head
    try:
        while sent < total:
            sock.sendall(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
            sent += len(payload)
            payload = filler
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server closed the connection after answering
    response = read_response(sock)
    sock.close()
    return sent, int(response.split(b" ", 2)[1]), response


def test_limits_are_enforced_while_the_upload_streams(lib: ServeLibrary, tmp_path: Path) -> None:
    # A Matroska header states the duration up front: a 2-minute video is refused after its first MB arrives.
    long_video = write_test_video(tmp_path / "long.mkv", seconds=120, fps=2, size=(64, 48), audio=False)
    header = (b'--BOUNDARY\r\nContent-Disposition: form-data; name="video"; filename="v.mkv"\r\n'
              b"Content-Type: video/x-matroska\r\n\r\n")  # fmt: skip
    filler = b"\0" * 65536
    settings = lib.settings(work_dir=tmp_path / "work", limits=Limits(max_upload_bytes=50 * MB))
    with live_server(settings) as port:
        sent, status, response = stream_until_answered(port, header + long_video.read_bytes(), filler, 45 * MB)
        assert status == 422 and b"video_too_long" in response and b"120.0 s" in response
        assert sent < 12 * MB  # answered long before the 45 MB were sent
    small = lib.settings(work_dir=tmp_path / "work2", limits=Limits(max_upload_bytes=MB, max_kept_bytes=MB))
    with live_server(small) as port:
        sent, status, response = stream_until_answered(port, header, filler, 64 * MB)
        assert status == 413 and b"upload_too_large" in response
        assert sent < 12 * MB
    assert leftover_request_dirs(tmp_path / "work") == leftover_request_dirs(tmp_path / "work2") == []


def test_a_stalled_upload_is_abandoned(lib: ServeLibrary, tmp_path: Path) -> None:
    settings = lib.settings(work_dir=tmp_path, limits=Limits(queue_size=0, upload_idle_seconds=0.5))
    with live_server(settings) as port:
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        head = (f"POST /v1/ground HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {API_TOKEN}\r\n"
                "Content-Type: multipart/form-data; boundary=B\r\nContent-Length: 100000\r\n\r\n--B\r\n")  # fmt: skip
        started = time.monotonic()
        sock.sendall(head.encode())  # ... and then nothing more
        answer = read_response(sock)
        assert answer.startswith(b"HTTP/1.1 408") and b"upload_stalled" in answer
        assert 0.4 < time.monotonic() - started < 10
        sock.close()
        # Its place (the only one: queue size 0) is free again.
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=AUTH) as http:
            assert http.get("/v1/ready").json()["queues"]["model"]["reserved"] == 0


def test_a_killed_server_leaves_nothing_for_long(lib: ServeLibrary, tmp_path: Path) -> None:
    env = {**os.environ, "MGSV_API_TOKEN": API_TOKEN, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "mgsv", "serve", "--library", str(lib.library), "--checkpoint",
               str(lib.setup.checkpoint), "--clip", str(lib.setup.clip_dir), "--port", "0", "--work-dir",
               str(tmp_path)]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 120
        while not private_dirs(tmp_path) and time.monotonic() < deadline:
            assert process.poll() is None
            time.sleep(0.1)
        (folder,) = private_dirs(tmp_path)
    finally:
        process.kill()  # SIGKILL: no shutdown code runs
        process.wait()
    assert folder.exists()
    root = PrivateTempRoot(tmp_path)  # the next server to start
    assert not folder.exists() and folder in root.swept
    root.close()


def test_peek_reads_only_a_declared_duration(tmp_path: Path) -> None:
    long_video = write_test_video(tmp_path / "long.mkv", seconds=30, fps=2, size=(64, 48), audio=False)
    partial = tmp_path / "partial"
    partial.write_bytes(long_video.read_bytes()[:4096])
    with pytest.raises(Exception, match="30.0 s long"):
        peek_video_duration(partial, 10)
    peek_video_duration(partial, 60)  # within the limit: nothing to say yet
    mp4 = write_test_video(tmp_path / "index-last.mp4", seconds=30, fps=2, size=(64, 48), audio=False)
    partial.write_bytes(mp4.read_bytes()[:4096])  # the duration is at the end of this MP4: unknown so far
    peek_video_duration(partial, 10)


# --------------------------------------------------------------------------------------------------------- CLI


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out + captured.err


def test_serve_refuses_unsafe_or_inconsistent_settings(
    lib: ServeLibrary, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MGSV_API_TOKEN", raising=False)
    monkeypatch.delenv("MGSV_ADMIN_TOKEN", raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    base = ["serve", "--library", str(lib.library), "--checkpoint", str(lib.setup.checkpoint)]
    code, out = run_cli([*base, "--host", "0.0.0.0"], capsys)
    assert code == 1 and "refusing to listen on 0.0.0.0" in out and "MGSV_API_TOKEN" in out
    code, out = run_cli([*base, "--api-token", "short"], capsys)
    assert code == 1 and "at least 16 characters" in out
    code, out = run_cli([*base, "--api-token", API_TOKEN, "--admin-token", API_TOKEN], capsys)
    assert code == 1 and "must differ from the API token" in out
    code, out = run_cli(
        ["serve", "--library", str(tmp_path / "none"), "--checkpoint", str(lib.setup.checkpoint)], capsys
    )
    assert code == 1 and "no music library here" in out
    code, out = run_cli(["serve", "--library", str(lib.library)], capsys)
    assert code == 1 and "--checkpoint" in out
    code, out = run_cli([*base, "--max-upload-mb", "0"], capsys)
    assert code == 2 and "--max-upload-mb" in out and "0 MB: must be more than 0" in out  # a usage error
    code, out = run_cli(["serve", "--library", str(lib.library), "--ab-study", "a.jsonl", "b.jsonl"], capsys)
    assert code == 1 and "--media" in out
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        code, out = run_cli([*base, "--port", str(taken.getsockname()[1])], capsys)
        assert code == 1 and "cannot listen on 127.0.0.1" in out
    finally:
        taken.close()


def test_a_short_moment_previews_in_full(client: TestClient) -> None:
    response = client.get("/v1/tracks/elf-land/preview?start_s=0&end_s=4", headers=AUTH)
    with av.open(io.BytesIO(response.content)) as container:
        assert container.duration / 1e6 == pytest.approx(4.0, abs=0.1)
    assert len(response.content) < 4 * 128_000 / 8 * 1.2  # 128 kbit/s
