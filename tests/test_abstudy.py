"""A/B human evaluation (`mgsv serve --ab-study`, `mgsv ab-report`): pairing, hidden labels, random order, durable
answers, and the report."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from media_factory import write_test_video
from serve_factory import API_TOKEN, ServeLibrary, bearer, ready_client, serve_library

from mgsv.cli import main
from mgsv.errors import InputError
from mgsv.media.decode import read_audio
from mgsv.media.probe import probe
from mgsv.search.library import MusicLibrary
from mgsv.serve.abstudy import AbReport, AbStudy, plan_study
from mgsv.serve.settings import AbStudySettings

AUTH = bearer(API_TOKEN)
JSON = {**AUTH, "Content-Type": "application/json"}

# video id -> (A's ranking[0], B's ranking[0]); None: the video is missing from that file.
PREDICTIONS = {
    "101": (["Chimes They Fade", 1.2, 10.0, 15.0], ["hr-savino-ocean", 0.9, 30.0, 35.0]),
    "102": (["elf-land", 0.7, 3.0, 7.0], ["victory2", 0.4, 5.0, 9.0]),
    "103": (["defeat2", 0.5, 2.0, 6.0], ["defeat2", 0.5, 2.0, 6.0]),  # both systems agree
    "104": (["elf-land", 0.1, 0.0, 4.0], None),  # only in A
    "105": (["elf-land", 0.1, 0.0, 4.0], ["victory2", 0.1, 0.0, 4.0]),  # no video file
    "106": (["not-in-library", 0.1, 0.0, 4.0], ["elf-land", 0.1, 0.0, 4.0]),
}


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory, debian_music: dict[str, Path]) -> ServeLibrary:
    return serve_library(tmp_path_factory, debian_music)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Predictions of systems A and B and the folder of query videos."""
    root = tmp_path_factory.mktemp("ab-inputs")
    media = root / "videos"
    media.mkdir()
    write_test_video(media / "101.mp4", seconds=5, fps=4, audio=False)
    write_test_video(media / "102.mkv", seconds=4, fps=4, tone_hz=220)
    write_test_video(media / "103.mp4", seconds=4, fps=4, audio=False)
    write_test_video(media / "104.mp4", seconds=4, fps=4, audio=False)
    write_test_video(media / "106.mp4", seconds=4, fps=4, audio=False)
    files = {}
    for index, name in enumerate("AB"):
        lines = [
            json.dumps({"video_id": video_id, "ranking": [pair[index]]})
            for video_id, pair in PREDICTIONS.items()
            if pair[index] is not None
        ]
        files[name] = root / f"{name}.jsonl"
        files[name].write_text("\n".join(lines) + "\n")
    return {"a": files["A"], "b": files["B"], "media": media, "root": root}


def study_settings(inputs: dict[str, Path], database: Path) -> AbStudySettings:
    return AbStudySettings(inputs["a"], inputs["b"], inputs["media"], database)


def answers(database: Path) -> list[dict]:
    with sqlite3.connect(database) as db:  # a fresh connection: what a crash right now would leave
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM answers ORDER BY id")]


def envelope(samples: np.ndarray, rate: int = 16000, block_s: float = 0.25) -> np.ndarray:
    block = int(rate * block_s)
    count = len(samples) // block
    return np.sqrt((samples[: count * block].reshape(count, block) ** 2).mean(axis=1))


def similarity(clip: Path, track: Path, start: float, seconds: float) -> float:
    """Correlation of the loudness envelopes of a clip's soundtrack and a part of a track."""
    a = envelope(read_audio(clip, 16000, max_seconds=seconds))
    b = envelope(read_audio(track, 16000, max_seconds=seconds, offset=start))
    n = min(len(a), len(b)) - 1  # the render fades the last half second
    return float(np.corrcoef(a[1:n], b[1:n])[0, 1])


def test_plan_pairs_the_videos_and_says_why_others_are_left_out(lib: ServeLibrary, inputs: dict[str, Path]) -> None:
    plan = plan_study(inputs["a"], inputs["b"], inputs["media"], MusicLibrary(lib.library))
    assert [v.video_id for v in plan.videos] == ["101", "102", "103"]
    assert plan.videos[1].path.name == "102.mkv"
    assert (plan.videos[0].a.track_id, plan.videos[0].b.track_id) == ("Chimes They Fade", "hr-savino-ocean")
    reasons = dict(plan.skipped)
    assert reasons["104"] == "only in A's predictions"
    assert reasons["105"].startswith("no video file with this id")
    assert reasons["106"] == "system A's track 'not-in-library' is not in the library"

    empty = inputs["root"] / "empty"
    empty.mkdir(exist_ok=True)
    with pytest.raises(InputError, match="no video can be compared"):
        plan_study(inputs["a"], inputs["b"], empty, MusicLibrary(lib.library))


def test_a_rater_session(lib: ServeLibrary, inputs: dict[str, Path], tmp_path: Path) -> None:
    database = tmp_path / "answers.sqlite"
    settings = lib.settings(checkpoint=None, work_dir=tmp_path, ab_study=study_settings(inputs, database))
    library = MusicLibrary(lib.library)
    with ready_client(settings) as client:
        page = client.get("/")
        assert page.status_code == 200 and "ab.js" in page.text
        assert client.post("/v1/ground", headers=AUTH).status_code == 404  # no grounding in this mode
        assert client.get("/v1/ab/study", headers=AUTH).json() == {"videos": 3, "skipped": 3}
        assert client.post("/v1/ab/next", headers=JSON, json={"rater_id": "ann"}).status_code == 200
        assert client.post("/v1/ab/next", json={"rater_id": "ann"}).status_code == 401

        seen = []
        for shown in ("first", "second", "both"):
            step = client.post("/v1/ab/next", headers=JSON, json={"rater_id": "ann"})
            body = step.json()
            assert set(body) == {"done", "presentation_id", "answered", "total"} and not body["done"]
            assert body["answered"] == len(seen) and body["total"] == 3
            # Asking again before answering shows the same pair in the same order.
            again = client.post("/v1/ab/next", headers=JSON, json={"rater_id": "ann"}).json()
            assert again["presentation_id"] == body["presentation_id"]
            clips = []
            for position in (1, 2):
                clip = client.get(f"/v1/ab/presentations/{body['presentation_id']}/clips/{position}", headers=AUTH)
                assert clip.status_code == 200 and clip.headers["content-type"] == "video/mp4"
                assert "content-disposition" not in clip.headers  # no file name could give the system away
                path = tmp_path / f"clip-{len(seen)}-{position}.mp4"
                path.write_bytes(clip.content)
                clips.append(path)
            with sqlite3.connect(database) as db:
                video_id, first = db.execute(
                    "SELECT video_id, first_system FROM presentations WHERE id = ?", (body["presentation_id"],)
                ).fetchone()
            assert video_id not in step.text and "Chimes" not in step.text  # labels and tracks stay hidden
            if video_id == "101":  # two different tracks: clip 1 must carry the first system's music
                info = probe(clips[0])
                assert info.has_video and info.has_audio and info.duration == pytest.approx(5.0, abs=0.1)
                a_track = library.track("Chimes They Fade").path
                b_track = library.track("hr-savino-ocean").path
                first_clip = clips[0]
                a_fit, b_fit = similarity(first_clip, a_track, 10.0, 5.0), similarity(first_clip, b_track, 30.0, 5.0)
                assert (a_fit > b_fit) == (first == "A"), (a_fit, b_fit, first)
            recorded = client.post(
                "/v1/ab/answers",
                headers=JSON,
                json={"presentation_id": body["presentation_id"], "rater_id": "ann", "answer": shown},
            )
            assert recorded.status_code == 201 and recorded.json()["answered"] == len(seen) + 1
            seen.append((video_id, first, shown, body["presentation_id"]))
        assert client.post("/v1/ab/next", headers=JSON, json={"rater_id": "ann"}).json() == {
            "done": True,
            "presentation_id": None,
            "answered": 3,
            "total": 3,
        }

        # Refusals.
        presentation = seen[0][3]
        twice = client.post(
            "/v1/ab/answers", headers=JSON, json={"presentation_id": presentation, "rater_id": "ann", "answer": "both"}
        )
        assert twice.status_code == 409 and "already answered" in twice.json()["message"]
        other = client.post(
            "/v1/ab/answers", headers=JSON, json={"presentation_id": presentation, "rater_id": "bob", "answer": "both"}
        )
        assert other.status_code == 409 and "another rater" in other.json()["message"]
        unknown = {"presentation_id": "x" * 22, "rater_id": "ann", "answer": "both"}
        assert client.post("/v1/ab/answers", headers=JSON, json=unknown).status_code == 404
        assert client.post("/v1/ab/answers", headers=JSON, json={**unknown, "answer": "A"}).status_code == 422
        assert client.post("/v1/ab/next", headers=JSON, json={"rater_id": "<script>"}).status_code == 422
        assert client.get("/v1/ab/presentations/nope/clips/1", headers=AUTH).status_code == 404
        assert client.get(f"/v1/ab/presentations/{presentation}/clips/3", headers=AUTH).status_code == 422

    # Each answer is one durable row: rater, time, the order shown, and both systems' moments.
    rows = answers(database)
    assert len(rows) == 3
    by_video = {r["video_id"]: r for r in rows}
    for video_id, first, shown, _ in seen:
        row = by_video[video_id]
        assert row["rater_id"] == "ann" and row["first_system"] == first and row["shown_answer"] == shown
        other_system = "B" if first == "A" else "A"
        assert row["answer"] == {"first": first, "second": other_system, "both": "both"}[shown]
        assert row["answered_at"].endswith("+00:00")
    assert (by_video["101"]["a_track"], by_video["101"]["b_track"]) == ("Chimes They Fade", "hr-savino-ocean")
    assert (by_video["101"]["a_start"], by_video["101"]["b_start"]) == (10.0, 30.0)
    with sqlite3.connect(database) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_the_order_is_drawn_per_video_and_recorded(lib: ServeLibrary, inputs: dict[str, Path], tmp_path: Path) -> None:
    database = tmp_path / "answers.sqlite"
    study = AbStudy.open(study_settings(inputs, database), MusicLibrary(lib.library))
    firsts = [study.next_presentation(f"rater-{i}").first_system for i in range(40)]
    assert set(firsts) == {"A", "B"}  # all 40 equal would happen with probability 2**-39
    with sqlite3.connect(database) as db:
        stored = [row[0] for row in db.execute("SELECT first_system FROM presentations ORDER BY rowid")]
    assert stored == firsts
    # Raters see the videos in orders of their own.
    orders = {tuple(_video_order(study, f"order-{i}")) for i in range(8)}
    assert len(orders) > 1


def _video_order(study: AbStudy, rater: str) -> list[str]:
    order = []
    while (presentation := study.next_presentation(rater)) is not None:
        order.append(presentation.video_id)
        study.record_answer(presentation.id, rater, "neither")
    return order


def test_a_database_belongs_to_one_pair_of_prediction_files(
    lib: ServeLibrary, inputs: dict[str, Path], tmp_path: Path
) -> None:
    database = tmp_path / "answers.sqlite"
    AbStudy.open(study_settings(inputs, database), MusicLibrary(lib.library))
    AbStudy.open(study_settings(inputs, database), MusicLibrary(lib.library))  # the same study again: fine
    changed = tmp_path / "B2.jsonl"
    changed.write_text(inputs["b"].read_text().replace("30.0, 35.0", "31.0, 36.0"))
    settings = AbStudySettings(inputs["a"], changed, inputs["media"], database)
    with pytest.raises(InputError, match="belongs to another study"):
        AbStudy.open(settings, MusicLibrary(lib.library))


def test_ab_report(
    lib: ServeLibrary,
    inputs: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    database = tmp_path / "answers.sqlite"
    study = AbStudy.open(study_settings(inputs, database), MusicLibrary(lib.library))
    wanted = {"r1": ["A", "A", "both"], "r2": ["A", "B", "neither"]}
    for rater, labels in wanted.items():
        for label in labels:
            presentation = study.next_presentation(rater)
            shown = {"both": "both", "neither": "neither"}.get(label)
            if shown is None:
                shown = "first" if presentation.first_system == label else "second"
            study.record_answer(presentation.id, rater, shown)

    with pytest.raises(SystemExit) as exit_info:
        main(["ab-report", str(database), "--json"])
    assert exit_info.value.code in (0, None)
    report = json.loads(capsys.readouterr().out)
    assert report["counts"] == {"A": 3, "B": 1, "both": 1, "neither": 1}
    assert report["percent"] == {"A": 50.0, "B": 16.67, "both": 16.67, "neither": 16.67}
    assert (report["answers"], report["raters"], report["videos"]) == (6, 2, 3)
    assert report["sign_test_p"] == pytest.approx(0.625)  # 3 of 4: 2 * (1 + 4) / 16
    assert report["a_file"] == str(inputs["a"])

    with pytest.raises(SystemExit):
        main(["ab-report", str(database)])
    out = capsys.readouterr().out
    assert "A better" in out and "50.0%" in out and "16.7%" in out and "2 rater(s), 3 video(s)" in out
    assert "A preferred in 3 of 4" in out

    for bad, message in ((tmp_path / "missing.sqlite", "no such answer database"),
                         (lib.library / "tracks.sqlite", "not an A/B study answer database")):  # fmt: skip
        with pytest.raises(SystemExit) as exit_info:
            main(["ab-report", str(bad)])
        assert exit_info.value.code == 1 and message in capsys.readouterr().err


def test_report_arithmetic() -> None:
    report = AbReport({"A": 8, "B": 2, "both": 5, "neither": 5}, raters=3, videos=7, a_file="a", b_file="b")
    assert report.total == 20
    assert report.percentages() == {"A": 40.0, "B": 10.0, "both": 25.0, "neither": 25.0}
    assert report.sign_test_p() == pytest.approx(2 * (1 + 10 + 45) / 1024)
    assert AbReport(dict.fromkeys("AB", 0) | {"both": 2, "neither": 0}, 1, 1, "a", "b").sign_test_p() is None
