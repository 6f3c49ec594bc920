"""The metrics reproduce the official evaluation's values on the parity fixture exactly (README §2 of the fixture)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file

from mgsv.errors import InputError
from mgsv.evaluation import metrics as m


@pytest.fixture(scope="module")
def fixture(parity_dir: Path) -> dict:
    inputs = load_file(parity_dir / "metrics_inputs.safetensors")
    with safe_open(parity_dir / "metrics_inputs.safetensors", "np") as handle:
        music_ids = json.loads(handle.metadata()["music_ids_json"])
    return {
        "inputs": inputs,
        "music_ids": music_ids,
        "sim": inputs["sim_code"].astype(np.float64) / 64,
        "expected": json.loads((parity_dir / "metrics_expected.json").read_text()),
        "per_row": load_file(parity_dir / "metrics_expected_per_row.safetensors"),
    }


@pytest.fixture(scope="module")
def iou(fixture: dict) -> np.ndarray:
    inputs = fixture["inputs"]
    spans = m.cw_to_seconds(inputs["pred_spans_cw"])
    gt = inputs["gt_moment_seconds"]
    return m.moment_iou(spans[:, 0], spans[:, 1], gt[:, 0], gt[:, 1], inputs["m_duration"])


@pytest.fixture(scope="module")
def ranks(fixture: dict) -> np.ndarray:
    return m.gt_ranks(fixture["sim"], fixture["music_ids"], fixture["music_ids"])


def test_per_row_ranks_and_ious(fixture: dict, iou: np.ndarray, ranks: np.ndarray) -> None:
    np.testing.assert_array_equal(ranks, fixture["per_row"]["gt_rank0"])
    assert iou.dtype == np.float32
    # The float32 arithmetic follows the official order, so the IoUs are bit-identical, not just within 1e-6.
    np.testing.assert_array_equal(iou, fixture["per_row"]["iou"])


def test_prediction_groups_behave_as_described(fixture: dict, iou: np.ndarray) -> None:
    groups = fixture["inputs"]["pred_group"]
    # Exact GT in normalised (c, w) comes back within float32 rounding of IoU 1.
    assert (iou[groups == 6] > 0.9999).all()
    after_track_end = groups == 4
    assert (iou[after_track_end] == 0.0).all()


def test_smg_metrics(fixture: dict, iou: np.ndarray) -> None:
    expected = fixture["expected"]["iou"]
    got = m.smg_metrics(iou)
    assert got["mIoU"] == expected["mIoU"]
    for t in m.IOU_THRESHOLDS:
        assert got[m.iou_name(t)] == expected[f"IoU@{t}"]
    counts = fixture["expected"]["integer_counts"]
    for t in m.IOU_THRESHOLDS:
        assert int(np.count_nonzero(iou > t)) == counts[f"iou_gt_{t}"]


def test_retrieval_metrics(fixture: dict, ranks: np.ndarray) -> None:
    expected = fixture["expected"]["recall"]
    got = m.retrieval_metrics(ranks)
    for k in m.RECALL_KS:
        assert got[m.recall_name(k)] == expected[f"R{k}"]
        assert int(np.count_nonzero(ranks < k)) == fixture["expected"]["integer_counts"][f"rank_lt_{k}"]
    for name in ("MedianR", "MeanR", "MRR"):
        assert got[name] == expected[name]


def test_msg_metrics_and_the_official_miou_quirk(fixture: dict, iou: np.ndarray, ranks: np.ndarray) -> None:
    expected = fixture["expected"]["composite"]
    counts = fixture["expected"]["integer_counts"]
    got = m.msg_metrics(ranks, iou)
    for k in m.MOR_KS:
        for t in m.MOR_THRESHOLDS:
            assert got[m.mor_name(k, t)] == expected[f"R{k}_iou{t}"]
            assert int(np.count_nonzero((ranks < k) & (iou > t))) == counts[f"R{k}_iou{t}"]
        assert got[m.official_miou_quirk_name(k)] == expected[f"R{k}_miou"]
    paper = fixture["expected"]["paper_names"]
    assert {name: got[name] for name in paper if name.startswith("MoR")} == {
        name: value for name, value in paper.items() if name.startswith("MoR")
    }


def test_dedup_counts_a_repeated_track_once(fixture: dict) -> None:
    inputs, expected = fixture["inputs"], fixture["expected"]["dedup_check"]
    ids = [f"music{i}" for i in inputs["dedup_music_index"]]
    ranks = m.gt_ranks(inputs["dedup_sim"], ids, ids)
    assert ranks.tolist() == expected["gt_rank0"]
    assert ranks.tolist() != expected["no_dedup_strictly_greater_count"]
    got = m.retrieval_metrics(ranks)
    assert {f"R{k}": got[m.recall_name(k)] for k in m.RECALL_KS} == {
        f"R{k}": expected["recall"][f"R{k}"] for k in m.RECALL_KS
    }
    for name in ("MedianR", "MeanR", "MRR"):
        assert got[name] == expected["recall"][name]


def test_ties_rank_against_the_ground_truth() -> None:
    scores = np.array([[0.5, 0.5, 0.5], [0.9, 0.1, 0.9], [0.2, 0.2, 0.3]])
    ranks = m.gt_ranks(scores, ["a", "b", "c"], ["a", "b", "c"])
    # Row 0: all tied, so both others rank above a. Row 2: c is strictly best.
    assert ranks.tolist() == [2, 2, 0]


def test_iou_clipping_rules() -> None:
    # Prediction past 240 s and past the track end is clipped to the track; GT end past 240 s is clamped.
    got = m.moment_iou(
        np.array([-10.0, 100.0, 0.0, 10.0]),
        np.array([20.0, 300.0, 10.0, 20.0]),
        np.array([0.0, 100.0, 5.0, 5.0]),
        np.array([20.0, 250.0, 5.0, 15.0]),
        np.array([200.0, 239.0, 100.0, 100.0]),
    )
    # Row 0: [0,20] vs [0,20] -> 1. Row 1: [100,239] vs [100,240] -> 139/140. Row 2: empty GT -> 0.
    # Row 3: [10,20] vs [5,15] -> 5/15.
    np.testing.assert_allclose(got, [1.0, 139 / 140, 0.0, 1 / 3], rtol=1e-6)


def test_gt_ranks_reject_a_missing_gt_track_and_bad_shapes() -> None:
    with pytest.raises(InputError, match="row 1: ground-truth track 'z' is not among the scored tracks"):
        m.gt_ranks(np.zeros((2, 2)), ["a", "b"], ["a", "z"])
    with pytest.raises(InputError, match=r"expected a \[2, 3\] score matrix, got shape \[2, 2\]"):
        m.gt_ranks(np.zeros((2, 2)), ["a", "b", "c"], ["a", "b"])
    with pytest.raises(InputError, match="NaN or infinite"):
        m.gt_ranks(np.array([[np.nan]]), ["a"], ["a"])
