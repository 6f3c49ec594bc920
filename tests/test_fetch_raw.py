"""`mgsv data fetch --raw`: the gated raw media of MGSV-EC, mapped to CSV ids, extracted, accepted by the trainer.

What is known of `xxayt/MGSV-EC-Raw` comes from its dataset card (https://huggingface.co/datasets/xxayt/MGSV-EC-Raw,
stored copy): gated with manual review ("You need to agree to share your contact information to access this
dataset"; the listing is public, the files are not), licence cc-by-nc-nd-4.0, and a partial release: 7,580 music
files including vocal / no-vocal variants of the 4,050 tracks, 1,721 of the 2,000 test videos, 2,085 of the 51,194
train/val videos. Its folder names and file names are in no stored copy we could find. The planted repository
therefore names music files as the official CSVs' `music_path` column does (`<music_id>+<title>.mp3`, 伴奏 marking
the no-vocal variant; xxayt/MGSV dataset/MGSV-EC/*.csv @ 8a1462b) and videos by their id, in folders of its own
invention, and also plants the other names the mapping must cope with: a renamed variant pair, a bare
`<music_id>.mp3`, a `<video_id>_suffix.mp4`, an id twice, files of no id. The mapping reads names only, never
folders. The gated answers (401 without a token, 403 with a token not granted access) are the fake hub's, which
mirrors the real Hub's (tests/hub_factory.py).
"""

from __future__ import annotations

import json
import os
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest
from grounding_factory import TINY_MADE, TinySetup, make_tiny_setup
from hub_factory import FakeHub
from media_factory import write_test_video, write_tone

from mgsv.cli import main
from mgsv.data.annotations import COLUMNS
from mgsv.data.dataset import PairDataset
from mgsv.data.raw_layout import build_raw_layout, match_music
from mgsv.errors import OutputExistsError
from mgsv.extract.pipeline import EncoderOptions, extract_features
from mgsv.features.store import FeatureStore
from mgsv.training.trainer import Trainer, TrainSettings

ANNOTATIONS = "xxayt/MGSV-EC"
RAW = "xxayt/MGSV-EC-Raw"
APPROVED, WAITING = "hf_approved_token", "hf_waiting_token"
A, B, C, D = "4+5xaaaaaaaaaaaa1", "7+5xbbbbbbbbbbbb2", "4+5xcccccccccccc3", "4+5xdddddddddddd4"
MUSIC_PATHS = {  # as the CSVs' music_path column spells them
    A: "/Data/music/source_music/0/4+5xaaaaaaaaaaaa1+旋律（DJ版）.mp3",
    B: "/Data/music/source_music/3/7+5xbbbbbbbbbbbb2+星星(伴奏).mp3",
    C: "/Data/music/source_music/1/4+5xcccccccccccc3+名声四起(DJ版).mp3",
    D: "/Data/music/source_music/2/4+5xdddddddddddd4+独当一面.mp3",
}
SPLIT_ROWS = {  # (video_id, music_id)
    "train": [("900000000001", A), ("900000000002", B), ("900000000003", C)],
    "val": [("900000000011", A), ("900000000012", D)],
    "test": [("900000000021", B), ("900000000022", C)],
}
# The planted raw repository: path -> (kind, seconds). Videos 900000000003 (twice: ambiguous) and 900000000022
# (absent) and track D (absent) leave their rows out.
RAW_MEDIA = {
    "music/0/4+5xaaaaaaaaaaaa1+旋律（DJ版）.mp3": ("music", 6.0),  # the annotated variant, by its exact name
    "music/0/4+5xaaaaaaaaaaaa1+旋律（DJ版）(伴奏).mp3": ("music", 5.0),  # its no-vocal variant: left out
    "music/3/7+5xbbbbbbbbbbbb2+xingxing_伴奏.mp3": ("music", 4.0),  # renamed: the no-vocal one is annotated
    "music/3/7+5xbbbbbbbbbbbb2+xingxing.mp3": ("music", 4.5),
    "music/1/4+5xcccccccccccc3.mp3": ("music", 3.5),  # a bare id
    "music/extra/cover-jingle.mp3": ("music", 2.0),  # no id
    "videos/train_val/900000000001.mp4": ("video", 3.0),
    "videos/train_val/900000000002_1080p.mp4": ("video", 2.5),
    "videos/train_val/900000000003.mp4": ("video", 2.0),
    "videos/duplicates/900000000003.mp4": ("video", 2.0),
    "videos/train_val/900000000011.mp4": ("video", 3.0),
    "videos/train_val/900000000012.mp4": ("video", 2.0),
    "videos/test/900000000021.mp4": ("video", 3.5),
    "videos/test/trailer.mp4": ("video", 2.0),  # no id
}


def csv_bytes(rows: list[tuple[str, str]]) -> bytes:
    lines = [",".join(COLUMNS)]
    for video_id, music_id in rows:
        values = [video_id, music_id, "0.0", "2.0", "0.5", "2.5", "6.0", "2.0", "2.0", MUSIC_PATHS[music_id], "2.0",
                  "160", "120", "10", "5", "Beauty"]
        lines.append(",".join(values))
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("raw-media")
    files: dict[str, bytes] = {"README.md": b"---\nlicense: cc-by-nc-nd-4.0\n---\n# MGSV-EC Raw Media\n"}
    for number, (path, (kind, seconds)) in enumerate(sorted(RAW_MEDIA.items())):
        local = folder / f"{number}{Path(path).suffix}"
        if kind == "video":
            write_test_video(local, seconds=seconds, fps=5, pattern="noise", seed=number)  # distinct content
        else:
            write_tone(local, seconds=seconds, freq=220.0 + 40 * number)
        files[path] = local.read_bytes()
    return files


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> TinySetup:
    return make_tiny_setup(tmp_path_factory.mktemp("raw-encoders"))


@pytest.fixture()
def hub(planted: dict[str, bytes], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))  # no token of this machine
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with FakeHub() as fake:
        fake.add_user(APPROVED, "researcher")
        fake.add_user(WAITING, "newcomer")
        fake.add_repo("dataset", ANNOTATIONS, {f"dataset/MGSV-EC/{split}_data.csv": csv_bytes(rows)
                                               for split, rows in SPLIT_ROWS.items()})
        fake.add_repo("dataset", RAW, planted, gated=True, approved={APPROVED})
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        yield fake


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def test_gated_without_access_says_what_to_do(
    hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    page = f"{hub.url}/datasets/{RAW}"
    base = ["data", "fetch", "--raw", "--out", str(tmp_path / "raw"), "--cache-dir", str(tmp_path / "cache")]

    def raw_file_answers(since: int) -> set[tuple[int, str | None]]:
        """(status, token) of the requests for the raw repository's files since request number `since`."""
        return {(status, token) for (_, path, _), status, token
                in list(zip(hub.requests, hub.statuses, hub.authorizations, strict=True))[since:]
                if path.startswith(f"/datasets/{RAW}/resolve/")}

    code, _, err = run(base, capsys)
    assert code == 1
    assert f"{RAW}@main: the repository is gated: request access on {page}" in err
    assert "hf auth login" in err and "HF_TOKEN" in err
    assert raw_file_answers(0) == {(401, None)}  # the listing was public; the files answered 401

    before = len(hub.requests)
    code, _, err = run([*base, "--token", WAITING], capsys)
    assert code == 1
    assert (f"{RAW}@main: access to this gated repository has not been granted to your account (yet); request it "
            f"on {page}") in err
    assert raw_file_answers(before) == {(403, WAITING)}

    monkeypatch.setenv("HF_TOKEN", "hf_not_a_token")
    code, _, err = run(base, capsys)
    assert code == 1 and "the Hub did not accept the token (Invalid credentials in Authorization header)" in err
    assert not (tmp_path / "raw" / "media").exists()


def test_raw_media_become_a_dataset_the_trainer_accepts(
    hub: FakeHub, setup: TinySetup, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", APPROVED)
    out = tmp_path / "MGSV-EC-raw"
    code, stdout, _ = run(["data", "fetch", "--raw", "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
                           "--json"], capsys)
    assert code == 0
    report = json.loads(stdout)
    layout = report["layout"]
    assert report["commit"] == hub.repos[("dataset", RAW)].branches["main"]
    assert layout["splits"] == {
        "train": {"rows": 3, "kept": 2, "videos_missing": 1, "music_missing": 0},
        "val": {"rows": 2, "kept": 1, "videos_missing": 0, "music_missing": 1},
        "test": {"rows": 2, "kept": 1, "videos_missing": 1, "music_missing": 0},
    }
    assert layout["videos"] == 5 and layout["music"] == 3 and layout["music_matched_by_id_prefix"] == 2
    assert layout["other_variants"] == 2 and layout["unmatched_files"] == 2
    assert layout["ambiguous"] == ["900000000003: 900000000003.mp4, 900000000003.mp4"]

    snapshot = Path(report["snapshot"])
    links = {p.relative_to(out / "media").as_posix(): p for p in (out / "media").rglob("*.mp*")}
    assert len(links) == 8
    linked = {name: next(f for f in RAW_MEDIA if os.path.samefile(snapshot / f, link)) for name, link in links.items()}
    assert {name: source for name, source in linked.items() if name.startswith("music/")} == {
        f"music/{A}.mp3": "music/0/4+5xaaaaaaaaaaaa1+旋律（DJ版）.mp3",
        f"music/{B}.mp3": "music/3/7+5xbbbbbbbbbbbb2+xingxing_伴奏.mp3",
        f"music/{C}.mp3": "music/1/4+5xcccccccccccc3.mp3",
    }
    assert linked["videos/900000000002.mp4"] == "videos/train_val/900000000002_1080p.mp4"
    assert snapshot.is_relative_to(tmp_path / "cache")  # the media were linked, not copied out of the cache
    kept_train = (out / "train_data.csv").read_text(encoding="utf-8").splitlines()
    assert kept_train[0] == ",".join(COLUMNS) and [line.split(",")[0] for line in kept_train[1:]] == [
        "900000000001", "900000000002"]
    assert (out / "train_data.csv").read_bytes() in csv_bytes(SPLIT_ROWS["train"])  # the rows' exact text

    # mgsv extract on the layout (ids = link stems), then the trainer takes the folder as it is.
    encoders = EncoderOptions(clip=str(setup.clip_dir), ast=str(setup.ast_dir), dtype="fp32", batch_size=32)
    extracted = extract_features(out / "features", [out / "media" / "videos"], [out / "media" / "music"],
                                 encoders=encoders)
    assert extracted.ok and FeatureStore(out / "features").verify() == {"video": 5, "music": 3}
    for split in ("train", "val", "test"):
        assert len(PairDataset.from_folder(out, split)) == layout["splits"][split]["kept"]
    trainer = Trainer(TrainSettings(
        preset="made", data_dir=out, out_dir=tmp_path / "run", model_overrides=dict(TINY_MADE),
        recipe_overrides={"epochs": 1, "min_epochs": 1, "batch_size": 2, "eval_batch_size": 4}, progress=False,
        device="cpu"))
    state = trainer.fit()
    assert state.epoch == 1 and (tmp_path / "run" / "checkpoints" / "last" / "model.safetensors").is_file()

    # A re-run finds the layout in place and prints the human summary.
    code, stdout, _ = run(["data", "fetch", "--raw", "--out", str(out), "--cache-dir", str(tmp_path / "cache")],
                          capsys)
    text = " ".join(stdout.split())
    assert code == 0 and "5 videos and 3 tracks matched to CSV ids (2 tracks by id prefix)" in text
    assert "train 2 of 3 rows have both files (1 videos, 0 tracks missing)" in text
    assert f"next: mgsv extract --store {out}/features --videos {out}/media/videos --music {out}/media/music" in text

    # Offline, the cache answers alone: the same layout in another folder without a single request.
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    before = len(hub.requests)
    code, stdout, _ = run(["data", "fetch", "--raw", "--out", str(tmp_path / "offline"), "--cache-dir",
                           str(tmp_path / "cache"), "--json"], capsys)
    assert code == 0 and json.loads(stdout)["layout"]["splits"] == layout["splits"] and len(hub.requests) == before


def test_layout_refuses_to_overwrite_and_matches_names_in_nfc(tmp_path: Path) -> None:
    # macOS stores names decomposed (NFD): the full-width parenthesis and the CJK are the same name in NFC.
    annotated = {A: "4+5xaaaaaaaaaaaa1+旋律（DJ版）.mp3"}
    decomposed = tmp_path / unicodedata.normalize("NFD", "4+5xaaaaaaaaaaaa1+旋律（DJ版）.mp3")
    decomposed.write_bytes(b"x")
    chosen, report = match_music([decomposed], annotated)
    assert chosen == {A: decomposed} and report.matched_by_prefix == 0

    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    for split, rows in SPLIT_ROWS.items():
        (csv_dir / f"{split}_data.csv").write_bytes(csv_bytes(rows))
    media = tmp_path / "media-a"
    media.mkdir()
    write_test_video(media / "900000000001.mp4", seconds=1.0, fps=5)
    write_tone(media / "4+5xaaaaaaaaaaaa1.mp3", seconds=1.0)
    csvs = {split: csv_dir / f"{split}_data.csv" for split in SPLIT_ROWS}
    out = tmp_path / "out"
    first = build_raw_layout([media], csvs, out)
    assert first.splits["train"].kept == 1 and first.not_written == ["val", "test"]
    assert not (out / "val_data.csv").exists()
    other = tmp_path / "media-b"
    other.mkdir()
    write_test_video(other / "900000000001.mp4", seconds=1.5, fps=5)
    write_tone(other / "4+5xaaaaaaaaaaaa1.mp3", seconds=1.0)
    with pytest.raises(OutputExistsError, match="media: exists with other links; use --force"):
        build_raw_layout([other], csvs, out)
    assert os.path.samefile(out / "media" / "videos" / "900000000001.mp4", media / "900000000001.mp4")
    build_raw_layout([other], csvs, out, force=True)
    assert os.path.samefile(out / "media" / "videos" / "900000000001.mp4", other / "900000000001.mp4")
