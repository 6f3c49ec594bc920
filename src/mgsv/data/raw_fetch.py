"""`mgsv data fetch --raw`: the gated raw media of MGSV-EC (`xxayt/MGSV-EC-Raw`) as a dataset folder.

The repository is gated with manual approval: its listing is public, its files need a token of an account the
authors approved (HF_TOKEN, `hf auth login`, or `token=`). Without a token the Hub answers 401, with a token
not (yet) approved 403, both with `X-Error-Code: GatedRepo`; either becomes one message saying what to do
(`mgsv.hub.errors.gated_message`). The media come through `huggingface_hub.snapshot_download` into the Hugging
Face cache (resumable, never fetched twice); zip archives in the snapshot, if any, are unpacked beside the
output (safely, `mgsv.features.fetch.extract_zip`). The official CSVs come from `xxayt/MGSV-EC`, and
`mgsv.data.raw_layout` maps the media to their ids and writes the folder `mgsv extract` and `mgsv train` accept.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mgsv.data.raw_layout import RAW_SPLITS, RawLayoutReport, build_raw_layout
from mgsv.features.fetch import (
    DEFAULT_REPO,
    DEFAULT_REVISION,
    DownloadError,
    dataset_page,
    default_repo_path,
    download_file,
    extract_zip,
    locate_files,
    remote_listing,
)
from mgsv.hub.errors import describe_hub_error

RAW_REPO = "xxayt/MGSV-EC-Raw"
# No commit of the raw repository appears in any stored copy of its pages (the card shows counts only), so the
# default is its main branch; the commit actually fetched is reported and `--revision` pins one.
RAW_REVISION = "main"
UNPACKED_DIR = ".raw-unpacked"


@dataclass
class RawFetchResult:
    """The snapshot the media came from and the dataset folder built from it."""

    repo_id: str
    commit: str
    snapshot: Path
    layout: RawLayoutReport

    def to_dict(self) -> dict[str, Any]:
        return {"repo_id": self.repo_id, "commit": self.commit, "snapshot": str(self.snapshot),
                "layout": self.layout.to_dict()}


def fetch_raw(
    out: str | os.PathLike[str],
    *,
    repo_id: str = RAW_REPO,
    revision: str = RAW_REVISION,
    annotations_repo: str = DEFAULT_REPO,
    annotations_revision: str = DEFAULT_REVISION,
    endpoint: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    token: str | None = None,
    force: bool = False,
) -> RawFetchResult:
    """Download the raw media and the official CSVs, then build the dataset folder `out` (see raw_layout)."""
    from huggingface_hub import constants, snapshot_download

    out = Path(out)
    csvs = _official_csvs(annotations_repo, annotations_revision, endpoint, cache_dir, token,
                          offline=constants.is_offline_mode())
    try:
        snapshot = Path(snapshot_download(repo_id, repo_type="dataset", revision=revision, cache_dir=cache_dir,
                                          endpoint=endpoint, token=token))
    except Exception as exc:  # huggingface_hub and the network raise many classes; each becomes one message
        raise DownloadError(describe_hub_error(exc, f"{repo_id}@{revision}", dataset_page(repo_id, endpoint))) from exc
    roots = [snapshot]
    for archive in sorted(snapshot.rglob("*.zip")):
        relative = archive.relative_to(snapshot).with_suffix("")
        roots.append(extract_zip(archive, out / UNPACKED_DIR / relative))
    layout = build_raw_layout(roots, csvs, out, force=force)
    return RawFetchResult(repo_id, snapshot.name, snapshot, layout)


def _official_csvs(repo_id: str, revision: str, endpoint: str | None, cache_dir: Any, token: str | None,
                   offline: bool) -> dict[str, Path]:
    """The official train / val / test CSVs, through the cache (the listing finds them when online)."""
    names = [f"{split}_data.csv" for split in RAW_SPLITS]
    if offline:
        paths = {name: default_repo_path(name) for name in names}
    else:
        _, sizes = remote_listing(repo_id, revision, endpoint, token)
        paths = locate_files(repo_id, revision, names, sizes)
    return {split: download_file(repo_id, paths[f"{split}_data.csv"], revision, endpoint, cache_dir, token)
            for split in RAW_SPLITS}
