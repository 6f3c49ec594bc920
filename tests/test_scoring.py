"""Scoring predictions against annotations: hand-computed answers, the official values, baselines and the CLI."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file

from mgsv.cli import main
from mgsv.data.annotations import COLUMNS, bundled_annotations, load_annotations
from mgsv.data.predictions import Prediction, RankedTrack, clip_moment, write_predictions
from mgsv.errors import ProblemsError
from mgsv.evaluation import metrics as m
from mgsv.evaluation.scoring import baseline_scores, score_predictions

# video id, GT track, GT start, GT end, track duration (seconds)
TINY = [
    ("A", "a", 10.0, 30.0, 100.0),
    ("B", "b", 0.0, 20.0, 50.0),
    ("C", "c", 40.0, 60.0, 60.0),
    ("D", "d", 0.0, 30.0, 200.0),
]


def _tiny_csv(path: Path) -> Path:
    lines = [",".join(COLUMNS)]
    for video, track, start, end, duration in TINY:
        fields = {name: "1" for name in COLUMNS}
        fields.update(
            video_id=video,
            music_id=track,
            video_start="0.0",
            video_end=f"{end - start}",
            music_start=f"{start}",
            music_end=f"{end}",
            music_total_duration=f"{duration}",
            music_path=f"/m/{track}.mp3",
            video_category="Food",
        )
        lines.append(",".join(fields[name] for name in COLUMNS))
    path.write_text("\n".join(lines) + "\n")
    return path


def _tiny_predictions() -> list[Prediction]:
    t = RankedTrack
    return [
        Prediction("A", (10.0, 30.0), (t("a", 0.9, 10, 30), t("b", 0.5, 0, 5), t("c", 0.2, 0, 5), t("d", 0.1, 0, 5))),
        Prediction("B", (10.0, 30.0), (t("c", 0.8, 0, 5), t("b", 0.5, 0, 20), t("a", 0.1, 0, 5), t("d", 0.0, 0, 5))),
        Prediction("C", (50.0, 70.0), (t("a", 0.9, 0, 5), t("b", 0.8, 0, 5), t("d", 0.7, 0, 5), t("c", 0.6, 45, 60))),
        # D's track ties with a; a tie ranks against the ground truth, so d is second.
        Prediction("D", (0.0, 15.0), (t("a", 0.9, 0, 5), t("d", 0.9, 0, 30), t("b", 0.3, 0, 5), t("c", 0.2, 0, 5))),
    ]


@pytest.fixture()
def tiny(tmp_path: Path) -> tuple[Path, object]:
    path = _tiny_csv(tmp_path / "tiny.csv")
    return path, load_annotations(path)


def test_hand_computed_metrics(tiny: tuple[Path, object]) -> None:
    _, annotations = tiny
    scores = score_predictions(annotations, _tiny_predictions())
    got = scores.metrics
    assert scores.not_computed == {} and scores.n_videos == 4
    # SmG IoUs: A [10,30] exact = 1; B [10,30] vs [0,20] = 10/30; C [50,70] clipped to the 60 s track = 10/20;
    # D [0,15] vs [0,30] = 15/30.
    assert got["mIoU"] == pytest.approx((1 + 1 / 3 + 0.5 + 0.5) / 4, rel=1e-6)
    assert (got["IoU@0.3"], got["IoU@0.5"], got["IoU@0.7"]) == (100.0, 25.0, 25.0)
    # GT ranks (0-based): A 0, B 1, C 3, D 1 (tie).
    assert (got["R@1"], got["R@3"], got["R@5"], got["R@100"]) == (25.0, 75.0, 100.0, 100.0)
    assert (got["MedianR"], got["MeanR"], got["MRR"]) == (2.0, 2.25, (1 + 1 / 2 + 1 / 4 + 1 / 2) / 4)
    # Ranking moments on the GT tracks: A 1, B [0,20] = 1, C [45,60] vs [40,60] = 0.75, D 1.
    assert got[m.mor_name(1, 0.7)] == 25.0
    assert got[m.mor_name(10, 0.7)] == got[m.mor_name(10, 0.5)] == 100.0
    assert got[m.official_miou_quirk_name(1)] == pytest.approx(1.0 / 4)


def test_truncated_ranking_without_gt_rank_computes_only_what_is_exact(tiny: tuple[Path, object]) -> None:
    _, annotations = tiny
    predictions = _tiny_predictions()
    predictions[3] = replace(predictions[3], ranking=predictions[3].ranking[:1])  # only "a": D's track is not listed
    scores = score_predictions(annotations, predictions)
    assert scores.metrics["R@1"] == 25.0 and scores.metrics[m.mor_name(1, 0.7)] == 25.0
    for name in ("R@3", "R@100", "MedianR", "MeanR", "MRR", m.mor_name(10, 0.7), m.mor_name(100, 0.5)):
        assert name not in scores.metrics
        assert "1 video(s) have no gt_rank" in scores.not_computed[name]
    assert "mIoU" in scores.metrics


def test_gt_rank_completes_a_truncated_ranking(tiny: tuple[Path, object]) -> None:
    _, annotations = tiny
    predictions = _tiny_predictions()
    predictions[2] = replace(predictions[2], ranking=predictions[2].ranking[:2], gt_rank=4)
    scores = score_predictions(annotations, predictions)
    assert (scores.metrics["R@3"], scores.metrics["R@5"], scores.metrics["MeanR"]) == (75.0, 100.0, 2.25)
    assert scores.metrics[m.mor_name(1, 0.7)] == 25.0
    # C's track is within the top 10 only by its gt_rank, so its moment (and MoR@10+) is unknown.
    assert "only through gt_rank" in scores.not_computed[m.mor_name(10, 0.7)]


def test_median_stays_exact_when_truncation_cannot_move_it(tiny: tuple[Path, object]) -> None:
    _, annotations = tiny
    predictions = _tiny_predictions()
    predictions[2] = replace(predictions[2], ranking=predictions[2].ranking[:3])  # C: rank >= 3, unknown
    scores = score_predictions(annotations, predictions)
    # Known ranks 0, 1, 1 and one rank >= 3: the middle two are 1 and 1 whatever C's rank is.
    assert scores.metrics["MedianR"] == 2.0
    assert "MeanR" in scores.not_computed


def test_missing_smg_or_ranking_is_reported_not_invented(tiny: tuple[Path, object]) -> None:
    _, annotations = tiny
    predictions = _tiny_predictions()
    predictions[0] = replace(predictions[0], smg=None)
    predictions[1] = replace(predictions[1], ranking=None)
    scores = score_predictions(annotations, predictions)
    assert scores.not_computed["mIoU"] == "1 of 4 video(s) have no smg moment"
    assert scores.not_computed["R@1"] == "1 of 4 video(s) have neither a ranking nor a gt_rank"
    assert scores.metrics == {}


def test_inconsistent_and_unknown_entries_are_problems(tiny: tuple[Path, object]) -> None:
    _, annotations = tiny
    predictions = _tiny_predictions()
    predictions[0] = replace(predictions[0], gt_rank=2, line=1)
    predictions[1] = replace(predictions[1], ranking=predictions[1].ranking[:1], gt_rank=1, line=2)
    predictions[2] = replace(predictions[2], gt_rank=9, line=3)
    with pytest.raises(ProblemsError) as info:
        score_predictions(annotations, predictions, where="p.jsonl")
    assert info.value.problems == [
        "line 1: gt_rank 2 disagrees with the ranking, which puts the ground-truth track 'a' at rank 1",
        "line 2: gt_rank 1 but the ground-truth track 'b' is not among the 1 ranked tracks",
        "line 3: gt_rank 9 but the music set has 4 tracks",
    ]
    extra = [*_tiny_predictions()[:3], Prediction("Z", (0.0, 1.0), (RankedTrack("zz", 1.0, 0, 1),), line=5)]
    with pytest.raises(ProblemsError) as info:
        score_predictions(annotations, extra, where="p.jsonl")
    assert info.value.problems == [
        "line 5: video_id 'Z' is not in the annotations",
        "1 of 4 annotated video(s) have no prediction, e.g. 'D'",
    ]


@pytest.mark.parametrize(("split", "expected"), [("test", 0.478), ("val", 0.484)])
def test_start_zero_baseline(split: str, expected: float) -> None:
    scores = baseline_scores(load_annotations(bundled_annotations(split)), "start-zero")
    assert round(scores.metrics["mIoU"], 3) == expected
    assert "R@1" in scores.not_computed and "R@1" not in scores.metrics


@pytest.fixture(scope="module")
def official(parity_dir: Path) -> dict:
    inputs = load_file(parity_dir / "metrics_inputs.safetensors")
    with safe_open(parity_dir / "metrics_inputs.safetensors", "np") as handle:
        music_ids = json.loads(handle.metadata()["music_ids_json"])
    sim = inputs["sim_code"].astype(np.float64) / 64
    spans = m.cw_to_seconds(inputs["pred_spans_cw"])
    top = np.argsort(-sim, axis=1, kind="stable")[:, :100]
    predictions = []
    for row, video_id in enumerate(inputs["video_id"].tolist()):
        moment = clip_moment(spans[row, 0], spans[row, 1])  # seconds >= 0, as the scorer clips (no metric changes)
        ranking = tuple(
            RankedTrack(music_ids[col], float(sim[row, col]), *(moment if col == row else (0.0, 30.0)))
            for col in top[row]
        )
        predictions.append(Prediction(str(video_id), moment, ranking))
    return {
        "predictions": predictions,
        "expected": json.loads((parity_dir / "metrics_expected.json").read_text())["paper_names"],
        "gt_rank0": load_file(parity_dir / "metrics_expected_per_row.safetensors")["gt_rank0"],
    }


def test_top100_predictions_reproduce_the_official_values(official: dict, tmp_path: Path, capsys) -> None:
    path = write_predictions(tmp_path / "official.jsonl", official["predictions"])
    with pytest.raises(SystemExit) as exit_info:
        main(["score", "--predictions", str(path), "--json"])
    assert exit_info.value.code in (None, 0)
    result = json.loads(capsys.readouterr().out)
    got, expected = result["metrics"], official["expected"]
    assert result["n_videos"] == 2000
    for name, value in expected.items():
        if name in ("MedianR", "MeanR", "MRR"):
            # The ranking lists 100 tracks and most GT tracks rank lower: these are not determined by the file.
            assert name in result["not_computed"]
        else:
            assert got[name] == value, name


def test_gt_rank_makes_every_official_value_exact(official: dict) -> None:
    annotations = load_annotations(bundled_annotations("test"))
    predictions = [
        replace(p, gt_rank=int(r) + 1) for p, r in zip(official["predictions"], official["gt_rank0"], strict=True)
    ]
    scores = score_predictions(annotations, predictions)
    assert scores.not_computed == {}
    for name, value in official["expected"].items():
        assert scores.metrics[name] == value, name


def _score_cli(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(["score", *args])
    captured = capsys.readouterr()
    return exit_info.value.code or 0, captured.out, captured.err


def test_cli_prints_the_table(tiny: tuple[Path, object], tmp_path: Path, capsys) -> None:
    csv_path, _ = tiny
    predictions = write_predictions(tmp_path / "tiny.jsonl", _tiny_predictions())
    code, out, _ = _score_cli(capsys, "--annotations", str(csv_path), "--predictions", str(predictions))
    assert code == 0
    rows = {
        line.split("│")[0].strip(): [v.strip() for v in line.split("│")[1:]] for line in out.splitlines() if "│" in line
    }
    # The SmG and V2MR tables have one unlabelled row; the MsG rows are labelled by their IoU threshold.
    table_rows = [[v.strip() for v in line.split("│")] for line in out.splitlines() if "│" in line][:2]
    assert table_rows == [
        ["0.583", "100.00", "25.00", "25.00"],
        ["25.00", "100.00", "100.00", "100.00", "100.00", "100.00", "2", "2.2", "0.5625"],
    ]
    assert rows["IoU>0.7"] == ["25.00", "100.00", "100.00", "100.00"]
    assert rows["IoU>0.5"] == ["25.00", "100.00", "100.00", "100.00"]
    code, out, _ = _score_cli(capsys, "--baseline", "start-zero", "--split", "val")
    assert code == 0 and "0.484" in out and "all of V2MR, all of MsG" in out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"video_id": "A", "smg": [1, 2]\n', "line 1: invalid JSON"),
        ('{"smg": [1, 2]}\n', "line 1: missing field 'video_id'"),
        ('{"video_id": "A", "smg": ["x", 2]}\n', "line 1: smg start must be a number"),
        ("", "empty file"),
        (
            '{"video_id": "A", "ranking": [["nope", 1, 0, 1]]}\n',
            "line 1: ranking has music id(s) not in the annotations' music set: 'nope'",
        ),
        ('{"video_id": "A"}\n{"video_id": "A"}\n', "line 2: duplicate video_id 'A' (first on line 1)"),
    ],
)
def test_cli_bad_predictions(tiny: tuple[Path, object], tmp_path: Path, capsys, content: str, message: str) -> None:
    csv_path, _ = tiny
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    code, out, err = _score_cli(capsys, "-a", str(csv_path), "-p", str(path))
    assert code == 1 and out == ""
    assert str(path) in err and message in err
    assert "Traceback" not in err


def test_cli_predictions_for_another_split(tmp_path: Path, capsys) -> None:
    predictions = write_predictions(tmp_path / "tiny.jsonl", _tiny_predictions())
    code, _, err = _score_cli(capsys, "--split", "val", "-p", str(predictions))
    assert code == 1
    assert f"{predictions}: none of its 4 video ids is in {bundled_annotations('val')}" in err
    assert "another split?" in err


def test_cli_bad_annotations_and_usage(tmp_path: Path, capsys) -> None:
    csv_path = tmp_path / "cut.csv"
    csv_path.write_text("video_id,music_id\n1,a\n")
    predictions = write_predictions(tmp_path / "p.jsonl", [Prediction("1", (0.0, 1.0))])
    code, _, err = _score_cli(capsys, "-a", str(csv_path), "-p", str(predictions))
    assert code == 1 and str(csv_path) in err and "missing column(s): video_start" in err
    code, _, err = _score_cli(capsys, "-p", str(tmp_path / "missing.jsonl"))
    assert code == 1 and "missing.jsonl: file not found" in err
    code, _, err = _score_cli(capsys, "--baseline", "start-zero", "-p", str(predictions))
    assert code == 2 and "give exactly one of them" in err
    code, _, err = _score_cli(capsys, "--baseline", "start-zero", "-a", str(csv_path), "--split", "val")
    assert code == 2 and "not both" in err
