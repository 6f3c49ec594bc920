"""`mgsv serve`: more moments of a track (the `alternatives` field, POST /v1/alternatives), grounding a kept upload
again with other options (POST /v1/reground, the `diverse` fields), the encodings kept per upload, and the errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from media_factory import write_test_video
from serve_factory import API_TOKEN, ServeLibrary, bearer, ready_client, serve_library

from mgsv.search import GroundOptions
from mgsv.search.alternatives import iou
from mgsv.search.grounder import Grounder
from mgsv.search.library import MusicLibrary
from mgsv.serve.settings import Limits

AUTH = bearer(API_TOKEN)
VIDEO_S = 6.0


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory, debian_music: dict[str, Path]) -> ServeLibrary:
    return serve_library(tmp_path_factory, debian_music)


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_test_video(tmp_path_factory.mktemp("variety-query") / "query.mp4", seconds=VIDEO_S, fps=5,
                            tone_hz=330)  # fmt: skip


@pytest.fixture(scope="module")
def client(lib: ServeLibrary, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with ready_client(lib.settings(work_dir=tmp_path_factory.mktemp("variety-work"))) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def grounder(lib: ServeLibrary) -> Grounder:
    return Grounder.from_checkpoint(lib.setup.checkpoint, MusicLibrary(lib.library), clip=lib.setup.clip_dir,
                                    dtype="fp32")  # fmt: skip


def post_video(client: TestClient, video: Path, **fields: str):
    return client.post("/v1/ground", headers=AUTH, files={"video": ("clip.mp4", video.read_bytes(), "video/mp4")},
                       data=fields)  # fmt: skip


def assert_error(response, status: int, code: str, *words: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code, body
    for word in words:
        assert word in body["message"], body["message"]
    return body


def spans(moments: list[dict]) -> list[tuple[float, float]]:
    return [(m["start_s"], m["end_s"]) for m in moments]


def flat(pairs: list[tuple[float, float]]) -> list[float]:
    return [x for pair in pairs for x in pair]


def test_ground_with_alternatives_is_the_services(client: TestClient, grounder: Grounder, video: Path) -> None:
    response = post_video(client, video, top="3", fit_duration="true", alternatives="2")
    assert response.status_code == 200, response.text
    moments = response.json()["moments"]
    expected = grounder.ground(video, GroundOptions(top=3, fit_duration=True, alternatives=2)).moments
    assert [m["track_id"] for m in moments] == [m.track_id for m in expected]
    for got, want in zip(moments, expected, strict=True):
        assert got["alternative"] == 0 and len(got["alternatives"]) == len(want.alternatives) <= 2
        assert flat(spans(got["alternatives"])) == pytest.approx(flat([m.span for m in want.alternatives]), abs=1e-3)
        for other in got["alternatives"]:
            assert other["track_id"] == got["track_id"] and other["rank"] == got["rank"]
            assert "path" not in other and other["alternatives"] == []
            assert iou((other["start_s"], other["end_s"]), (got["start_s"], got["end_s"])) == 0
    assert any(m["alternatives"] for m in moments)
    assert_error(post_video(client, video, alternatives="4"), 422, "invalid_field", "alternatives")
    assert_error(post_video(client, video, alternatives="-1"), 422, "invalid_field", "alternatives")


def test_alternatives_endpoint(client: TestClient, grounder: Grounder, video: Path) -> None:
    body = post_video(client, video, top="2", fit_duration="true").json()
    upload_id, moment = body["upload_id"], body["moments"][0]
    request = {"upload_id": upload_id, "track_id": moment["track_id"], "fit_duration": True,
               "avoid": [[moment["start_s"], moment["end_s"]]]}  # fmt: skip
    response = client.post("/v1/alternatives", headers=AUTH, json=request)
    assert response.status_code == 200, response.text
    found = response.json()
    assert found["track_id"] == moment["track_id"] and found["seconds"] >= 0
    encoded = grounder.encode(video)
    want = grounder.more_moments(encoded, moment["track_id"], [(moment["start_s"], moment["end_s"])],
                                 GroundOptions(fit_duration=True))  # fmt: skip
    assert flat(spans(found["moments"])) == pytest.approx(flat([m.span for m in want]), abs=1e-3) and want
    assert [m["alternative"] for m in found["moments"]] == list(range(1, len(want) + 1))
    assert all(m["rank"] == 0 and m["end_s"] - m["start_s"] == pytest.approx(VIDEO_S, abs=0.01)
               for m in found["moments"])  # fmt: skip
    # The grounding kept the video's encoding: asking again reads nothing, and gives the same.
    ready = client.get("/v1/ready", headers=AUTH).json()
    assert ready["kept_uploads"]["encodings"] >= 1
    again = client.post("/v1/alternatives", headers=AUTH, json={**request, "alternatives": 1}).json()
    assert spans(again["moments"]) == spans(found["moments"])[:1]
    # Avoiding the first moment and the ones found: what is left, if anything, touches none of them.
    every = [[moment["start_s"], moment["end_s"]], *[[m["start_s"], m["end_s"]] for m in found["moments"]]]
    rest = client.post("/v1/alternatives", headers=AUTH, json={**request, "avoid": every}).json()["moments"]
    assert all(iou(a, tuple(b)) == 0 for a in spans(rest) for b in every)
    # Without a kept encoding (evicted), the kept video is decoded again: the same moments.
    runtime = client.app.state.runtime
    runtime.uploads._encodings.clear()
    fresh = client.post("/v1/alternatives", headers=AUTH, json=request).json()
    assert flat(spans(fresh["moments"])) == pytest.approx(flat(spans(found["moments"])), abs=1e-4)
    assert runtime.uploads.stats()["encodings"] == 1


def test_alternatives_errors(client: TestClient, lib: ServeLibrary, video: Path) -> None:
    body = post_video(client, video, top="1").json()
    base = {"upload_id": body["upload_id"], "track_id": "defeat2", "avoid": [[0.0, 5.0]]}

    def post(**changes: object):
        return client.post("/v1/alternatives", headers=AUTH, json={**base, **changes})

    assert_error(post(upload_id="x" * 22), 404, "unknown_upload", "ground the video again")
    assert_error(post(upload_id="../../x"), 422, "invalid_request")
    assert_error(post(track_id="no-such-track"), 404, "unknown_track", "no-such-track")
    assert_error(post(avoid=[]), 422, "invalid_request", "avoid")
    assert_error(post(avoid=[[5.0, 1.0]]), 422, "invalid_moment")
    assert_error(post(avoid=[[0.0, 999.0]]), 422, "moment_outside_track", "defeat2")
    assert_error(post(avoid=[[0.0, "x"]]), 422, "invalid_request", "avoid")
    assert_error(post(alternatives=0), 422, "invalid_request", "alternatives")
    assert_error(post(alternatives=4), 422, "invalid_request", "alternatives")
    assert_error(post(window_start=-1), 422, "invalid_request", "window_start")
    assert_error(post(extra=1), 422, "invalid_request")
    # A track with no room left: no moments, and no error.
    tracks = client.get("/v1/tracks", headers=AUTH).json()["tracks"]
    defeat = next(t for t in tracks if t["id"] == "defeat2")
    full = post(avoid=[[0.0, defeat["duration"]]])
    assert full.status_code == 200 and full.json()["moments"] == []


def test_a_track_shorter_than_the_video(client: TestClient, tmp_path: Path) -> None:
    """defeat2 is 14.2 s: a 16 s video's moments of its length do not fit in it."""
    longer = write_test_video(tmp_path / "long.mp4", seconds=16, fps=2, size=(64, 48))
    upload_id = post_video(client, longer, top="1").json()["upload_id"]
    request = {"upload_id": upload_id, "track_id": "defeat2", "avoid": [[0.0, 1.0]]}
    body = assert_error(client.post("/v1/alternatives", headers=AUTH, json={**request, "fit_duration": True}), 422,
                        "track_too_short", "defeat2", "fit_duration")  # fmt: skip
    assert "`" not in body["message"]
    # Without fit_duration the track is still too short for a part as long as the video beside its first second.
    assert client.post("/v1/alternatives", headers=AUTH, json=request).json()["moments"] == []


def test_reground_with_the_diverse_list(client: TestClient, grounder: Grounder, video: Path) -> None:
    body = post_video(client, video, top="5").json()
    upload_id = body["upload_id"]
    again = client.post("/v1/reground", headers=AUTH, json={"upload_id": upload_id, "top": 5})
    assert again.status_code == 200, again.text
    assert again.json()["moments"] == body["moments"] and again.json()["upload_id"] == upload_id
    assert again.json()["video"] == body["video"]
    # The tiny model's embeddings are alike: at a cosine of 0.5 nearly every pair counts as the same music.
    diverse = client.post("/v1/reground", headers=AUTH, json={"upload_id": upload_id, "top": 5, "diverse": True,
                                                             "diverse_cosine": 0.5})  # fmt: skip
    assert diverse.status_code == 200, diverse.text
    expected = grounder.ground(video, GroundOptions(top=5, diverse=True, diverse_cosine=0.5))
    assert [m["track_id"] for m in diverse.json()["moments"]] == [m.track_id for m in expected.moments]
    assert diverse.json()["notes"] == [note.replace("`", "") for note in expected.notes]
    # The form of POST /v1/ground takes the same fields.
    posted = post_video(client, video, top="5", diverse="true", diverse_cosine="0.5").json()
    assert [m["track_id"] for m in posted["moments"]] == [m.track_id for m in expected.moments]
    assert_error(client.post("/v1/reground", headers=AUTH, json={"upload_id": "y" * 22}), 404, "unknown_upload")
    assert_error(client.post("/v1/reground", headers=AUTH, json={"upload_id": upload_id, "diverse_cosine": 1}), 422,
                 "invalid_request", "diverse_cosine")  # fmt: skip
    assert_error(client.post("/v1/reground", headers=AUTH, json={"upload_id": upload_id, "video": "x"}), 422,
                 "invalid_request")  # fmt: skip
    assert_error(post_video(client, video, diverse_cosine="2"), 422, "invalid_field", "diverse_cosine")


def test_kept_encodings_go_with_their_video(lib: ServeLibrary, video: Path, tmp_path: Path) -> None:
    settings = lib.settings(work_dir=tmp_path, limits=Limits(keep_upload_seconds=0.5))
    with ready_client(settings) as client:
        upload_id = post_video(client, video, top="1").json()["upload_id"]
        runtime = client.app.state.runtime
        assert runtime.uploads.stats()["encodings"] == 1 and runtime.uploads.recall(upload_id, 0.0) is not None
        import time

        time.sleep(0.6)
        response = client.post("/v1/alternatives", headers=AUTH,
                               json={"upload_id": upload_id, "track_id": "defeat2", "avoid": [[0.0, 5.0]]})
        assert_error(response, 404, "unknown_upload", "expired")
        assert runtime.uploads.stats() == {"count": 0, "bytes": 0, "encodings": 0}
