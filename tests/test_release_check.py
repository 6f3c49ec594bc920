"""`mgsv encoders verify --against-release` offline: planted raw media and a planted release with known answers.

A fake Hub on 127.0.0.1 (tests/hub_factory.py, which mirrors the real Hub's answers, gated ones included) serves
two repositories laid out as the real ones are:

- `xxayt/MGSV-EC`: `dataset/MGSV-EC/{train,val,test}_data.csv` and `MGSV_feature.zip` at the root, the official
  per-id `.pt` layout inside a wrapper folder (the layout and its sources: tests/test_fetch.py's docstring;
  docs/official-code.md, "Feature layout");
- `xxayt/MGSV-EC-Raw`: gated; music named as the CSVs' `music_path` names it, videos by id (what is known of its
  file names and why: tests/test_fetch_raw.py's docstring).

The raw media are generated videos and excerpts of Debian music re-encoded as MP3 (the release's format). The
release is made here with the tiny encoders of tests/encoder_factory.py from the same files, so the expected
cosines are known: items planted as our encoders see them agree (up to the float16 of the store), items whose
every token was turned by a known angle have exactly that cosine. One video row uses only the first 2.6 s of a
5.5 s file, as MGSV-EC rows do (`video_end`), so its released features hold 3 frames, not 6. Every other way an
item can fail to be compared is planted once: a video without a raw file, a track without released features, a
damaged released `.pt`, a raw file that is not audio.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from grounding_factory import TinySetup, make_tiny_setup
from hub_factory import FakeHub
from media_factory import write_audio, write_test_video

from mgsv.cli import main
from mgsv.data.annotations import COLUMNS, load_annotations
from mgsv.data.dataset import PairDataset
from mgsv.encoders.ast import AstMusicEncoder
from mgsv.encoders.clip import ClipFrameEncoder
from mgsv.errors import OutputExistsError, SpecMismatchError
from mgsv.evaluation.protocol import EvalOptions, evaluate
from mgsv.evaluation.release_check import HubAccess, verify_against_release
from mgsv.evaluation.release_items import official_frame_count
from mgsv.features.spec import FeatureSpec, decode_options
from mgsv.features.store import FeatureStore
from mgsv.media.decode import read_audio_channels, read_video_frames
from mgsv.media.tracks import decode_track
from mgsv.models.checkpoint import load_checkpoint

ANNOTATIONS = "xxayt/MGSV-EC"
RAW = "xxayt/MGSV-EC-Raw"
APPROVED = "hf_approved_token"
V1, V2, V3, V4, V5 = (f"91000000000{i}" for i in range(1, 6))
M1, M2, M3, M4, M5 = (f"4+5xrelease0000{c}{i}" for i, c in enumerate("abcde", start=1))
# video_id -> (seconds of the file, the row's video_end); fps 5
VIDEOS = {V1: (4.2, 4.2), V2: (5.5, 2.6), V3: (3.5, 3.5), V4: (3.0, 3.0), V5: (3.0, 3.0)}
# music_id -> (Debian track of the wesnoth package, seconds of the excerpt)
MUSIC = {M1: ("defeat.ogg", 8.0), M2: ("elf-land.ogg", 11.0), M3: ("defeat2.ogg", 12.0), M4: ("sad.ogg", 6.0),
         M5: ("victory.ogg", 5.0)}
TEST_ROWS = [(V1, M1), (V2, M2), (V3, M3), (V4, M4), (V5, M5)]
TURNED = {V3: 0.95, M2: 0.85}  # ids whose released tokens are ours turned to exactly this cosine
NO_RAW, NO_RELEASE = {V4}, {M4}
DAMAGED_RELEASE, NOT_AUDIO = {V5}, {M5}
FRAMES = {V1: 5, V2: 3, V3: 4}  # frames the release holds: seconds 0 .. floor(video_end)


def music_path(music_id: str) -> str:
    return f"/Data/music/source_music/0/{music_id}+{MUSIC[music_id][0].removesuffix('.ogg')}.mp3"


def csv_bytes(rows: list[tuple[str, str]]) -> bytes:
    lines = [",".join(COLUMNS)]
    for video_id, music_id in rows:
        end = VIDEOS.get(video_id, (3.0, 3.0))[1]
        seconds = MUSIC[music_id][1]
        values = [video_id, music_id, "0.0", f"{end}", "0.5", f"{0.5 + end}", f"{seconds}", f"{end}", f"{end}",
                  music_path(music_id), f"{VIDEOS.get(video_id, (3.0, 3.0))[0]}", "160", "120", "20", "5", "Beauty"]
        lines.append(",".join(values))
    return ("\n".join(lines) + "\n").encode()


def turned(tokens: np.ndarray, cosine: float, seed: int) -> np.ndarray:
    """Each row of `tokens` turned to exactly `cosine` with itself, its length kept."""
    rng = np.random.default_rng(seed)
    out = np.empty_like(tokens, dtype=np.float64)
    for i, row in enumerate(tokens.astype(np.float64)):
        unit = row / np.linalg.norm(row)
        other = rng.standard_normal(len(row))
        other -= (other @ unit) * unit
        other /= np.linalg.norm(other)
        out[i] = np.linalg.norm(row) * (cosine * unit + np.sqrt(1 - cosine**2) * other)
    return out.astype(np.float32)


@dataclass
class Planted:
    setup: TinySetup
    specs: dict[str, FeatureSpec]  # what the planted release was made with: the tiny encoders' specs
    raw: dict[str, bytes]  # the raw repository's files
    release: dict[str, bytes]  # the annotation repository's files
    ours: dict[str, tuple[np.ndarray, np.ndarray]]  # id -> our tokens and mask, as the tiny encoders give them
    released: dict[str, tuple[np.ndarray, np.ndarray]]  # id -> the released tokens [L, D] and mask, as planted


def layout_zip(released: dict[str, tuple[np.ndarray, np.ndarray]], damaged: set[str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for item_id, (tokens, mask) in released.items():
            top, kind = ("vit_feature1", "vit") if item_id in VIDEOS else ("ast_feature2p5", "ast")
            for sub, tensor in ((f"{kind}_feature", torch.from_numpy(tokens)),
                                (f"{kind}_mask", torch.from_numpy(mask.astype(np.float32)))):
                data = io.BytesIO()
                torch.save(tensor, data)
                content = data.getvalue()[:40] if item_id in damaged and sub.endswith("feature") else data.getvalue()
                archive.writestr(zipfile.ZipInfo(f"Kuai_feature/{top}/{sub}/{item_id}.pt",
                                                 date_time=(2025, 1, 1, 0, 0, 0)), content)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory, debian_music: dict[str, Path]) -> Planted:
    root = tmp_path_factory.mktemp("release-check")
    setup = make_tiny_setup(root / "models")
    clip, ast = setup.clip(), setup.ast()
    raw: dict[str, bytes] = {"README.md": b"---\nlicense: cc-by-nc-nd-4.0\n---\n# MGSV-EC Raw Media\n"}
    ours: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for number, (video_id, (seconds, _)) in enumerate(VIDEOS.items()):
        path = write_test_video(root / f"{video_id}.mp4", seconds=seconds, fps=5, pattern="noise", seed=number)
        if video_id not in NO_RAW:
            raw[f"videos/test/{video_id}.mp4"] = path.read_bytes()
        frames = read_video_frames(path, **decode_options(clip.spec))
        keep = FRAMES.get(video_id, len(frames))
        ours[video_id] = clip.encode(frames.frames[:keep]), np.ones(keep, bool)
    assert len(read_video_frames(root / f"{V2}.mp4").frames) == 6  # the file has 6 whole seconds; the row uses 3
    for music_id, (name, seconds) in MUSIC.items():
        path = write_audio(root / f"{music_id}.mp3", read_audio_channels(
            debian_music["wesnoth"] / name, 44100, max_seconds=seconds), 44100)
        track = decode_track(path, **decode_options(ast.spec))
        ours[music_id] = ast.encode(track.samples, sample_rate=16000, source=str(path))
        content = b"this is not audio" * 64 if music_id in NOT_AUDIO else path.read_bytes()
        raw[f"music/0/{Path(music_path(music_id)).name}"] = content
    released: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    rng = np.random.default_rng(15)
    for seed, (item_id, (tokens, mask)) in enumerate(ours.items()):
        if item_id in NO_RELEASE:
            continue
        length = 50 if item_id in VIDEOS else 96
        full = rng.standard_normal((length, tokens.shape[1])).astype(np.float32)  # padding is not zero, as released
        valid = np.zeros(length, bool)
        valid[: len(mask)] = mask
        values = tokens.copy()
        if item_id in TURNED:
            values[mask] = turned(tokens[mask], TURNED[item_id], seed)
        full[: len(tokens)][mask] = values[mask]
        released[item_id] = full, valid
    card = b"---\nlicense: cc-by-nc-4.0\n---\n# Music Grounding by Short Video E-commerce (MGSV-EC) Dataset\n"
    release = {"README.md": card, "MGSV_feature.zip": layout_zip(released, DAMAGED_RELEASE),
               "dataset/MGSV-EC/train_data.csv": csv_bytes([("910000000101", M1)]),
               "dataset/MGSV-EC/val_data.csv": csv_bytes([("910000000201", M2)]),
               "dataset/MGSV-EC/test_data.csv": csv_bytes(TEST_ROWS)}
    return Planted(setup, {"video": setup.video_spec, "music": setup.music_spec}, raw, release, ours, released)


@pytest.fixture()
def hub(planted: Planted, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))  # no token of this machine
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with FakeHub() as fake:
        fake.add_user(APPROVED, "researcher")
        fake.add_repo("dataset", ANNOTATIONS, planted.release)
        fake.add_repo("dataset", RAW, planted.raw, gated=True, approved={APPROVED})
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        yield fake


@pytest.fixture()
def local_sides(planted: Planted, tmp_path: Path) -> tuple[Path, Path]:
    """The release as `mgsv data fetch` leaves it (CSV at the root, the zip unpacked) and the raw files."""
    release, raw = tmp_path / "MGSV-EC", tmp_path / "raw"
    for name, data in planted.release.items():
        target = release / Path(name).name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    with zipfile.ZipFile(release / "MGSV_feature.zip") as archive:
        archive.extractall(release / "MGSV_feature")
    for name, data in planted.raw.items():
        (raw / name).parent.mkdir(parents=True, exist_ok=True)
        (raw / name).write_bytes(data)
    return release, raw


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def test_check_against_a_gated_hub_reports_every_item(hub: FakeHub, planted: Planted, tmp_path: Path) -> None:
    setup = planted.setup
    out = tmp_path / "check"
    report = verify_against_release(out, setup.clip(), setup.ast(), hub=HubAccess(hub.url, tmp_path / "cache",
                                                                                  APPROVED),
                                    checkpoint=setup.checkpoint, release_specs=planted.specs)
    items = {r.item: r for r in report.items}
    assert set(items) == {V1, V2, V3, M1, M2, M3}
    for item_id in (V1, V2, M1, M3):  # planted as our encoders see them: equal up to the store's float16
        assert items[item_id].cosine_min > 0.99999, item_id
    for item_id, cosine in TURNED.items():
        assert abs(items[item_id].cosine_mean - cosine) < 1e-3 and abs(items[item_id].cosine_min - cosine) < 1e-3
    assert [(items[v].ours_tokens, items[v].released_tokens) for v in (V1, V2, V3)] == [(5, 5), (3, 3), (4, 4)]
    assert [items[m].tokens for m in (M1, M2, M3)] == [int(planted.ours[m][1].sum()) for m in (M1, M2, M3)]
    assert [items[m].tokens for m in (M1, M2, M3)] == [4, 5, 5]  # window centres <= 8, 11, 12 s

    video, music = report.outcomes["video"], report.outcomes["music"]
    assert (video.missing_raw, video.missing_release) == ([V4], [])
    assert (music.missing_raw, music.missing_release) == ([], [M4])
    assert len(video.failed) == 1 and video.failed[0].startswith(f"{V5}: ") and "cannot load" in video.failed[0]
    assert len(music.failed) == 1 and music.failed[0].startswith(f"{M5}: ")
    assert report.rows == report.rows_checked == 5 and report.rows_compared == 3

    summary = report.summary("video")
    assert summary is not None and summary.items == 3 and summary.worst_item == V3 and summary.counts_differ == 0
    assert summary.at_least == {"0.9999": 2 / 3, "0.999": 2 / 3, "0.99": 2 / 3, "0.9": 1.0}
    summary = report.summary("music")
    assert summary is not None and summary.worst_item == M2 and summary.at_least["0.9"] == 2 / 3
    assert not report.ok  # the turned items are below 0.99

    # The metrics of each side are those of its planted tokens evaluated directly (rows 1-3).
    metrics = report.metrics
    assert metrics is not None and metrics.rows == 3 and metrics.tracks == 3 and not metrics.not_evaluated
    rows = load_annotations(out / "release" / "test_data.csv").iloc[:3]
    model, _ = load_checkpoint(setup.checkpoint)
    expected = {}
    for side, tokens in (("released", planted.released), ("re_extracted", planted.ours)):
        direct = FeatureStore.create(tmp_path / f"direct-{side}", planted.specs)
        for modality, ids in (("video", (V1, V2, V3)), ("music", (M1, M2, M3))):
            with direct.writer(modality) as writer:
                for item_id in ids:
                    writer.add(item_id, *tokens[item_id])
        expected[side] = evaluate(model, PairDataset(rows, direct), EvalOptions(top_k=100)).metrics
    assert metrics.metrics == expected
    assert metrics.difference == {name: expected["re_extracted"][name] - expected["released"][name]
                                  for name in expected["released"]}
    # The re-extracted store holds our tokens (float16).
    stored = FeatureStore(out / "re-extracted").modality("video")
    np.testing.assert_allclose(stored.get(V2)[0].numpy(), planted.ours[V2][0], rtol=2e-3, atol=1e-3)

    written = json.loads((out / "report.json").read_text())
    assert written["not_compared"]["video"]["missing_raw"] == [V4] and written["rows_compared"] == 3
    assert written["sources"]["raw_media"]["repo_id"] == RAW
    assert written["sources"]["release"]["repo_id"] == ANNOTATIONS

    # A re-run in the same folder encodes nothing again and reports the same.
    shards = {m: FeatureStore(out / "re-extracted").shard_count(m) for m in ("video", "music")}
    again = verify_against_release(out, setup.clip(), setup.ast(), release=out / "release",
                                   raw_media=[out / "raw" / "media"], checkpoint=setup.checkpoint,
                                   release_specs=planted.specs)
    assert {m: FeatureStore(out / "re-extracted").shard_count(m) for m in ("video", "music")} == shards
    assert [(r.item, r.cosine_mean) for r in again.items] == [(r.item, r.cosine_mean) for r in report.items]
    assert again.metrics is not None and again.metrics.metrics == metrics.metrics


def test_identical_features_give_identical_metrics(planted: Planted, local_sides: tuple[Path, Path],
                                                   tmp_path: Path) -> None:
    release, raw = local_sides
    setup = planted.setup
    report = verify_against_release(tmp_path / "check", setup.clip(), setup.ast(), release=release, raw_media=[raw],
                                    checkpoint=setup.checkpoint, release_specs=planted.specs, limit=1)
    assert report.rows_checked == 1 and report.rows_compared == 1 and report.ok
    assert {r.item for r in report.items} == {V1, M1}
    assert report.outcomes["video"].ids == 1 and not report.outcomes["video"].missing_raw
    metrics = report.metrics
    assert metrics is not None and metrics.metrics["released"] and set(metrics.difference.values()) == {0.0}


def test_features_made_another_way_are_refused_by_the_checkpoint(planted: Planted, local_sides: tuple[Path, Path],
                                                                 tmp_path: Path) -> None:
    release, raw = local_sides
    setup = planted.setup
    out = tmp_path / "check"
    verify_against_release(out, setup.clip(), setup.ast(), release=release, raw_media=[raw],
                           release_specs=planted.specs, limit=1)
    jpeg = ClipFrameEncoder.from_pretrained(setup.clip_dir, dtype="float32", jpeg_quality=95)
    with pytest.raises(SpecMismatchError, match="earlier check made another way: use another `out`, or `force`"):
        verify_against_release(out, jpeg, setup.ast(), release=release, raw_media=[raw],
                               release_specs=planted.specs, limit=1)
    report = verify_against_release(out, jpeg, setup.ast(), release=release, raw_media=[raw],
                                    checkpoint=setup.checkpoint, release_specs=planted.specs, limit=3, force=True)
    metrics = report.metrics
    assert metrics is not None and metrics.metrics["re_extracted"] is None and metrics.metrics["released"]
    assert "jpeg_quality=95" in metrics.not_evaluated["re_extracted"] and metrics.difference == {}
    video = {r.item: r.cosine_min for r in report.items if r.modality == "video"}
    assert 0.99 < video[V1] < 0.99999  # the JPEG round trip changes the frames a little


def test_a_folder_that_is_not_a_check_is_never_used(planted: Planted, local_sides: tuple[Path, Path],
                                                    tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    release, raw = local_sides
    with pytest.raises(OutputExistsError, match="is not the folder of an earlier check"):
        verify_against_release(tmp_path / "mine", planted.setup.clip(), planted.setup.ast(), release=release,
                               raw_media=[raw], release_specs=planted.specs)
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]


def claim_tiny_specs(monkeypatch: pytest.MonkeyPatch, planted: Planted) -> None:
    """The planted release was made by the tiny encoders, so it claims their specs, as the real one claims the
    official specs (`mgsv.features.official.official_specs`, what the command assumes)."""
    monkeypatch.setattr("mgsv.evaluation.release_check.official_specs", lambda stride: planted.specs)


def test_cli_without_access_says_what_to_do(hub: FakeHub, planted: Planted, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    claim_tiny_specs(monkeypatch, planted)
    setup = planted.setup
    code, _, err = run_cli(["encoders", "verify", "--against-release", "--out", str(tmp_path / "check"), "--clip",
                            str(setup.clip_dir), "--ast", str(setup.ast_dir), "--cache-dir", str(tmp_path / "cache")],
                           capsys)
    assert code == 1
    assert f"{RAW}@main: the repository is gated: request access on {hub.url}/datasets/{RAW}" in " ".join(err.split())
    # Stopped before the release's features were downloaded (the raw fetch reads only the CSVs of the release).
    assert not any(path.endswith("MGSV_feature.zip") for _, path, _ in hub.requests)


def test_cli_on_local_folders(planted: Planted, local_sides: tuple[Path, Path], tmp_path: Path,
                              capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    claim_tiny_specs(monkeypatch, planted)
    monkeypatch.setenv("COLUMNS", "200")
    release, raw = local_sides
    setup = planted.setup
    args = ["encoders", "verify", "--against-release", "--release", str(release), "--raw-media", str(raw), "--out",
            str(tmp_path / "check"), "--clip", str(setup.clip_dir), "--ast", str(setup.ast_dir), "--checkpoint",
            str(setup.checkpoint)]
    code, out, _ = run_cli([*args, "--json"], capsys)
    assert code == 1
    report = json.loads(out)
    assert not report["ok"] and report["min_cosine"] == 0.99 and report["rows_compared"] == 3
    assert report["not_compared"]["music"]["missing_release"] == [M4]
    assert report["metrics"]["rows"] == 3 and set(report["metrics"]["difference"]) == set(
        report["metrics"]["metrics"]["released"])
    assert report["summary"]["video"]["at_least"]["0.99"] == pytest.approx(2 / 3)

    code, out, _ = run_cli([*args, "--min-cosine", "0.8"], capsys)  # resumed: nothing is encoded again
    text = " ".join(out.split())
    assert code == 0 and "agree" in text
    assert f"no raw file (1): {V4}" in text and f"no released features (1): {M4}" in text
    assert f"failed (1): {V5}: " in text and "3 of 5 test rows compared" in text
    assert "video: 3 of 5 ids compared" in text and "mIoU" in text and "difference" in text

    # The preprocessing options reach the encoders (and so the specs); such features are refused by the checkpoint.
    code, out, _ = run_cli([*args, "--jpeg-quality", "95", "--frame-times", "shown", "--music-channel", "mean",
                            "--resampler", "soxr", "--batch-size", "2", "--limit", "1", "--force", "--json"], capsys)
    report = json.loads(out)
    clip = ClipFrameEncoder.from_pretrained(setup.clip_dir, dtype="float32", jpeg_quality=95, frame_times="shown")
    ast = AstMusicEncoder.from_pretrained(setup.ast_dir, dtype="float32", channel="mean", resampler="soxr")
    assert report["specs"]["re_extracted"] == {"video": clip.spec.fingerprint(), "music": ast.spec.fingerprint()}
    assert report["rows_checked"] == 1 and set(report["metrics"]["not_evaluated"]) == {"re_extracted"}


def test_cli_refuses_options_of_the_other_mode(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run_cli(["encoders", "verify", "--limit", "3"], capsys)
    assert code == 2 and "applies to the check against the release only" in err
    code, _, err = run_cli(["encoders", "verify", "--against-release", "--out", str(tmp_path), "--media",
                            str(tmp_path / "x.mp4")], capsys)
    assert code == 2 and "not with the release" in err
    code, _, err = run_cli(["encoders", "verify", "--against-release"], capsys)
    assert code == 2 and "--out DIR" in err


def test_official_frame_count_follows_the_row() -> None:
    # seconds floor(video_start) .. floor(video_end), never past second 49 (docs/official-code.md)
    assert official_frame_count(0.0, 33.873) == 34
    assert official_frame_count(0.47, 5.17) == 6
    assert official_frame_count(0.0, 49.49) == 50 and official_frame_count(0.0, 75.0) == 50
    assert official_frame_count(1.2, 1.9) == 1


def test_encoders_of_another_size_are_refused(planted: Planted, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    setup = planted.setup
    code, _, err = run_cli(["encoders", "verify", "--against-release", "--out", str(tmp_path / "check"), "--clip",
                            str(setup.clip_dir), "--ast", str(setup.ast_dir), "--release", str(tmp_path)], capsys)
    assert code == 1 and "--clip: makes 16-d video tokens; the released ones are 512-d" in " ".join(err.split())
    assert not (tmp_path / "check").exists()
