"""Predictions JSONL: a written file reads back identically, and every malformed line is reported by number."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from mgsv.data.predictions import Prediction, RankedTrack, parse_prediction, read_predictions, write_predictions
from mgsv.errors import InputError, OutputExistsError, ProblemsError

GOOD = {
    "video_id": "113722188340",
    "smg": [85.1, 119.0],
    "ranking": [["7+5x4mjjeiubm49fg", 1.53, 85.1, 119.0], ["4+5xfrwjpbri3fhk6", 1.21, 10.0, 43.9]],
    "gt_rank": 1,
}


def _file(tmp_path: Path, *lines: object) -> Path:
    path = tmp_path / "pred.jsonl"
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def _problems(path: Path) -> list[str]:
    with pytest.raises(ProblemsError) as info:
        read_predictions(path)
    assert str(path) in str(info.value)
    return info.value.problems


def test_read_a_valid_line(tmp_path: Path) -> None:
    (prediction,) = read_predictions(_file(tmp_path, GOOD))
    assert prediction == Prediction(
        video_id="113722188340",
        smg=(85.1, 119.0),
        ranking=(
            RankedTrack("7+5x4mjjeiubm49fg", 1.53, 85.1, 119.0),
            RankedTrack("4+5xfrwjpbri3fhk6", 1.21, 10.0, 43.9),
        ),
        gt_rank=1,
        line=1,
    )


def test_integer_ids_become_strings_and_optional_fields_may_be_absent(tmp_path: Path) -> None:
    first, second = read_predictions(
        _file(tmp_path, {"video_id": 113722188340, "smg": [0, 10]}, "", {"video_id": "7", "ranking": [[5, 2, 0, 1]]})
    )
    assert (first.video_id, first.smg, first.ranking, first.gt_rank) == ("113722188340", (0.0, 10.0), None, None)
    assert (second.video_id, second.smg, second.line) == ("7", None, 3)
    assert second.ranking == (RankedTrack("5", 2.0, 0.0, 1.0),)


def test_write_then_read_round_trips(tmp_path: Path) -> None:
    predictions = [
        parse_prediction(GOOD),
        Prediction("42", smg=(0.1 + 0.2, 30.000000000000004), ranking=(RankedTrack("m", -0.25, 1.5, 2.5),)),
    ]
    path = write_predictions(tmp_path / "sub" / "out.jsonl", predictions)
    back = read_predictions(path)
    assert [(p.video_id, p.smg, p.ranking, p.gt_rank) for p in back] == [
        (p.video_id, p.smg, p.ranking, p.gt_rank) for p in predictions
    ]
    assert [p.line for p in back] == [1, 2]
    assert sorted(f.name for f in path.parent.iterdir()) == ["out.jsonl"]


def test_writer_refuses_to_overwrite_and_keeps_the_old_file_on_bad_data(tmp_path: Path) -> None:
    path = write_predictions(tmp_path / "out.jsonl", [parse_prediction(GOOD)])
    before = path.read_bytes()
    with pytest.raises(OutputExistsError, match="already exists"):
        write_predictions(path, [parse_prediction(GOOD)])
    bad = Prediction("9", smg=(math.nan, 1.0))
    with pytest.raises(InputError, match=r"prediction 1 \(video '9'\): smg start must be finite"):
        write_predictions(path, [parse_prediction(GOOD), bad], force=True)
    assert path.read_bytes() == before
    assert sorted(f.name for f in tmp_path.iterdir()) == ["out.jsonl"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"video_id": "1", "smg": [1, 2]', "invalid JSON: Expecting ',' delimiter"),
        ("[1, 2]", "expected a JSON object, got list"),
        ({"smg": [1, 2]}, "missing field 'video_id'"),
        ({"video_id": 1.5}, "video_id must be a string or an integer, got 1.5"),
        ({"video_id": True}, "video_id must be a string or an integer, got true"),
        ({"video_id": " "}, "video_id is empty"),
        ({"video_id": "1", "smg": [1]}, "smg must be [start_s, end_s], got [1]"),
        ({"video_id": "1", "smg": ["a", 2]}, 'smg start must be a number, got "a"'),
        ('{"video_id": "1", "smg": [NaN, 2]}', "invalid JSON: NaN is not a valid JSON number"),
        ({"video_id": "1", "smg": [5, 2]}, "smg starts after it ends (5.0 > 2.0)"),
        (
            {"video_id": "1", "ranking": {"a": 1}},
            "ranking must be a list of [music_id, score, start_s, end_s], got dict",
        ),
        (
            {"video_id": "1", "ranking": [["a", 1, 0]]},
            'ranking entry 1 must be [music_id, score, start_s, end_s], got ["a", 1, 0]',
        ),
        ({"video_id": "1", "ranking": [["a", "high", 0, 1]]}, 'ranking entry 1 score must be a number, got "high"'),
        ({"video_id": "1", "ranking": [["a", 1, 3, 1]]}, "ranking entry 1 moment starts after it ends (3.0 > 1.0)"),
        (
            {"video_id": "1", "ranking": [["a", 1, 0, 1], ["b", 2, 0, 1]]},
            "ranking entry 2: ranking is not sorted by descending score (2.0 after 1.0)",
        ),
        (
            {"video_id": "1", "ranking": [["a", 2, 0, 1], ["a", 1, 0, 1]]},
            "ranking entry 2: music id 'a' already ranked at entry 1",
        ),
        ({"video_id": "1", "gt_rank": 0}, "gt_rank must be a positive integer (1 = first), got 0"),
        ({"video_id": "1", "gt_rank": 2.0}, "gt_rank must be a positive integer (1 = first), got 2.0"),
    ],
)
def test_each_bad_line_is_reported(tmp_path: Path, line: object, message: str) -> None:
    problems = _problems(_file(tmp_path, GOOD, line))
    assert len(problems) == 1
    assert problems[0].startswith(f"line 2: {message}")


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = _file(tmp_path, GOOD, "not json", GOOD, {"video_id": "2", "smg": [3, 1]})
    problems = _problems(path)
    assert problems[0].startswith("line 2: invalid JSON")
    assert problems[1:] == [
        "line 3: duplicate video_id '113722188340' (first on line 1)",
        "line 4: smg starts after it ends (3.0 > 1.0)",
    ]


def test_empty_missing_and_binary_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="empty file: expected one JSON object per query video"):
        read_predictions(_file(tmp_path, "", "   "))
    with pytest.raises(InputError, match="file not found"):
        read_predictions(tmp_path / "missing.jsonl")
    binary = tmp_path / "bin.jsonl"
    binary.write_bytes(b"\x80\x81\x82")
    with pytest.raises(InputError, match="not a UTF-8 text file"):
        read_predictions(binary)


def test_parse_prediction_names_the_source() -> None:
    with pytest.raises(InputError) as info:
        parse_prediction({"video_id": "1", "smg": [2, 1]}, where="request body", line=7)
    assert str(info.value) == "request body:7: smg starts after it ends (2.0 > 1.0)"
