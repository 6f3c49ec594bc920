"""MGSV-EC annotation CSVs: the bundled splits load with the facts of docs/official-code.md ("Splits"), and every kind of bad row is reported."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from mgsv.data.annotations import COLUMNS, bundled_annotations, load_annotations, music_set
from mgsv.errors import InputError, ProblemsError

TEST_CSV = bundled_annotations("test")


def _rows(n: int = 5) -> tuple[list[str], list[list[str]]]:
    """Header and the first n data rows of the bundled test CSV, as text fields."""
    with TEST_CSV.open(newline="", encoding="utf-8") as handle:
        records = list(csv.reader(handle))
    return records[0], records[1 : n + 1]


def _write(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _with(rows: list[list[str]], row: int, column: str, value: str) -> list[list[str]]:
    """A copy of rows with one field changed (row is 0-based among data rows, so its file line is row + 2)."""
    changed = [list(r) for r in rows]
    changed[row][COLUMNS.index(column)] = value
    return changed


def _problems(path: Path) -> list[str]:
    with pytest.raises(ProblemsError) as info:
        load_annotations(path)
    assert str(path) in str(info.value)
    return info.value.problems


@pytest.mark.parametrize(
    ("split", "mean_duration", "std_duration"),
    [("val", 139.56, 70.06), ("test", 139.95, 70.11)],
)
def test_bundled_splits_load_with_the_reference_facts(split: str, mean_duration: float, std_duration: float) -> None:
    table = load_annotations(bundled_annotations(split))
    assert list(table.columns) == list(COLUMNS)
    assert len(table) == 2000
    assert table["video_id"].is_unique and table["music_id"].is_unique
    assert round(table["music_total_duration"].mean(), 2) == mean_duration
    assert round(table["music_total_duration"].std(), 2) == std_duration
    assert table["music_total_duration"].min() == pytest.approx(30.096)
    assert table["music_total_duration"].max() == pytest.approx(239.911)
    assert (table["music_end"] <= table["music_total_duration"]).all()
    assert table["video_width"].dtype == "int64" and table["music_start"].dtype == "float64"
    assert all(isinstance(v, str) for v in table["video_id"]) and all(isinstance(m, str) for m in table["music_id"])
    assert len(music_set(table)) == 2000


def test_ids_keep_their_exact_text() -> None:
    table = load_annotations(TEST_CSV)
    assert table.loc[0, "video_id"] == "113722188340"
    assert table.loc[0, "music_id"] == "7+5x4mjjeiubm49fg"
    assert table.loc[0, "music_start"] == 85.802
    assert table.attrs["source"] == str(TEST_CSV)


def test_val_and_test_share_1893_tracks() -> None:
    val = set(load_annotations(bundled_annotations("val"))["music_id"])
    test = set(load_annotations(bundled_annotations("test"))["music_id"])
    assert len(val & test) == 1893


def test_unknown_bundled_split() -> None:
    with pytest.raises(InputError, match="unknown split 'train'"):
        bundled_annotations("train")  # type: ignore[arg-type]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="file not found") as info:
        load_annotations(tmp_path / "nope.csv")
    assert str(tmp_path / "nope.csv") in str(info.value)


def test_empty_file_and_header_only(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("\n\n")
    with pytest.raises(InputError, match="empty file"):
        load_annotations(empty)
    header, _ = _rows()
    with pytest.raises(InputError, match="no annotation rows"):
        load_annotations(_write(tmp_path / "header.csv", header, []))


def test_directory_and_binary_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is a directory"):
        load_annotations(tmp_path)
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(InputError, match="not a UTF-8 text file"):
        load_annotations(binary)


def test_missing_and_duplicated_columns(tmp_path: Path) -> None:
    header, rows = _rows()
    drop = header.index("music_end")
    cut = _write(
        tmp_path / "cut.csv", [h for h in header if h != "music_end"], [r[:drop] + r[drop + 1 :] for r in rows]
    )
    assert _problems(cut) == ["line 1: missing column(s): music_end"]
    doubled = _write(tmp_path / "doubled.csv", [*header, "music_id"], [[*r, r[1]] for r in rows])
    assert _problems(doubled) == ["line 1: duplicated column(s): music_id"]


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("music_start", "abc", "line 3: music_start 'abc' is not a finite number"),
        ("music_total_duration", "nan", "line 3: music_total_duration 'nan' is not a finite number"),
        ("video_width", "12.5", "line 3: video_width '12.5' is not an integer"),
        ("video_id", "  ", "line 3: empty video_id"),
        ("music_id", "", "line 3: empty music_id"),
        ("music_start", "40.0", "line 3: music_start 40.0 is not before music_end 30.246"),
        ("video_end", "0.0", "line 3: video_start 0.0 is not before video_end 0.0"),
        ("video_start", "-1", "line 3: video_start -1.0 is negative"),
        ("music_start", "-0.5", "line 3: music_start -0.5 is negative (the moment starts before the track)"),
        (
            "music_total_duration",
            "30.0",
            "line 3: music_end 30.246 is past the end of the track (music_total_duration 30.0, "
            "music id '4+5xfrwjpbri3fhk6')",
        ),
        ("video_total_duration", "0", "line 3: video_total_duration 0.0 is not positive"),
    ],
)
def test_bad_value_is_reported_with_its_line(tmp_path: Path, column: str, value: str, message: str) -> None:
    header, rows = _rows()
    path = _write(tmp_path / "bad.csv", header, _with(rows, 1, column, value))
    assert _problems(path) == [message]


def test_a_moment_may_end_within_the_tolerance_of_the_track_end(tmp_path: Path) -> None:
    header, rows = _rows()
    # Row 1 ends at 30.246 s: a stated duration 0.04 s shorter is rounding, not a bad moment.
    table = load_annotations(_write(tmp_path / "ok.csv", header, _with(rows, 1, "music_total_duration", "30.206")))
    assert table.loc[1, "music_total_duration"] == 30.206


def test_every_bad_row_is_reported_at_once(tmp_path: Path) -> None:
    header, rows = _rows(6)
    rows = _with(rows, 0, "music_end", "x")
    rows = _with(rows, 3, "video_id", rows[1][0])
    rows[4] = rows[4][:10]
    problems = _problems(_write(tmp_path / "many.csv", header, rows))
    assert problems == [
        "line 2: music_end 'x' is not a finite number",
        f"line 5: duplicate video_id '{rows[1][0]}' (first on line 3)",
        "line 6: expected 16 fields, found 10",
    ]


def test_malformed_csv_names_its_line(tmp_path: Path) -> None:
    header, rows = _rows(2)
    path = tmp_path / "quote.csv"
    path.write_text(",".join(header) + "\n" + ",".join(rows[0]) + "\n" + '1,"unterminated\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"quote.csv:3: malformed CSV: unexpected end of data"):
        load_annotations(path)


def test_header_after_blank_lines_is_reported_at_its_line(tmp_path: Path) -> None:
    header, _ = _rows(2)
    path = tmp_path / "late.csv"
    path.write_text("\n\n" + ",".join(h for h in header if h != "video_id") + "\n", encoding="utf-8")
    assert _problems(path) == ["line 3: missing column(s): video_id"]


def test_line_numbers_count_blank_lines_and_quoted_fields(tmp_path: Path) -> None:
    header, rows = _rows(3)
    path = tmp_path / "spaced.csv"
    text = ",".join(header) + "\n\n" + ",".join(rows[0]) + "\n"
    text += ",".join(_with(rows, 1, "music_start", "oops")[1]) + "\n"
    path.write_text(text, encoding="utf-8")
    assert _problems(path) == ["line 4: music_start 'oops' is not a finite number"]


def test_music_path_with_a_comma_stays_one_field() -> None:
    table = load_annotations(TEST_CSV)
    row = table.loc[table["video_id"] == "110972017257"].iloc[0]
    assert row["music_path"].endswith("电弹火花,这节奏挺好（DJ版）.mp3")
    assert row["video_category"] == "Home Furnishings"
