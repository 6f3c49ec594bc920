"""`mgsv data import`: the official per-id .pt layout -> feature store, with every kind of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mgsv.cli import main
from mgsv.errors import InputError, OutputExistsError, ProblemsError
from mgsv.features.official import find_layout_root, import_official, read_csv_ids
from mgsv.features.spec import MUSIC_SPEC, VIDEO_SPEC, music_spec
from mgsv.features.store import FeatureStore

VIDEOS = {"113722188340": 23, "113722188341": 5, "7": 50}
MUSIC = {"4+5xxavfkz9qscs44": 56, "7+5x4mjjeiubm49fg": 96, "1+abc": 12}


def official_item(seed: int, valid: int, length: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Like the official cache: fixed length, padded rows non-zero (the loader zeroes them), mask 1/0 float."""
    generator = torch.Generator().manual_seed(seed)
    feats = torch.randn(length, dim, generator=generator)
    mask = torch.zeros(length)
    mask[:valid] = 1
    return feats, mask


def make_layout(
    root: Path, videos: dict[str, int], music: dict[str, int], music_dir: str = "ast_feature2p5", slots: int = 96
) -> dict:
    expected = {}
    for folder, items, length, dim in (("vit_feature1", videos, 50, 512), (music_dir, music, slots, 768)):
        kind = "vit" if folder == "vit_feature1" else "ast"
        (root / folder / f"{kind}_feature").mkdir(parents=True, exist_ok=True)
        (root / folder / f"{kind}_mask").mkdir(parents=True, exist_ok=True)
        for seed, (item_id, valid) in enumerate(items.items()):
            feats, mask = official_item(seed + dim, valid, length, dim)
            torch.save(feats, root / folder / f"{kind}_feature" / f"{item_id}.pt")
            torch.save(mask, root / folder / f"{kind}_mask" / f"{item_id}.pt")
            expected[item_id] = (feats, mask)
    return expected


def write_csv(path: Path, pairs: list[tuple[str, str]]) -> Path:
    rows = ["video_id,music_id,video_start,video_end,music_start,music_end,music_total_duration"]
    rows += [f"{v},{m},0,10,5,15,120" for v, m in pairs]
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture()
def layout(tmp_path: Path) -> tuple[Path, dict]:
    src = tmp_path / "Kuai_feature"
    return src, make_layout(src, VIDEOS, MUSIC)


def test_cli_import_round_trip(layout: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, expected = layout
    csv_a = write_csv(tmp_path / "a.csv", [("113722188340", "4+5xxavfkz9qscs44"), ("7", "7+5x4mjjeiubm49fg")])
    csv_b = write_csv(tmp_path / "b.csv", [("113722188341", "4+5xxavfkz9qscs44")])
    out = tmp_path / "data" / "features"
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "import", str(src), "--out", str(out), "--csv", str(csv_a), "--csv", str(csv_b), "--json"])
    assert exit_info.value.code in (0, None)
    report = json.loads(capsys.readouterr().out)
    assert report["counts"] == {"video": 3, "music": 2}
    assert report["ignored"] == {"video": 0, "music": 1}  # '1+abc' has features but no CSV row
    assert report["specs"] == {"video": VIDEO_SPEC.fingerprint(), "music": MUSIC_SPEC.fingerprint()}

    store = FeatureStore(out)
    assert store.specs == {"video": VIDEO_SPEC, "music": MUSIC_SPEC}
    videos, music = store.modality("video"), store.modality("music")
    assert videos.ids == ["113722188340", "7", "113722188341"] and music.ids == [
        "4+5xxavfkz9qscs44",
        "7+5x4mjjeiubm49fg",
    ]
    # The official loader's batch: fixed padding, features zeroed where the mask is 0.
    feats, mask = videos.batch(["7", "113722188341"], pad_to=50)
    for row, item_id in enumerate(["7", "113722188341"]):
        official_feats, official_mask = expected[item_id]
        official_feats = official_feats.masked_fill(official_mask.unsqueeze(1) == 0, 0)
        assert torch.equal(mask[row], official_mask.bool())
        assert torch.equal(feats[row], official_feats.half().float())
    tokens, segment_mask = music.get("4+5xxavfkz9qscs44")
    assert tokens.shape == (56, 768) and segment_mask.all()
    assert not (out.parent / ".features.partial").exists()


def test_import_everything_without_csvs(layout: tuple[Path, dict], tmp_path: Path) -> None:
    src, _ = layout
    result = import_official(src, tmp_path / "features")
    assert result.counts == {"video": 3, "music": 3} and result.converted == {"video": 3, "music": 3}
    assert sorted(FeatureStore(tmp_path / "features").modality("music").ids) == sorted(MUSIC)


def test_missing_ids_are_listed_with_a_total(
    layout: tuple[Path, dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, _ = layout
    pairs = [(f"9{i:03d}", "4+5xxavfkz9qscs44") for i in range(24)] + [("7", "2+nope")]
    csv = write_csv(tmp_path / "test.csv", pairs)
    out = tmp_path / "features"
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "import", str(src), "--out", str(out), "--csv", str(csv)])
    assert exit_info.value.code == 1
    message = capsys.readouterr().err
    assert "25 problem(s)" in message
    assert "video id '9000': no vit_feature1/vit_feature/9000.pt" in message
    assert "... and 5 more" in message
    assert not out.exists() and not (tmp_path / ".features.partial").exists()
    with pytest.raises(ProblemsError) as info:
        import_official(src, out, csvs=[csv])
    assert "music id '2+nope': no ast_feature2p5/ast_feature/2+nope.pt" in info.value.problems


def test_bad_files_are_named_and_a_rerun_resumes(layout: tuple[Path, dict], tmp_path: Path) -> None:
    src, _ = layout
    video_feats = src / "vit_feature1" / "vit_feature"
    music_masks = src / "ast_feature2p5" / "ast_mask"
    torch.save(torch.zeros(49, 512), video_feats / "7.pt")  # wrong shape
    (video_feats / "113722188341.pt").write_bytes(b"\x80\x02 this is not a torch file")  # corrupt
    bad_mask = torch.zeros(96)
    bad_mask[:3] = torch.tensor([1.0, 0.5, 1.0])
    torch.save(bad_mask, music_masks / "1+abc.pt")  # not 0/1
    torch.save(torch.zeros(96, 768, dtype=torch.int32), src / "ast_feature2p5" / "ast_feature" / "7+5x4mjjeiubm49fg.pt")
    with open(music_masks / "4+5xxavfkz9qscs44.pt", "ab") as f:  # absurdly large: refused before unpickling
        f.truncate(100_000_000)
    out = tmp_path / "features"
    with pytest.raises(ProblemsError) as info:
        import_official(src, out)
    problems = info.value.problems
    assert f"{video_feats / '7.pt'}: shape [49, 512], expected [50, 512]" in problems
    assert any(p.startswith(f"{video_feats / '113722188341.pt'}: cannot load (") for p in problems)
    assert f"{music_masks / '1+abc.pt'}: mask values must be 0 or 1" in problems
    assert any("7+5x4mjjeiubm49fg.pt: dtype torch.int32, expected floating point" in p for p in problems)
    assert f"{music_masks / '4+5xxavfkz9qscs44.pt'}: 100,000,000 bytes, far more than a [96] tensor needs" in problems
    assert len(problems) == 5
    assert not out.exists()  # nothing that looks complete
    partial = FeatureStore(tmp_path / ".features.partial")
    assert partial.modality("video").ids == ["113722188340"]  # the good items are kept for the re-run

    make_layout(src, VIDEOS, MUSIC)  # repair every file
    result = import_official(src, out)
    assert result.converted == {"video": 2, "music": 3} and result.counts == {"video": 3, "music": 3}
    assert FeatureStore(out).verify(deep=True) == {"video": 3, "music": 3}
    assert not (tmp_path / ".features.partial").exists()


def test_interrupted_import_resumes(layout: tuple[Path, dict], tmp_path: Path) -> None:
    src, _ = layout
    out = tmp_path / "features"

    def interrupt(modality: str, done: int, total: int) -> None:
        if modality == "music" and done == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        import_official(src, out, progress=interrupt)
    assert not out.exists()
    partial = FeatureStore(tmp_path / ".features.partial")
    assert len(partial.modality("video")) == 3 and len(partial.modality("music")) == 0  # unflushed items dropped
    result = import_official(src, out)
    assert result.converted == {"video": 0, "music": 3}
    assert FeatureStore(out).verify() == {"video": 3, "music": 3}


def test_existing_output(layout: tuple[Path, dict], tmp_path: Path) -> None:
    src, _ = layout
    out = tmp_path / "features"
    import_official(src, out)
    again = import_official(src, out)  # idempotent: nothing to do
    assert again.already_complete and again.converted == {"video": 0, "music": 0}
    make_layout(src, {"8": 9}, {})
    with pytest.raises(OutputExistsError, match="already exists; use `force`"):
        import_official(src, out)
    replaced = import_official(src, out, force=True)
    assert replaced.counts == {"video": 4, "music": 3} and "8" in FeatureStore(out).modality("video")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Kuai_feature", "features"]


def test_other_strides(tmp_path: Path) -> None:
    src = tmp_path / "Kuai_feature"
    make_layout(src, VIDEOS, {"1+abc": 20}, music_dir="ast_feature5", slots=48)
    with pytest.raises(
        InputError, match=r"missing .*ast_feature2p5/ast_feature.*music features exist for stride 5: pass `stride`"
    ):
        import_official(src, tmp_path / "features")
    result = import_official(src, tmp_path / "features", stride=5)
    store = FeatureStore(tmp_path / "features")
    assert store.spec("music") == music_spec(5.0) and store.spec("music").max_tokens == 48
    assert result.counts["music"] == 1
    with pytest.raises(InputError, match="unsupported stride 3"):
        import_official(src, tmp_path / "x", stride=3)


def test_unpaired_files_and_bad_sources(tmp_path: Path) -> None:
    src = tmp_path / "Kuai_feature"
    make_layout(src, VIDEOS, MUSIC)
    (src / "vit_feature1" / "vit_mask" / "7.pt").unlink()
    with pytest.raises(ProblemsError, match=r"vit_mask/7.pt: missing \(its features exist\)"):
        import_official(src, tmp_path / "features")
    with pytest.raises(InputError, match="official feature folder not found"):
        import_official(tmp_path / "nowhere", tmp_path / "features")
    wrapper = tmp_path / "unzipped"
    (wrapper / "deeper").mkdir(parents=True)
    src.rename(wrapper / "deeper" / "Kuai_feature")
    assert find_layout_root(wrapper) == wrapper / "deeper" / "Kuai_feature"
    with pytest.raises(InputError, match=r"the layout is in .*deeper/Kuai_feature"):
        import_official(wrapper, tmp_path / "features")


def test_csv_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="annotation CSV not found"):
        read_csv_ids([tmp_path / "none.csv"])
    (tmp_path / "bad.csv").write_text("video,music\n1,2\n")
    with pytest.raises(InputError, match=r"bad.csv: missing column\(s\) video_id, music_id"):
        read_csv_ids([tmp_path / "bad.csv"])
    (tmp_path / "empty_id.csv").write_text("video_id,music_id\n1,a\n,b\n")
    with pytest.raises(ProblemsError, match="line 3: empty video_id or music_id"):
        read_csv_ids([tmp_path / "empty_id.csv"])
    assert read_csv_ids([write_csv(tmp_path / "ok.csv", [("0012", "1+a"), ("0012", "2+b")])]) == (
        ["0012"],
        ["1+a", "2+b"],
    )


def test_real_mgsv_ec_csv_ids() -> None:
    from importlib.resources import files

    resources = files("mgsv.resources") / "mgsv_ec"
    videos, music = read_csv_ids([Path(str(resources / "val_data.csv")), Path(str(resources / "test_data.csv"))])
    assert len(videos) == 4000 and all(v.isdigit() for v in videos)
    assert any("+" in m for m in music)
