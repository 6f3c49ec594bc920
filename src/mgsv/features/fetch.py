"""Download MGSV-EC from the Hugging Face Hub, unpack its features safely, and optionally import them.

Files come through `huggingface_hub.hf_hub_download` into the Hugging Face cache (HF_HOME or `cache_dir`). The
library resumes a download whose connection drops (it retries with an HTTP Range request from the byte it had
reached) and never re-downloads a file already in the cache, so re-running `mgsv data fetch` after a failure only
fetches what is missing. (A file whose download was killed midway starts again from zero: huggingface_hub >= 1.0
writes each attempt to a private temporary file that it deletes.) Every file's size is checked against the size the
Hub lists. The CSVs are copied into the output folder; the feature zip stays in the cache and
is extracted from there (no second copy of several GB).
"""

from __future__ import annotations

import os
import shutil
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from mgsv.atomic_io import atomic_path
from mgsv.errors import InputError, MgsvError, OptionError, OutputExistsError
from mgsv.features.official import ImportResult, Progress, find_layout_root, import_official

DEFAULT_REPO = "xxayt/MGSV-EC"
CSV_FILES = ("train_data.csv", "val_data.csv", "test_data.csv")
FEATURES_ZIP = "MGSV_feature.zip"
EXTRACTED_DIR = "MGSV_feature"
OFFLINE_HINT = (
    "if you have no network, files already in the Hugging Face cache are used with HF_HUB_OFFLINE=1; "
    "a mirror can be set with HF_ENDPOINT"
)


class DownloadError(MgsvError):
    """The Hub could not be reached, or a file is missing or damaged."""


@dataclass
class FetchResult:
    """What a fetch produced."""

    out: Path
    repo_id: str
    revision: str  # the commit the files came from (or the requested revision when offline)
    files: dict[str, Path]  # repo filename -> local path (CSVs in `out`, the zip in the cache)
    features_dir: Path | None = None
    imported: ImportResult | None = None
    sizes_checked: bool = True
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "repo_id": self.repo_id,
            "revision": self.revision,
            "files": {k: str(v) for k, v in self.files.items()},
            "features_dir": str(self.features_dir) if self.features_dir else None,
            "imported": self.imported.to_dict() if self.imported else None,
            "sizes_checked": self.sizes_checked,
        }


def fetch_dataset(
    out: str | os.PathLike[str],
    repo_id: str = DEFAULT_REPO,
    revision: str = "main",
    features: bool = True,
    import_features: bool = False,
    endpoint: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> FetchResult:
    """Download the MGSV-EC CSVs (and features) into `out`; with `import_features`, build `out/features`."""
    from huggingface_hub import constants

    if import_features and not features:
        raise OptionError("import_features", "importing needs the features, which `features` turned off")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    wanted = list(CSV_FILES) + ([FEATURES_ZIP] if features else [])
    offline = constants.is_offline_mode()
    notes: list[str] = []
    if offline:
        sizes: dict[str, int | None] = {}
        commit = revision
        notes.append("offline mode: using the Hugging Face cache; sizes not checked against the Hub")
    else:
        commit, sizes = _remote_listing(repo_id, revision, endpoint)
        absent = [name for name in wanted if name not in sizes]
        if absent:
            raise DownloadError(
                f"{repo_id}@{revision}: the dataset has no {', '.join(absent)} "
                f"(it has: {', '.join(sorted(sizes)) or 'no files'})"
            )

    files: dict[str, Path] = {}
    for name in wanted:
        # By branch name (not the listed commit) so that the cache records the ref and offline re-runs find it.
        cached = _download(repo_id, name, revision, endpoint, cache_dir)
        commit = cached.parent.name if cached.parent.parent.name == "snapshots" else commit
        expected = sizes.get(name)
        actual = cached.stat().st_size
        if expected is not None and actual != expected:
            raise DownloadError(
                f"{cached}: {actual} bytes, but {repo_id} lists {name} with {expected} bytes; "
                "delete this file from the cache and run the command again"
            )
        files[name] = cached

    for name in CSV_FILES:
        files[name] = _place_copy(files[name], out / name, force)

    result = FetchResult(out, repo_id, commit, files, sizes_checked=not offline, notes=notes)
    if features:
        result.features_dir = extract_zip(files[FEATURES_ZIP], out / EXTRACTED_DIR)
    if import_features:
        assert result.features_dir is not None
        root = find_layout_root(result.features_dir)
        if root is None:
            raise InputError(
                files[FEATURES_ZIP],
                f"no official feature layout (vit_feature1/, ast_feature2p5/) inside {result.features_dir}",
            )
        result.imported = import_official(
            root, out / "features", csvs=[out / name for name in CSV_FILES], force=force, progress=progress
        )
    return result


def _remote_listing(repo_id: str, revision: str, endpoint: str | None) -> tuple[str, dict[str, int | None]]:
    """The commit a revision points at and the size of each file there."""
    from huggingface_hub import HfApi

    try:
        info = HfApi(endpoint=endpoint).dataset_info(repo_id, revision=revision, files_metadata=True)
    except Exception as exc:  # network and Hub errors come in many classes; all end the fetch here
        raise DownloadError(_describe(exc, f"{repo_id}@{revision}")) from exc
    sizes = {s.rfilename: s.size for s in (info.siblings or [])}
    return info.sha or revision, sizes


def _download(repo_id: str, filename: str, revision: str, endpoint: str | None, cache_dir: Any) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(
            repo_id, filename, repo_type="dataset", revision=revision, endpoint=endpoint, cache_dir=cache_dir
        )
    except Exception as exc:  # see _remote_listing
        raise DownloadError(_describe(exc, f"{repo_id}/{filename}@{revision}")) from exc
    return Path(path)


def _describe(exc: Exception, what: str) -> str:
    """One sentence for a Hub/network failure, with the offline/mirror hint where it helps."""
    from huggingface_hub import errors

    kind = type(exc).__name__
    if isinstance(exc, errors.GatedRepoError):
        return f"{what}: the dataset is gated; accept its terms on the Hub and log in (`hf auth login`)"
    if isinstance(exc, errors.RepositoryNotFoundError):
        return f"{what}: dataset repository not found (or private: log in with `hf auth login`)"
    if isinstance(exc, errors.RevisionNotFoundError):
        return f"{what}: no such revision"
    if isinstance(exc, (errors.LocalEntryNotFoundError, ConnectionError)):
        return f"{what}: not in the local cache and the Hub cannot be reached ({kind}); {OFFLINE_HINT}"
    if isinstance(exc, errors.EntryNotFoundError):
        return f"{what}: file not found in the dataset"
    return f"{what}: download failed ({kind}: {exc}); {OFFLINE_HINT}"


def _place_copy(src: Path, dest: Path, force: bool) -> Path:
    """Copy a downloaded file to `dest` atomically; an existing different file is kept unless `force`."""
    if dest.exists():
        if dest.read_bytes() == src.read_bytes():
            return dest
        if not force:
            raise OutputExistsError(
                f"{dest}: exists and differs from the downloaded {src.name}; use `force` to replace it"
            )
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
    return dest


def _safe_member_path(name: str) -> PurePosixPath | None:
    """The relative path a zip member may be written to, or None if it would escape the folder."""
    normalised = name.replace("\\", "/")
    path = PurePosixPath(normalised)
    if normalised.startswith("/") or (path.parts and ":" in path.parts[0]) or ".." in path.parts:
        return None
    return path


def extract_zip(zip_path: Path, dest: Path) -> Path:
    """Extract `zip_path` into `dest` (atomically: a temporary folder renamed at the end); returns `dest`.

    Members with absolute paths, `..` or symlinks are refused; the disk must have room for the unpacked size.
    An existing `dest` is taken as a finished extraction (the rename is the last step).
    """
    if dest.is_dir():
        return dest
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(zip_path, f"not a readable zip file ({exc}); delete it and download again") from exc
    with archive:
        members = archive.infolist()
        bad = []
        for member in members:
            is_link = stat.S_ISLNK(member.external_attr >> 16)
            if is_link or _safe_member_path(member.filename) is None:
                bad.append(member.filename)
        if bad:
            raise InputError(
                zip_path, f"refusing to extract {len(bad)} member(s) outside the folder or links, e.g. {bad[0]!r}"
            )
        needed = sum(m.file_size for m in members)
        free = shutil.disk_usage(dest.parent if dest.parent.exists() else Path.cwd()).free
        if needed > free:
            raise InputError(
                zip_path, f"needs {needed / 2**30:.1f} GiB to extract, {free / 2**30:.1f} GiB free at {dest.parent}"
            )
        partial = dest.parent / f".{dest.name}.partial"
        if partial.exists():
            shutil.rmtree(partial)  # a previous extraction was interrupted; ours to redo
        partial.mkdir(parents=True)
        try:
            for member in members:
                target = partial / _safe_member_path(member.filename)  # type: ignore[operator]
                if member.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                # ZipFile checks each member's CRC as it reads; a damaged archive raises here.
                with archive.open(member) as src, open(target, "wb") as f:
                    shutil.copyfileobj(src, f, length=1 << 20)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            shutil.rmtree(partial, ignore_errors=True)
            raise InputError(zip_path, f"damaged zip ({exc}); delete it and download again") from exc
    os.replace(partial, dest)
    return dest
