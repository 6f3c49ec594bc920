"""The two sides of the check against the MGSV-EC release: the released features and the raw media of the test split.

The release is a folder as `mgsv data fetch` writes it: `test_data.csv` at its root and `MGSV_feature.zip`
unpacked below it (the official per-id `.pt` layout, docs/official-code.md "Feature layout"). The raw media are
any folder holding the files of `xxayt/MGSV-EC-Raw` (its snapshot, or the folder `mgsv data fetch --raw` made);
their names are mapped to the test rows' ids by `mgsv.data.raw_layout` (names only, folders do not matter).
Either side can be downloaded instead: the release from `xxayt/MGSV-EC` (3.35 GB), the raw media from the gated
`xxayt/MGSV-EC-Raw` with the user's token, both through the existing fetch code and the Hugging Face cache.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mgsv.data.annotations import load_annotations
from mgsv.data.raw_layout import MEDIA_DIR, match_music, match_videos, media_files
from mgsv.errors import InputError
from mgsv.features.official import find_layout_root, music_dir
from mgsv.files.discover import AUDIO_SUFFIXES, VIDEO_SUFFIXES

TEST_CSV = "test_data.csv"


@dataclass
class ReleaseFolder:
    """The released test annotations and the folder holding the official feature layout."""

    folder: Path
    test_csv: Path
    layout: Path  # holds vit_feature1/ and ast_feature<stride>/
    origin: dict[str, str] = field(default_factory=dict)  # where it came from (repository and commit, or folder)


@dataclass
class RawMedia:
    """Raw files of the test ids, and what could not be matched to one id."""

    videos: dict[str, Path]
    music: dict[str, Path]
    ambiguous: list[str] = field(default_factory=list)  # "id: file, file" (never guessed)
    origin: dict[str, str] = field(default_factory=dict)


def open_release(folder: str | os.PathLike[str], stride: float = 2.5) -> ReleaseFolder:
    """A release folder made by `mgsv data fetch` (CSV at the root, the feature zip unpacked below)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "release folder not found (make it with `mgsv data fetch --out FOLDER`)")
    test_csv = folder / TEST_CSV
    if not test_csv.is_file():
        raise InputError(folder, f"no {TEST_CSV} here: the release folder is what `mgsv data fetch --out FOLDER` "
                                 "writes (the CSVs at its root, MGSV_feature.zip unpacked below)")
    layout = find_layout_root(folder, stride)
    if layout is None:
        raise InputError(folder, f"no official feature layout (vit_feature1/ and {music_dir(stride)}/) at or below "
                                 "this folder: unpack MGSV_feature.zip here, or fetch it with `mgsv data fetch`")
    return ReleaseFolder(folder, test_csv, layout, {"folder": str(folder)})


def download_release(
    out: Path, stride: float = 2.5, endpoint: str | None = None, cache_dir: str | os.PathLike[str] | None = None,
    token: str | None = None,
) -> ReleaseFolder:
    """Fetch the CSVs and MGSV_feature.zip of xxayt/MGSV-EC into `out` (unpacked; the zip stays in the cache)."""
    from mgsv.features.fetch import fetch_dataset

    fetched = fetch_dataset(out, endpoint=endpoint, cache_dir=cache_dir, token=token)
    release = open_release(out, stride)
    release.origin = {"repo_id": fetched.repo_id, "commit": fetched.revision, "folder": str(out)}
    return release


def download_raw(
    out: Path, endpoint: str | None = None, cache_dir: str | os.PathLike[str] | None = None,
    token: str | None = None,
) -> tuple[Path, dict[str, str]]:
    """Fetch the gated raw media into the cache and lay them out under `out` (`mgsv data fetch --raw`); returns
    the folder of media named by id and where they came from."""
    from mgsv.data.raw_fetch import fetch_raw

    fetched = fetch_raw(out, endpoint=endpoint, cache_dir=cache_dir, token=token)
    return out / MEDIA_DIR, {"repo_id": fetched.repo_id, "commit": fetched.commit, "folder": str(out)}


def read_test_rows(release: ReleaseFolder) -> pd.DataFrame:
    """The release's test rows (validated MGSV-EC schema; ids are strings)."""
    return load_annotations(release.test_csv)


def match_raw_media(roots: list[Path], rows: pd.DataFrame) -> RawMedia:
    """The raw file of each video and music id of `rows`, found by name under `roots` (see mgsv.data.raw_layout)."""
    for root in roots:
        if not Path(root).is_dir():
            raise InputError(root, "raw media folder not found")
    annotated = {str(m): Path(str(p).replace("\\", "/")).name for m, p in zip(rows["music_id"], rows["music_path"],
                                                                             strict=True)}
    music, music_report = match_music(media_files(roots, AUDIO_SUFFIXES), annotated)
    videos, ambiguous, _ = match_videos(media_files(roots, VIDEO_SUFFIXES), set(rows["video_id"]))
    return RawMedia(videos, music, music_report.ambiguous + ambiguous,
                    {"folders": ", ".join(str(r) for r in roots)})


def sources_dict(release: ReleaseFolder, raw: RawMedia) -> dict[str, Any]:
    """Where both sides came from, for the report."""
    return {"release": {**release.origin, "layout": str(release.layout), "test_csv": str(release.test_csv)},
            "raw_media": raw.origin}
