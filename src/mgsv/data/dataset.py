"""Training and evaluation batches: (video, ground-truth track) pairs from annotations and a feature store.

A batch holds the pairs' features padded to the batch's own longest sequence (padding to the official 50 / 96
only costs time: the model's results do not depend on the padding amount) and the targets in the official form:
(centre, width) of the ground-truth moment divided by the 240 s horizon, the end clamped to 240 (docs/official-code.md,
"Annotations and targets").
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mgsv.data.annotations import load_annotations
from mgsv.defaults import MUSIC_HORIZON_S
from mgsv.errors import InputError
from mgsv.features.store import FeatureStore

SPLITS = ("train", "val", "test")


@dataclass
class Batch:
    """Aligned (video, track) pairs: item i of every field belongs to pair i."""

    video_ids: list[str]
    music_ids: list[str]
    frame_feats: torch.Tensor  # [B, Lv, Dv]
    frame_mask: torch.Tensor  # [B, Lv] bool
    segment_feats: torch.Tensor  # [B, Lm, Dm]
    segment_mask: torch.Tensor  # [B, Lm] bool
    spans_target: torch.Tensor  # [B, 2] (centre, width) / 240
    moments_s: torch.Tensor  # [B, 2] ground-truth (start, end) in seconds, end clamped to 240
    track_duration_s: torch.Tensor  # [B]
    video_duration_s: torch.Tensor  # [B] video_end - video_start

    def __len__(self) -> int:
        return len(self.video_ids)

    def to(self, device: torch.device | str) -> Batch:
        """The same batch with every tensor on `device`."""
        moved = {
            f.name: (value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value)
            for f in fields(self)
            for value in [getattr(self, f.name)]
        }
        return Batch(**moved)

    def pin_memory(self) -> Batch:
        """The same batch in page-locked host memory, so that a copy to a CUDA device can be asynchronous."""
        return Batch(**{
            f.name: (value.pin_memory() if isinstance(value, torch.Tensor) else value)
            for f in fields(self)
            for value in [getattr(self, f.name)]
        })


def spans_target(moments_s: np.ndarray) -> np.ndarray:
    """Official normalised (centre, width) targets from (start, end) seconds; the end is clamped to 240 s."""
    start = moments_s[:, 0]
    end = np.minimum(moments_s[:, 1], MUSIC_HORIZON_S)
    return np.stack([(start + end) / 2 / MUSIC_HORIZON_S, (end - start) / MUSIC_HORIZON_S], axis=1)


class PairDataset:
    """The (video, ground-truth track) pairs of one annotation split, with their features."""

    def __init__(self, annotations: pd.DataFrame, store: FeatureStore, where: str = "annotations") -> None:
        self.annotations = annotations.reset_index(drop=True)
        self.videos = store.modality("video")
        self.music = store.modality("music")
        self._check_ids(where, store)
        self.video_ids = [str(v) for v in self.annotations["video_id"]]
        self.music_ids = [str(m) for m in self.annotations["music_id"]]
        moments = self.annotations[["music_start", "music_end"]].to_numpy(np.float32)
        moments[:, 1] = np.minimum(moments[:, 1], MUSIC_HORIZON_S)
        self.moments_s = moments
        self.targets = spans_target(moments).astype(np.float32)
        self.track_duration_s = self.annotations["music_total_duration"].to_numpy(np.float32)
        self.video_duration_s = (self.annotations["video_end"] - self.annotations["video_start"]).to_numpy(np.float32)

    @classmethod
    def from_folder(cls, data_dir: str | Path, split: str, store: FeatureStore | None = None) -> PairDataset:
        """The pairs of `DATA/<split>_data.csv` with features from `DATA/features` (or the given store)."""
        data_dir = Path(data_dir)
        if split not in SPLITS:
            raise InputError(data_dir, f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        csv = data_dir / f"{split}_data.csv"
        if not csv.is_file():
            raise InputError(csv, f"missing: a dataset folder needs {split}_data.csv (see docs/architecture.md)")
        return cls(load_annotations(csv), store or FeatureStore(data_dir / "features"), where=str(csv))

    def _check_ids(self, where: str, store: FeatureStore) -> None:
        for column, table in (("video_id", self.videos), ("music_id", self.music)):
            missing = sorted({str(i) for i in self.annotations[column] if str(i) not in table})
            if missing:
                shown = ", ".join(missing[:10]) + (f" (and {len(missing) - 10} more)" if len(missing) > 10 else "")
                raise InputError(
                    where, f"{len(missing)} {column}(s) have no features in {store.root}: {shown}"
                )

    def __len__(self) -> int:
        return len(self.video_ids)

    def batch(self, indices: Sequence[int] | np.ndarray) -> Batch:
        """The pairs at `indices` as one batch padded to its longest video and track."""
        idx = np.asarray(indices, dtype=np.int64)
        video_ids = [self.video_ids[i] for i in idx]
        music_ids = [self.music_ids[i] for i in idx]
        frame_feats, frame_mask = self.videos.batch(video_ids)
        segment_feats, segment_mask = self.music.batch(music_ids)
        return Batch(
            video_ids=video_ids,
            music_ids=music_ids,
            frame_feats=frame_feats,
            frame_mask=frame_mask.bool(),
            segment_feats=segment_feats,
            segment_mask=segment_mask.bool(),
            spans_target=torch.from_numpy(self.targets[idx]),
            moments_s=torch.from_numpy(self.moments_s[idx]),
            track_duration_s=torch.from_numpy(self.track_duration_s[idx]),
            video_duration_s=torch.from_numpy(self.video_duration_s[idx]),
        )

    def epoch_order(self, epoch: int, seed: int = 0, rank: int = 0, world_size: int = 1) -> np.ndarray:
        """This rank's shuffled indices for an epoch, exactly as torch's DistributedSampler(shuffle=True) draws them.

        The official training shuffles with DistributedSampler(seed=0) and set_epoch(epoch); matching it keeps the
        batch order of a run comparable with the official code.
        """
        generator = torch.Generator().manual_seed(seed + epoch)
        order = torch.randperm(len(self), generator=generator, device="cpu").tolist()  # host: an order, not data
        per_rank = -(-len(order) // world_size)
        total = per_rank * world_size
        order += (order * (total // max(len(order), 1) + 1))[: total - len(order)]  # pad like DistributedSampler
        return np.asarray(order[rank:total:world_size], dtype=np.int64)

    def batches(
        self,
        batch_size: int,
        epoch: int = 0,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> Iterator[Batch]:
        """Batches of one epoch (shuffled as the official sampler, or in file order for evaluation)."""
        if shuffle:
            order = self.epoch_order(epoch, seed, rank, world_size)
        else:
            order = np.arange(rank, len(self), world_size, dtype=np.int64)
        stop = len(order) - (len(order) % batch_size if drop_last else 0)
        for begin in range(0, stop, batch_size):
            yield self.batch(order[begin : begin + batch_size])

    def num_batches(self, batch_size: int, drop_last: bool = True, world_size: int = 1) -> int:
        """How many batches `batches` yields per epoch on each rank."""
        per_rank = -(-len(self) // world_size)
        return per_rank // batch_size if drop_last else -(-per_rank // batch_size)
