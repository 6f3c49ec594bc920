"""`mgsv encoders verify --against-release`: re-extract the raw MGSV-EC test media and compare with the release.

    report = verify_against_release(Path("check"), clip, ast, release=Path("data/MGSV-EC"),
                                    raw_media=[Path("data/MGSV-EC-raw")], checkpoint=Path("runs/made"))

For every video and track of the release's test rows (`mgsv.evaluation.release_sources`), our tokens are
re-extracted from the raw file with the encoders given (`mgsv.evaluation.release_items`) and compared per token
with the released `.pt` tokens; a checkpoint is then evaluated on both (`mgsv.evaluation.release_metrics`). An id
without a raw file, without released features, with two candidate raw files, or whose file or released features
cannot be read is listed under its reason, never dropped; one bad item never stops the others.

The check works in a folder of its own, so that a run that stops (the real extraction takes hours on a CPU) can
go on where it was:

    OUT/
      release-check.json   marks the folder as this check's
      re-extracted/        feature store of our tokens (the encoders' specs): items there are not encoded again
      released/            feature store of the released tokens of the compared items (what the metrics read)
      report.json          the last run's report
      release/  raw/       the two sides, when they were downloaded rather than given
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from mgsv.atomic_io import atomic_path
from mgsv.errors import InputError, MgsvError, OptionError, OutputExistsError, SpecMismatchError
from mgsv.evaluation.protocol import EvalOptions, Progress
from mgsv.evaluation.release_items import (
    ModalitySummary,
    ReleaseItem,
    as_stored,
    compare_item,
    reextract_music,
    reextract_video,
    summarize,
)
from mgsv.evaluation.release_metrics import MetricsComparison, compare_metrics
from mgsv.evaluation.release_sources import (
    RawMedia,
    ReleaseFolder,
    download_raw,
    download_release,
    match_raw_media,
    open_release,
    read_test_rows,
    sources_dict,
)
from mgsv.features.official import item_paths, official_specs, read_official_item
from mgsv.features.spec import FeatureSpec
from mgsv.features.store import FeatureStore
from mgsv.manifests import read_versioned_json

if TYPE_CHECKING:
    from mgsv.encoders.ast import AstMusicEncoder
    from mgsv.encoders.clip import ClipFrameEncoder

FOLDER_FORMAT = "mgsv-release-check"
MARK_FILE = "release-check.json"
REPORT_FILE = "report.json"
STORES = {"re_extracted": "re-extracted", "released": "released"}  # side -> folder in OUT
# The pass line of the check: every compared token at this cosine or above. Lower than the weight check's 0.9999
# because the release was made with choices we cannot know or repeat exactly (docs/encoders.md): the JPEG quality
# of its frames, fp16 on a GPU, another MP3 decoder.
RELEASE_MIN_COSINE = 0.99


@dataclass
class HubAccess:
    """Where downloads come from: a Hub endpoint (None: HF_ENDPOINT or the Hub), cache folder and token."""

    endpoint: str | None = None
    cache_dir: Path | None = None
    token: str | None = None


@dataclass
class ModalityOutcome:
    """The ids of one modality that were not compared, by reason."""

    ids: int  # distinct ids in the checked rows
    missing_raw: list[str] = field(default_factory=list)  # no raw file
    missing_release: list[str] = field(default_factory=list)  # no released features
    failed: list[str] = field(default_factory=list)  # "id: problem"


@dataclass
class ReleaseCheckReport:
    """Per-item agreement with the release, what was not compared and why, and the metrics on both sides."""

    min_cosine: float
    rows: int  # rows of the release's test CSV
    rows_checked: int  # the rows looked at (all, or the first `limit`)
    rows_compared: int  # rows whose video and track were both compared
    items: list[ReleaseItem]
    outcomes: dict[str, ModalityOutcome]
    metrics: MetricsComparison | None
    metrics_skipped: str | None  # why there are no metrics
    sources: dict[str, Any]
    specs: dict[str, dict[str, str]]  # side -> modality -> spec fingerprint

    def summary(self, modality: str) -> ModalitySummary | None:
        return summarize(self.items, modality)

    @property
    def ok(self) -> bool:
        """Something was compared and every compared token reached `min_cosine`."""
        return bool(self.items) and all(r.cosine_min >= self.min_cosine for r in self.items)

    def to_dict(self) -> dict[str, Any]:
        summaries = {m: self.summary(m) for m in self.outcomes}
        return {
            "ok": self.ok, "min_cosine": self.min_cosine, "rows": self.rows, "rows_checked": self.rows_checked,
            "rows_compared": self.rows_compared,
            "summary": {m: s.to_dict() for m, s in summaries.items() if s is not None},
            "not_compared": {m: vars(o) for m, o in self.outcomes.items()},
            "metrics": None if self.metrics is None else self.metrics.to_dict(),
            "metrics_skipped": self.metrics_skipped, "items": [r.to_dict() for r in self.items],
            "sources": self.sources, "specs": self.specs,
        }


def verify_against_release(
    out: str | Path,
    clip: ClipFrameEncoder,
    ast: AstMusicEncoder,
    *,
    release: str | Path | None = None,
    raw_media: Sequence[str | Path] = (),
    hub: HubAccess | None = None,
    checkpoint: str | Path | None = None,
    limit: int | None = None,
    min_cosine: float = RELEASE_MIN_COSINE,
    eval_options: EvalOptions | None = None,
    release_specs: dict[str, FeatureSpec] | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> ReleaseCheckReport:
    """Compare `clip` / `ast` tokens of the raw test media with the released ones (see the module docstring).

    `release`: a folder made by `mgsv data fetch` (else xxayt/MGSV-EC is downloaded into OUT/release);
    `raw_media`: folders of raw media (else the gated xxayt/MGSV-EC-Raw is downloaded into OUT/raw with
    `hub.token`); `limit`: check only the first N test rows; `release_specs`: the specs the released features
    were made with (default: the official ones, `mgsv data import`'s); `force`: start the stores in OUT afresh.
    """
    out, hub = Path(out), hub or HubAccess()
    if limit is not None and limit < 1:
        raise OptionError("limit", f"must be at least 1, got {limit}")
    stride = float(ast.spec.params["stride_s"])
    release_specs = release_specs or official_specs(stride)
    for modality, encoder, key in (("video", clip, "clip"), ("music", ast, "ast")):
        if encoder.spec.dim != release_specs[modality].dim:
            raise OptionError(key, f"makes {encoder.spec.dim}-d {modality} tokens; the released ones are "
                                   f"{release_specs[modality].dim}-d")
    _claim_folder(out)
    access = {"endpoint": hub.endpoint, "cache_dir": hub.cache_dir, "token": hub.token}
    # The gated raw media first: without access the check stops before the 3.35 GB of the release are fetched.
    if raw_media:
        roots, raw_origin = [Path(p) for p in raw_media], None
    else:
        media, raw_origin = download_raw(out / "raw", **access)
        roots = [media]
    folder = open_release(release, stride) if release is not None else download_release(out / "release", stride,
                                                                                          **access)
    rows = read_test_rows(folder)
    raw = match_raw_media(roots, rows)
    raw.origin = raw_origin or raw.origin
    checked = rows if limit is None else rows.iloc[:limit]
    specs = {"re_extracted": {"video": clip.spec, "music": ast.spec}, "released": release_specs}
    stores = {side: _open_store(out / STORES[side], specs[side], force) for side in STORES}
    encoders = {"video": clip, "music": ast}
    items: list[ReleaseItem] = []
    outcomes: dict[str, ModalityOutcome] = {}
    for modality in ("video", "music"):
        outcomes[modality] = _check_modality(modality, checked, folder, raw, encoders[modality], stores,
                                             release_specs[modality], stride, items, progress)

    compared = {m: {r.item for r in items if r.modality == m} for m in ("video", "music")}
    eligible = checked[checked["video_id"].isin(compared["video"]) & checked["music_id"].isin(compared["music"])]
    metrics, skipped = None, None
    if checkpoint is None:
        skipped = "no checkpoint given"
    elif eligible.empty:
        skipped = "no row has both its video and its track compared"
    else:
        fresh = {side: FeatureStore(out / STORES[side]) for side in STORES}
        metrics = compare_metrics(checkpoint, eligible, fresh, eval_options, progress)
    report = ReleaseCheckReport(
        min_cosine, len(rows), len(checked), len(eligible), items, outcomes, metrics, skipped,
        sources_dict(folder, raw), {side: {m: s.fingerprint() for m, s in specs[side].items()} for side in specs},
    )
    with atomic_path(out / REPORT_FILE) as tmp:
        tmp.write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return report


def _claim_folder(out: Path) -> None:
    """Make `out` this check's folder: it must be absent, empty, or a folder of an earlier check (resumed)."""
    mark = out / MARK_FILE
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out}: exists and is not a folder; choose another `out`")
    if mark.exists():
        read_versioned_json(mark, format_name=FOLDER_FORMAT, version=1, what="release check folder mark")
        return
    if out.exists() and any(out.iterdir()):
        raise OutputExistsError(f"{out}: exists and is not the folder of an earlier check against the release; "
                                "choose another `out`")
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(mark) as tmp:
        tmp.write_text(json.dumps({"format": FOLDER_FORMAT, "format_version": 1}) + "\n", encoding="utf-8")


def _open_store(root: Path, specs: dict[str, FeatureSpec], force: bool) -> FeatureStore:
    """The store at `root` with these specs (created if absent); another spec is refused unless `force`."""
    if FeatureStore.exists(root):
        try:
            store = FeatureStore(root)
            for modality, spec in specs.items():
                if modality not in store.specs:
                    raise SpecMismatchError(f"{root}: holds no {modality} features")
                spec.check_compatible(store.spec(modality), what=str(root))
            return store
        except MgsvError as exc:
            if not force:
                raise SpecMismatchError(f"{exc}\nThis folder holds features of an earlier check made another way: "
                                        "use another `out`, or `force` to start it afresh") from exc
        shutil.rmtree(root)
    return FeatureStore.create(root, specs)


def _check_modality(modality: str, rows: pd.DataFrame, release: ReleaseFolder, raw: RawMedia,
                    encoder: ClipFrameEncoder | AstMusicEncoder,
                    stores: dict[str, FeatureStore], release_spec: FeatureSpec, stride: float,
                    items: list[ReleaseItem], progress: Progress | None) -> ModalityOutcome:
    """Compare every id of one modality (its first row decides a video's frames); append to `items`."""
    column = "video_id" if modality == "video" else "music_id"
    firsts = rows.drop_duplicates(column)
    files = raw.videos if modality == "video" else raw.music
    # An ambiguity line is "id: file, file" (mgsv.data.raw_layout); ids contain no ": ".
    ambiguous = {line.split(": ", 1)[0]: line for line in raw.ambiguous}
    outcome = ModalityOutcome(ids=len(firsts))
    stored = stores["re_extracted"].modality(modality)
    with stores["re_extracted"].writer(modality) as ours_writer, stores["released"].writer(modality) as kept:
        for done, row in enumerate(firsts.itertuples(index=False), start=1):
            item_id = str(getattr(row, column))
            path = files.get(item_id)
            released_files = item_paths(release.layout, modality, item_id, stride)
            if item_id in ambiguous:
                outcome.failed.append(f"{item_id}: raw file is ambiguous ({ambiguous[item_id].split(': ', 1)[1]})")
            elif path is None or not all(p.is_file() for p in released_files):
                if path is None:
                    outcome.missing_raw.append(item_id)
                if not all(p.is_file() for p in released_files):
                    outcome.missing_release.append(item_id)
            else:
                try:
                    released, released_mask = read_official_item(release.layout, modality, item_id, release_spec,
                                                                  stride)
                    if item_id in stored:
                        tokens, mask = (t.numpy() for t in stored.get(item_id))
                    else:
                        if modality == "video":
                            tokens, mask = reextract_video(path, encoder, row.video_start, row.video_end)  # type: ignore[arg-type]
                        else:
                            tokens, mask = reextract_music(path, encoder)  # type: ignore[arg-type]
                        ours_writer.add(item_id, tokens, mask)
                        tokens = as_stored(tokens, mask)
                    item = compare_item(modality, item_id, tokens, mask, released, released_mask)
                    if item_id not in kept:  # before the item counts as compared: the metrics read it there
                        kept.add(item_id, released, released_mask)
                    items.append(item)
                except InputError as exc:
                    outcome.failed.append(f"{item_id}: {exc}")
            if progress:
                progress(f"check {modality}", done, len(firsts))
    return outcome
