"""`mgsv data fetch` without the internet: a fake Hugging Face Hub on 127.0.0.1 and hand-built hub caches.

The fake hub (tests/hub_factory.py) answers the dataset info, tree and `resolve` calls huggingface_hub makes, so
the real download code runs end to end: listing -> download into a hub cache -> size check -> unzip -> import.

The repository it serves has the layout of `xxayt/MGSV-EC` on the Hub: at the root README.md (the dataset card,
whose `configs.data_files` name dataset/MGSV-EC/{train,val,test}_data.csv), MGSV_feature.zip (3.35 GB there),
dataset/ and dataloader/ (listing at https://huggingface.co/datasets/xxayt/MGSV-EC/tree/main, commit 4e5e50a;
the card at .../blob/main/README.md, commit f33c4f6; the commit 5703584bdeeb3573a166322639cf1ded27d1f1ea that
added dataset/MGSV-EC/*.csv and dataloader/*.py, all from stored copies of those pages). The official GitHub
repository (xxayt/MGSV @ 8a1462b) has the same dataset/MGSV-EC/ folder.
"""

from __future__ import annotations

import io
import json
import stat
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hub_factory import FakeHub

from mgsv.cli import main
from mgsv.errors import InputError, OutputExistsError
from mgsv.features.fetch import DownloadError, extract_zip, fetch_dataset
from mgsv.features.store import FeatureStore

REPO = "xxayt/MGSV-EC"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
VIDEOS = {"113722188340": 23, "113722188341": 7}
MUSIC = {"4+5xxavfkz9qscs44": 56, "7+5x4mjjeiubm49fg": 96}
CSV_DIR = "dataset/MGSV-EC"
# An excerpt of the dataset card's metadata header as the Hub serves it (README.md at f33c4f6).
CARD = b"""---
license: cc-by-nc-4.0
configs:
- config_name: default
  data_files:
  - split: train
    path: "dataset/MGSV-EC/train_data.csv"
  - split: val
    path: "dataset/MGSV-EC/val_data.csv"
  - split: test
    path: "dataset/MGSV-EC/test_data.csv"
---
# Music Grounding by Short Video E-commerce (MGSV-EC) Dataset
"""


def csv_bytes(pairs: list[tuple[str, str]]) -> bytes:
    rows = ["video_id,music_id,video_start,video_end,music_start,music_end,music_total_duration"]
    rows += [f"{v},{m},0,10,5,15,120" for v, m in pairs]
    return ("\n".join(rows) + "\n").encode()


def features_zip() -> bytes:
    """The official layout, zipped inside a wrapper folder as a dataset archive would be."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for top, kind, items, length, dim in (
            ("vit_feature1", "vit", VIDEOS, 50, 512),
            ("ast_feature2p5", "ast", MUSIC, 96, 768),
        ):
            for seed, (item_id, valid) in enumerate(items.items()):
                feats = torch.randn(length, dim, generator=torch.Generator().manual_seed(seed))
                mask = torch.zeros(length)
                mask[:valid] = 1
                for sub, tensor in ((f"{kind}_feature", feats), (f"{kind}_mask", mask)):
                    data = io.BytesIO()
                    torch.save(tensor, data)
                    # A fixed timestamp keeps the archive byte-identical between calls.
                    info = zipfile.ZipInfo(f"Kuai_feature/{top}/{sub}/{item_id}.pt", date_time=(2025, 1, 1, 0, 0, 0))
                    archive.writestr(info, data.getvalue(), compress_type=zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def csvs() -> dict[str, bytes]:
    return {
        "train_data.csv": csv_bytes([("113722188340", "4+5xxavfkz9qscs44")]),
        "val_data.csv": csv_bytes([("113722188341", "7+5x4mjjeiubm49fg")]),
        "test_data.csv": csv_bytes([("113722188341", "4+5xxavfkz9qscs44")]),
    }


def dataset_files() -> dict[str, bytes]:
    """The repository's files, at the paths xxayt/MGSV-EC has them."""
    return {
        "README.md": CARD,
        "MGSV_feature.zip": features_zip(),
        **{f"{CSV_DIR}/{name}": data for name, data in csvs().items()},
        "dataloader/data_dataloaders.py": b"# the official DataLoader wrappers\n",
        "dataloader/dataloader_MGSV_EC_feature.py": b"# the official feature Dataset\n",
    }


@pytest.fixture()
def online(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Let huggingface_hub make requests (only ever to the fake hub on 127.0.0.1), with no token of the machine's."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.delenv("HF_TOKEN", raising=False)


@pytest.fixture()
def hub(online: None) -> Iterator[FakeHub]:
    with FakeHub() as fake:
        fake.add_repo("dataset", REPO, dataset_files(), commit=COMMIT)
        yield fake


def test_cli_fetch_download_unzip_import(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    hub.drop_first_get.add("MGSV_feature.zip")  # the connection drops halfway; the download must resume
    # The library saves (and resumes from) whole read chunks of 10 MB; smaller chunks let a small file show it.
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 64 * 1024)
    out, cache = tmp_path / "MGSV-EC", tmp_path / "hf-cache"
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "fetch", "--out", str(out), "--cache-dir", str(cache), "--import", "--json"])
    assert exit_info.value.code in (0, None)
    report = json.loads(capsys.readouterr().out)
    assert report["revision"] == COMMIT and report["sizes_checked"] is True

    files = dataset_files()
    for name, data in csvs().items():
        assert (out / name).read_bytes() == data  # from dataset/MGSV-EC/ in the repository to the folder's root
        assert report["files"][f"{CSV_DIR}/{name}"] == str(out / name)
    source = json.loads((out / "source.json").read_text())
    assert source["repo_id"] == REPO and source["revision"] == "main" and source["commit"] == COMMIT
    assert source["files"]["MGSV_feature.zip"] == len(files["MGSV_feature.zip"])
    zip_path = Path(report["files"]["MGSV_feature.zip"])
    assert zip_path.is_relative_to(cache) and zip_path.read_bytes() == files["MGSV_feature.zip"]
    ranges = [r for method, path, r in hub.requests if method == "GET" and path.endswith("MGSV_feature.zip")]
    resumed_at = (len(files["MGSV_feature.zip"]) // 2) // (64 * 1024) * (64 * 1024)
    assert resumed_at > 0 and ranges == [None, f"bytes={resumed_at}-"]  # resumed, not restarted
    downloaded = {path.split("/resolve/main/", 1)[1] for method, path, _ in hub.requests
                  if method == "GET" and "/resolve/" in path}
    assert downloaded == {"MGSV_feature.zip", *(f"{CSV_DIR}/{name}" for name in csvs())}  # not the card, not code

    assert (out / "MGSV_feature" / "Kuai_feature" / "vit_feature1" / "vit_mask" / "113722188340.pt").is_file()
    assert report["imported"]["counts"] == {"video": 2, "music": 2}
    store = FeatureStore(out / "features")
    assert sorted(store.modality("music").ids) == sorted(MUSIC)
    tokens, mask = store.modality("video").get("113722188341")
    assert tokens.shape == (7, 512) and mask.all()

    # A second run downloads nothing again and finds the import complete.
    before = len(hub.requests)
    result = fetch_dataset(out, endpoint=hub.url, cache_dir=cache, import_features=True)
    assert result.imported is not None and result.imported.already_complete
    assert not [r for r in hub.requests[before:] if r[0] == "GET" and "/resolve/" in r[1]]


def test_revision_pins_a_commit_and_files_are_found_by_name(hub: FakeHub, tmp_path: Path) -> None:
    repo = hub.repos[("dataset", REPO)]
    # A later commit on main moves the CSVs and changes one; the pinned commit still gives the old files.
    later = dict(repo.commits[COMMIT])
    for name in csvs():
        later[f"annotations/{name}"] = later.pop(f"{CSV_DIR}/{name}")
    later["annotations/val_data.csv"] = csv_bytes([("113722188340", "7+5x4mjjeiubm49fg")])
    repo.commits["f" * 40] = later
    repo.branches["main"] = "f" * 40

    cache = tmp_path / "cache"
    pinned = fetch_dataset(tmp_path / "pinned", revision=COMMIT, endpoint=hub.url, cache_dir=cache, features=False)
    assert pinned.revision == COMMIT and set(pinned.files) == {f"{CSV_DIR}/{name}" for name in csvs()}
    assert (tmp_path / "pinned" / "val_data.csv").read_bytes() == csvs()["val_data.csv"]
    assert json.loads((tmp_path / "pinned" / "source.json").read_text())["commit"] == COMMIT

    moved = fetch_dataset(tmp_path / "main", endpoint=hub.url, cache_dir=cache, features=False)
    assert moved.revision == "f" * 40 and "annotations/val_data.csv" in moved.files
    assert (tmp_path / "main" / "val_data.csv").read_bytes() == later["annotations/val_data.csv"]

    later["backup/val_data.csv"] = b"video_id,music_id\n"  # the same name twice, neither at dataset/MGSV-EC/
    with pytest.raises(DownloadError, match=r"val_data.csv appears 2 times \(annotations/val_data.csv, backup/"):
        fetch_dataset(tmp_path / "other", endpoint=hub.url, cache_dir=cache, features=False)
    with pytest.raises(DownloadError, match=f"{REPO}@v9: the repository has no such revision"):
        fetch_dataset(tmp_path / "other", revision="v9", endpoint=hub.url, cache_dir=cache, features=False)


def test_offline_rerun_uses_the_cache(hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    fetch_dataset(tmp_path / "first", endpoint=hub.url, cache_dir=cache, features=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    before = len(hub.requests)
    result = fetch_dataset(tmp_path / "second", endpoint=hub.url, cache_dir=cache, features=False)
    assert len(hub.requests) == before  # nothing asked of the network
    assert result.revision == COMMIT and not result.sizes_checked
    assert (tmp_path / "second" / "val_data.csv").read_bytes() == csvs()["val_data.csv"]


def test_offline_with_a_hand_built_hub_cache(tmp_path: Path) -> None:
    # The standard hub cache layout, as `hf download` leaves it; HF_HUB_OFFLINE=1 is set by conftest.
    cache = tmp_path / "hub"
    repo_dir = cache / "datasets--xxayt--MGSV-EC"
    snapshot = repo_dir / "snapshots" / COMMIT
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(COMMIT)
    for path, data in dataset_files().items():
        (snapshot / path).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / path).write_bytes(data)
    result = fetch_dataset(tmp_path / "data", cache_dir=cache, import_features=True)
    assert result.revision == COMMIT and result.notes[0].startswith("offline mode")
    assert FeatureStore(tmp_path / "data" / "features").verify() == {"video": 2, "music": 2}

    with pytest.raises(DownloadError) as info:
        fetch_dataset(tmp_path / "other", cache_dir=tmp_path / "empty-cache", features=False)
    message = str(info.value)
    assert f"xxayt/MGSV-EC/{CSV_DIR}/train_data.csv@main: not in the local Hugging Face cache" in message
    assert "HF_HUB_OFFLINE=1 forbids downloading it" in message


def test_size_mismatch_is_reported(hub: FakeHub, tmp_path: Path) -> None:
    hub.listed_sizes[(REPO, f"{CSV_DIR}/val_data.csv")] = len(csvs()["val_data.csv"]) + 5
    with pytest.raises(
        DownloadError,
        match=rf"val_data.csv: \d+ bytes, but xxayt/MGSV-EC lists {CSV_DIR}/val_data.csv with \d+ bytes",
    ):
        fetch_dataset(tmp_path / "data", endpoint=hub.url, cache_dir=tmp_path / "cache", features=False)


def test_missing_file_and_missing_repo(hub: FakeHub, tmp_path: Path) -> None:
    del hub.files("dataset", REPO)["MGSV_feature.zip"]
    with pytest.raises(DownloadError, match=r"the dataset has no MGSV_feature.zip \(it has: \.gitattributes, READ"):
        fetch_dataset(tmp_path / "data", endpoint=hub.url, cache_dir=tmp_path / "cache")
    with pytest.raises(DownloadError, match="someone/else@main: repository not found on the Hub"):
        fetch_dataset(tmp_path / "data", repo_id="someone/else", endpoint=hub.url, cache_dir=tmp_path / "cache")


def test_network_failure_names_the_hint(
    online: None, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeHub() as closed:
        url = closed.url
    monkeypatch.setenv("HF_ENDPOINT", url)  # nothing listens there any more
    with pytest.raises(SystemExit) as exit_info:
        main(
            ["data", "fetch", "--out", str(tmp_path / "data"), "--cache-dir", str(tmp_path / "cache"), "--no-features"]
        )
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "xxayt/MGSV-EC@main: not in the local cache and the Hub cannot be reached" in err and "HF_ENDPOINT" in err


def test_existing_differing_csv_is_kept_without_force(hub: FakeHub, tmp_path: Path) -> None:
    out = tmp_path / "data"
    out.mkdir()
    (out / "val_data.csv").write_text("my own edits\n")
    with pytest.raises(OutputExistsError, match="val_data.csv: exists and differs"):
        fetch_dataset(out, endpoint=hub.url, cache_dir=tmp_path / "cache", features=False)
    assert (out / "val_data.csv").read_text() == "my own edits\n"
    fetch_dataset(out, endpoint=hub.url, cache_dir=tmp_path / "cache", features=False, force=True)
    assert (out / "val_data.csv").read_bytes() == csvs()["val_data.csv"]
    with pytest.raises(InputError, match="which `features` turned off"):
        fetch_dataset(out, features=False, import_features=True)


def _zip(tmp_path: Path, members: dict[str, bytes], link: str | None = None) -> Path:
    path = tmp_path / "archive.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        if link:
            info = zipfile.ZipInfo(link)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "/etc/passwd")
    return path


@pytest.mark.parametrize("evil", ["../escape.txt", "/abs/escape.txt", "a/../../escape.txt", "C:/escape.txt"])
def test_unzip_refuses_paths_outside_the_folder(tmp_path: Path, evil: str) -> None:
    archive = _zip(tmp_path, {"ok/file.txt": b"x", evil: b"y"})
    with pytest.raises(InputError, match="refusing to extract 1 member"):
        extract_zip(archive, tmp_path / "out" / "MGSV_feature")
    assert not (tmp_path / "out" / "MGSV_feature").exists() and not (tmp_path / "escape.txt").exists()


def test_unzip_refuses_links_and_damage(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="links, e.g. 'link'"):
        extract_zip(_zip(tmp_path, {"a.txt": b"x"}, link="link"), tmp_path / "dest")
    archive = _zip(tmp_path, {"a.txt": b"hello world" * 100})
    data = bytearray(archive.read_bytes())
    start = data.index(b"hello world")
    data[start : start + 5] = b"HELLO"  # stored (not compressed): the CRC check must catch it
    archive.write_bytes(bytes(data))
    with pytest.raises(InputError, match="damaged zip"):
        extract_zip(archive, tmp_path / "dest")
    assert not (tmp_path / "dest").exists() and not (tmp_path / ".dest.partial").exists()
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a readable zip file"):
        extract_zip(tmp_path / "junk.zip", tmp_path / "dest")
