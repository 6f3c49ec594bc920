"""The planted-signal generator: deterministic, MGSV-EC-shaped, and the planted answer is really in the features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mgsv.data.annotations import load_annotations
from mgsv.data.synthetic import SyntheticConfig, SyntheticDataset, num_frames, num_segments, write_synthetic_dataset
from mgsv.errors import MgsvError, OutputExistsError
from mgsv.features.store import FeatureStore

SMALL = SyntheticConfig(num_tracks=20, num_train_videos=60, val_size=10, test_size=10, seed=7)


def test_layout_is_deterministic_and_mgsv_shaped() -> None:
    a, b = SyntheticDataset.build(SMALL), SyntheticDataset.build(SMALL)
    assert a.queries.equals(b.queries)
    assert not SyntheticDataset.build(SyntheticConfig(**{**SMALL.__dict__, "seed": 8})).queries.equals(a.queries)
    for split in ("val", "test"):
        rows = a.annotations(split)
        assert rows["music_id"].is_unique  # every track at most once, as the official val/test
    rows = a.queries
    assert (rows["music_start"] >= 0).all() and (rows["music_end"] <= rows["music_total_duration"]).all()
    assert np.allclose(rows["music_end"] - rows["music_start"], rows["video_end"], atol=2e-3)


def test_token_counts_follow_the_real_masks() -> None:
    assert num_segments(30.1) == 13 and num_segments(239.9) == 96 and num_segments(240.0) == 96
    assert num_frames(5.2) == 6 and num_frames(49.5) == 50 and num_frames(80) == 50


def test_frames_carry_the_music_of_their_moment() -> None:
    """The planted signal: a frame is closest to the music at its own time, not to other moments or tracks."""
    data = SyntheticDataset.build(SyntheticConfig(**{**SMALL.__dict__, "frame_noise": 0.0, "video_offset": 0.0}))
    row = data.queries.iloc[0]
    track = data.signal.track_tokens(int(row.track_index))
    frames = data.signal.video_tokens(0, track, row.music_start, row.video_end)
    rendered = np.tanh(data.signal.music_at(track, np.arange(0, row.music_total_duration, 1.0)) @
                       data.signal.music_to_video * 1.5)
    best_second = np.argmax(frames @ rendered.T, axis=1)
    expected = np.floor(row.music_start + np.arange(len(frames)))
    assert np.mean(np.abs(best_second - expected) <= 1) > 0.9


def test_written_folder_is_a_dataset(tmp_path: Path) -> None:
    out = write_synthetic_dataset(tmp_path / "syn", SMALL)
    store = FeatureStore(out / "features")
    assert store.spec("video").encoder == "mgsv/synthetic-planted"
    assert len(store.modality("music")) == 20 and len(store.modality("video")) == 80
    for split, size in (("train", 60), ("val", 10), ("test", 10)):
        frame = load_annotations(out / f"{split}_data.csv")
        assert len(frame) == size
        lengths = store.modality("video").lengths(list(frame["video_id"]))
        assert all(lengths == [num_frames(d) for d in frame["video_end"]])
    with pytest.raises(OutputExistsError, match="--force"):
        write_synthetic_dataset(out, SMALL)


def test_bad_config_is_refused() -> None:
    with pytest.raises(MgsvError, match="cannot exceed num_tracks"):
        SyntheticConfig(num_tracks=5, val_size=10, test_size=10)
