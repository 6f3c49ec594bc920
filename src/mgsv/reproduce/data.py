"""The datasets a reproduction trains on: MGSV-EC's official split (given, or fetched and imported once) and the
random splits of the paper's protocol, drawn from the pooled annotations with the official split's val/test sizes.

    OUT/data/                   {train,val,test}_data.csv + features/ (when no `data` folder is given)
    OUT/splits/seed-N/          the three CSVs of random split N + features -> the official store (a symlink)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mgsv.data.splits import draw_splits, load_annotation_set, write_splits
from mgsv.errors import InputError, MgsvError
from mgsv.features.store import FeatureStore

CSV_NAMES = ("train_data.csv", "val_data.csv", "test_data.csv")


@dataclass(frozen=True)
class FetchOptions:
    """Where MGSV-EC comes from when no dataset folder is given (`mgsv data fetch`'s options)."""

    repo_id: str
    revision: str
    endpoint: str | None = None
    cache_dir: Path | None = None
    token: str | None = None


def is_dataset(folder: Path) -> bool:
    """True when `folder` holds the three split CSVs and a feature store that opens."""
    if not all((folder / name).is_file() for name in CSV_NAMES):
        return False
    try:
        FeatureStore(folder / "features")
    except MgsvError:  # a store that does not open is not ready: the caller imports (or reports) it
        return False
    return True


def official_dataset(out: Path, data: Path | None, fetch: FetchOptions,
                     say: Callable[[str], None]) -> Path:
    """The official split's folder: `data` (checked), or OUT/data (fetched and imported unless already there)."""
    if data is not None:
        missing = [name for name in (*CSV_NAMES, "features") if not (data / name).exists()]
        if missing:
            raise InputError(data, f"not a dataset folder: no {', '.join(missing)} (make one with `mgsv data fetch "
                                   "--import` or `mgsv data import`)")
        FeatureStore(data / "features")  # opens or raises an error naming the problem
        return data
    folder = out / "data"
    if is_dataset(folder):
        say(f"data: {folder} (already fetched and imported)")
        return folder
    from mgsv.features.fetch import fetch_dataset

    say(f"data: fetching {fetch.repo_id}@{fetch.revision} into {folder} and importing its features ...")
    fetch_dataset(folder, repo_id=fetch.repo_id, revision=fetch.revision, import_features=True,
                  endpoint=fetch.endpoint, cache_dir=fetch.cache_dir, token=fetch.token)
    return folder


def random_split(out: Path, official: Path, seed: int) -> Path:
    """OUT/splits/seed-N: a split drawn from the pooled official annotations (written once, then reused)."""
    folder = out / "splits" / f"seed-{seed}"
    if all((folder / name).is_file() for name in CSV_NAMES) and (folder / "features").exists():
        return folder
    paths = [official / name for name in CSV_NAMES]
    pooled = load_annotation_set(paths)
    sizes = [len(load_annotation_set([official / name]).rows) for name in ("val_data.csv", "test_data.csv")]
    rows = draw_splits(pooled.video_ids, pooled.music_ids, seed, sizes[0], sizes[1],
                       where=", ".join(str(p) for p in paths))
    write_splits(folder, pooled, rows, force=True)
    link = folder / "features"
    if not link.exists():
        os.symlink((official / "features").resolve(), link, target_is_directory=True)
    return folder
