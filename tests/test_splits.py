"""Re-drawn splits: deterministic per seed, distinct tracks within val and test, every row in exactly one file."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest

from mgsv.cli import main
from mgsv.data.annotations import COLUMNS, bundled_annotations, load_annotations
from mgsv.data.splits import SPLIT_FILES, draw_splits, load_annotation_set, write_splits
from mgsv.errors import InputError, OutputExistsError, ProblemsError

VAL_CSV = bundled_annotations("val")
TEST_CSV = bundled_annotations("test")


def _data_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()[1:]


def _split(tmp_path: Path, seed: int, *sources: Path, val: int = 300, test: int = 400, name: str = "out") -> Path:
    data = load_annotation_set(list(sources))
    rows = draw_splits(data.video_ids, data.music_ids, seed, val, test)
    write_splits(tmp_path / name, data, rows)
    return tmp_path / name


def test_split_files_partition_the_pooled_rows(tmp_path: Path) -> None:
    out = _split(tmp_path, 7, VAL_CSV, TEST_CSV)
    tables = {name: load_annotations(out / filename) for name, filename in SPLIT_FILES.items()}
    assert [len(tables[name]) for name in ("train", "val", "test")] == [3300, 300, 400]
    for name in ("val", "test"):
        assert tables[name]["music_id"].is_unique, name
        assert list(tables[name].columns) == list(COLUMNS)
    video_sets = [set(table["video_id"]) for table in tables.values()]
    assert sum(len(v) for v in video_sets) == len(set().union(*video_sets)) == 4000
    # Rows keep their exact text (a quoted music_path with a comma included): the multiset of lines is unchanged.
    written = sorted(line for filename in SPLIT_FILES.values() for line in _data_lines(out / filename))
    assert written == sorted(_data_lines(VAL_CSV) + _data_lines(TEST_CSV))
    assert (out / "val_data.csv").read_text().splitlines()[0] == ",".join(COLUMNS)


def test_same_seed_same_split_and_input_order_does_not_matter(tmp_path: Path) -> None:
    first = _split(tmp_path, 3, VAL_CSV, TEST_CSV, name="a")
    same = _split(tmp_path, 3, VAL_CSV, TEST_CSV, name="b")
    swapped = _split(tmp_path, 3, TEST_CSV, VAL_CSV, name="c")
    other_seed = _split(tmp_path, 4, VAL_CSV, TEST_CSV, name="d")
    for filename in SPLIT_FILES.values():
        assert (first / filename).read_bytes() == (same / filename).read_bytes()
        # Rows follow the input order in each file, but which rows go where depends only on the seed.
        assert sorted(_data_lines(first / filename)) == sorted(_data_lines(swapped / filename))
    assert set(_data_lines(first / "val_data.csv")) != set(_data_lines(other_seed / "val_data.csv"))


def test_a_track_can_be_in_val_and_test_but_a_video_only_once(tmp_path: Path) -> None:
    # 40 tracks with 3 videos each: val and test of 40 distinct tracks each must reuse every track.
    path = tmp_path / "many.csv"
    _write_synthetic(path, tracks=40, videos_per_track=3)
    data = load_annotation_set([path])
    rows = draw_splits(data.video_ids, data.music_ids, seed=0, val_size=40, test_size=40)
    val_tracks = {data.music_ids[i] for i in rows.val}
    test_tracks = {data.music_ids[i] for i in rows.test}
    assert len(val_tracks) == len(test_tracks) == 40
    assert set(rows.val).isdisjoint(rows.test) and len(rows.train) == 40
    assert sorted([*rows.train, *rows.val, *rows.test]) == list(range(120))


def test_not_enough_distinct_tracks(tmp_path: Path) -> None:
    path = tmp_path / "few.csv"
    _write_synthetic(path, tracks=3, videos_per_track=1)
    data = load_annotation_set([path])
    with pytest.raises(InputError, match="cannot draw a val split of 4 videos with distinct tracks: only 3"):
        draw_splits(data.video_ids, data.music_ids, 0, 4, 1, where=str(path))
    with pytest.raises(InputError, match="the seed must be a non-negative integer"):
        draw_splits(data.video_ids, data.music_ids, -1, 1, 1, where=str(path))
    with pytest.raises(InputError) as info:
        draw_splits(data.video_ids, data.music_ids, 0, 2, 2, where=str(path))
    assert str(info.value) == (
        f"{path}: cannot draw a test split of 2 videos with distinct tracks: only 1 distinct track(s) have a video "
        "left after drawing val (3 videos, 3 tracks)"
    )


def test_duplicate_videos_across_files_and_different_columns(tmp_path: Path) -> None:
    with pytest.raises(ProblemsError) as info:
        load_annotation_set([TEST_CSV, TEST_CSV])
    assert len(info.value.problems) == 2000
    assert info.value.problems[0] == f"{TEST_CSV}:2: video_id '113722188340' is also on {TEST_CSV}:2"
    extra = tmp_path / "extra.csv"
    _write_synthetic(extra, tracks=2, videos_per_track=1, extra_column=True)
    with pytest.raises(InputError, match="its columns differ from those of .*: note"):
        load_annotation_set([VAL_CSV, extra])


def test_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    out = _split(tmp_path, 1, VAL_CSV, val=10, test=10)
    before = (out / "val_data.csv").read_bytes()
    data = load_annotation_set([VAL_CSV])
    rows = draw_splits(data.video_ids, data.music_ids, 2, 10, 10)
    with pytest.raises(OutputExistsError, match="already exist"):
        write_splits(out, data, rows)
    assert (out / "val_data.csv").read_bytes() == before
    write_splits(out, data, rows, force=True)
    assert (out / "val_data.csv").read_bytes() != before
    assert sorted(p.name for p in out.iterdir()) == sorted(SPLIT_FILES.values())


def test_cli_split(tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli"
    args = ["data", "split", "--seed", "5", "--annotations", str(VAL_CSV), str(TEST_CSV), "--out", str(out)]
    args += ["--val-size", "100", "--test-size", "200"]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--json"])
    assert exit_info.value.code in (None, 0)
    summary = json.loads(capsys.readouterr().out)
    assert summary["sources"] == [str(VAL_CSV), str(TEST_CSV)]
    assert {name: (s["videos"], s["tracks"]) for name, s in summary["splits"].items() if name != "train"} == {
        "val": (100, 100),
        "test": (200, 200),
    }
    assert summary["splits"]["train"]["videos"] == 3700
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 1
    assert "already exist(s) (use --force to overwrite)" in capsys.readouterr().err
    # The paper's sizes do not fit the bundled val + test alone: of 2,107 tracks only 1,893 have two videos.
    with pytest.raises(SystemExit) as exit_info:
        main([*args[:-4], "--force"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and str(VAL_CSV) in err
    assert "cannot draw a test split of 2000 videos with distinct tracks" in err and "2107 tracks" in err
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--force", "--val-size", "0"])
    assert exit_info.value.code == 2


def _write_synthetic(path: Path, tracks: int, videos_per_track: int, extra_column: bool = False) -> None:
    """A valid annotation CSV with the given number of tracks and videos per track, rows in random order."""
    header = [*COLUMNS, "note"] if extra_column else list(COLUMNS)
    rows = []
    for t in range(tracks):
        for v in range(videos_per_track):
            fields = dict.fromkeys(COLUMNS, "1")
            fields.update(
                video_id=f"{t * 100 + v}",
                music_id=f"track{t}",
                video_start="0.0",
                video_end="10.0",
                music_start="5.0",
                music_end="15.0",
                music_total_duration="60.0",
                music_path=f"/m/{t}.mp3",
                video_category="Food",
            )
            rows.append([fields[name] for name in COLUMNS] + (["x"] if extra_column else []))
    random.Random(0).shuffle(rows)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
