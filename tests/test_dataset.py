"""Training batches: official target form, the official shuffling order, padding to the batch's longest item."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data.distributed import DistributedSampler

from mgsv.data.dataset import PairDataset, spans_target
from mgsv.data.synthetic import SyntheticConfig, write_synthetic_dataset
from mgsv.errors import InputError


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = SyntheticConfig(num_tracks=12, num_train_videos=40, val_size=8, test_size=8, seed=3)
    return write_synthetic_dataset(tmp_path_factory.mktemp("data") / "syn", config)


def test_spans_target_matches_the_official_loader() -> None:
    moments = np.array([[85.802, 119.674], [230.0, 250.0]])
    expected = np.array([[(85.802 + 119.674) / 2 / 240, (119.674 - 85.802) / 240], [235.0 / 240, 10.0 / 240]])
    np.testing.assert_allclose(spans_target(moments), expected)


@pytest.mark.parametrize("world_size", [1, 3])
def test_epoch_order_is_the_distributed_sampler_order(tiny_data: Path, world_size: int) -> None:
    data = PairDataset.from_folder(tiny_data, "train")
    for rank in range(world_size):
        sampler = DistributedSampler(range(len(data)), num_replicas=world_size, rank=rank, shuffle=True, seed=0)
        sampler.set_epoch(5)
        assert data.epoch_order(5, seed=0, rank=rank, world_size=world_size).tolist() == list(sampler)


def test_batches_pad_to_the_longest_item_and_carry_targets(tiny_data: Path) -> None:
    data = PairDataset.from_folder(tiny_data, "val")
    batches = list(data.batches(batch_size=3, shuffle=False, drop_last=False))
    assert [len(b) for b in batches] == [3, 3, 2]
    batch = batches[0]
    frames = batch.frame_mask.sum(1)
    assert batch.frame_feats.shape[1] == int(frames.max())
    assert batch.segment_feats.shape[1] == int(batch.segment_mask.sum(1).max())
    assert batch.frame_feats.dtype == torch.float32
    # Padded positions are zeros, valid positions are not.
    assert torch.all(batch.frame_feats[~batch.frame_mask] == 0)
    row = data.annotations.iloc[0]
    assert batch.video_ids[0] == row["video_id"] and batch.music_ids[0] == row["music_id"]
    centre = (row["music_start"] + row["music_end"]) / 2 / 240
    assert batch.spans_target[0, 0].item() == pytest.approx(centre, abs=1e-6)
    assert data.num_batches(3, drop_last=False) == 3 and data.num_batches(3) == 2


def test_missing_features_are_listed(tiny_data: Path, tmp_path: Path) -> None:
    frame = PairDataset.from_folder(tiny_data, "val").annotations.copy()
    frame.loc[0, "video_id"] = "999"
    from mgsv.features.store import FeatureStore

    with pytest.raises(InputError, match=r"1 video_id\(s\) have no features .*999"):
        PairDataset(frame, FeatureStore(tiny_data / "features"), where="val_data.csv")
    with pytest.raises(InputError, match="missing: a dataset folder needs train_data.csv"):
        PairDataset.from_folder(tmp_path, "train")
