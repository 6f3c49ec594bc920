"""Import of the official per-id `.pt` feature layout (docs/official-code.md, "Feature layout") into a feature store.

    SRC/vit_feature1/vit_feature/<video_id>.pt      [50, 512] float      CLIP frame embeddings
    SRC/vit_feature1/vit_mask/<video_id>.pt         [50] float 1/0       1 = real frame
    SRC/ast_feature2p5/ast_feature/<music_id>.pt    [96, 768] float      AST window embeddings (stride 2.5 s)
    SRC/ast_feature2p5/ast_mask/<music_id>.pt       [96] float 1/0       1 = window centre <= track duration

The import writes into `.<name>.partial` beside the output and renames it into place only after every requested
id is converted and the store verifies, so an interrupted import never leaves a store that looks complete; a
re-run resumes from the partial store (ids already converted are skipped).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mgsv.errors import InputError, MgsvError, OptionError, OutputExistsError, ProblemsError
from mgsv.features.spec import VIDEO_SPEC, FeatureSpec, music_spec
from mgsv.features.store import FeatureStore

VIDEO_DIR = "vit_feature1"
MUSIC_DIRS = {2.5: "ast_feature2p5", 5.0: "ast_feature5", 7.5: "ast_feature7p5", 10.0: "ast_feature10"}
# (modality, feature subfolder, mask subfolder, top folder for a stride)
_KINDS = {"video": ("vit_feature", "vit_mask"), "music": ("ast_feature", "ast_mask")}
SHOWN_PROBLEMS = 20
_SIZE_FACTOR = 64  # a .pt file may be this many times a float64 tensor of the expected shape
_CHUNK = 256  # items loaded in parallel before they are handed to the store writer

Progress = Callable[[str, int, int], None]  # (modality, items done, items total)


@dataclass
class ImportResult:
    """What an import did."""

    out: Path
    counts: dict[str, int]  # items per modality in the finished store
    converted: dict[str, int]  # items converted by this run (the rest came from a resumed partial import)
    ignored: dict[str, int]  # feature files present but not named by the CSVs
    seconds: float
    already_complete: bool = False
    specs: dict[str, str] = field(default_factory=dict)  # fingerprints

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "counts": self.counts,
            "converted": self.converted,
            "ignored": self.ignored,
            "seconds": round(self.seconds, 3),
            "already_complete": self.already_complete,
            "specs": self.specs,
        }


def music_dir(stride: float) -> str:
    """The official music folder name for a window stride."""
    try:
        return MUSIC_DIRS[float(stride)]
    except KeyError:
        raise OptionError(
            "stride",
            f"unsupported stride {stride:g}; the official layout has {', '.join(f'{s:g}' for s in MUSIC_DIRS)}",
        ) from None


def official_specs(stride: float = 2.5) -> dict[str, FeatureSpec]:
    """The specs the official features were made with (the paper's defaults)."""
    music_dir(stride)
    return {"video": VIDEO_SPEC, "music": music_spec(stride)}


def find_layout_root(folder: Path, stride: float = 2.5, depth: int = 3) -> Path | None:
    """The folder at or below `folder` (at most `depth` levels) that holds the official layout, if any."""
    wanted = music_dir(stride)
    level = [folder]
    for _ in range(depth + 1):
        for candidate in level:
            if (candidate / VIDEO_DIR).is_dir() and (candidate / wanted).is_dir():
                return candidate
        level = sorted(p for d in level for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
    return None


def read_csv_ids(paths: Sequence[Path]) -> tuple[list[str], list[str]]:
    """The video and music ids named by annotation CSVs, in first-seen order, as strings."""
    import pandas as pd

    video_ids: dict[str, None] = {}
    music_ids: dict[str, None] = {}
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise InputError(path, "annotation CSV not found")
        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            raise InputError(path, f"cannot read CSV: {exc}") from exc
        missing = [c for c in ("video_id", "music_id") if c not in frame.columns]
        if missing:
            raise InputError(path, f"missing column(s) {', '.join(missing)} (is this an MGSV-EC annotation CSV?)")
        problems = []
        for line, (vid, mid) in enumerate(zip(frame["video_id"], frame["music_id"], strict=True), start=2):
            vid, mid = vid.strip(), mid.strip()
            if not vid or not mid:
                problems.append(f"line {line}: empty video_id or music_id")
                continue
            video_ids[vid] = None
            music_ids[mid] = None
        if problems:
            raise ProblemsError(path, problems, limit=SHOWN_PROBLEMS)
    return list(video_ids), list(music_ids)


def _list_ids(folder: Path) -> set[str]:
    # scandir: one syscall batch for ~53k names, no per-file stat.
    with os.scandir(folder) as entries:
        return {e.name[:-3] for e in entries if e.name.endswith(".pt") and not e.name.startswith(".")}


def _load_item(feature_path: Path, mask_path: Path, spec: FeatureSpec) -> tuple[Any, Any] | str:
    """Load one official (features, mask) pair, or return the problem naming the file."""
    try:
        return _load_checked(feature_path, mask_path, spec)
    except InputError as exc:
        return str(exc)


def _load_checked(feature_path: Path, mask_path: Path, spec: FeatureSpec) -> tuple[Any, Any]:
    """One official (features, mask) pair as torch tensors; raises `InputError` naming the bad file."""
    import torch

    loaded = []
    for path, shape in ((feature_path, [spec.max_tokens, spec.dim]), (mask_path, [spec.max_tokens])):
        # Refuse absurd files before unpickling them. The cap is generous because torch.save writes a slice's
        # whole underlying storage, so a legitimate file may hold more than its own [L, D] values.
        limit = _SIZE_FACTOR * 8 * int(np.prod(shape)) + 65536
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise InputError(path, f"cannot read ({exc})") from exc
        if size > limit:
            raise InputError(path, f"{size:,d} bytes, far more than a {shape} tensor needs")
        try:
            value = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a corrupt/truncated pickle can raise almost anything; name the file
            raise InputError(path, f"cannot load ({type(exc).__name__}: {exc})") from exc
        if not isinstance(value, torch.Tensor):
            raise InputError(path, f"holds a {type(value).__name__}, expected a tensor")
        if list(value.shape) != shape:
            raise InputError(path, f"shape {list(value.shape)}, expected {shape}")
        loaded.append(value)
    feats, mask = loaded
    if not feats.dtype.is_floating_point:
        raise InputError(feature_path, f"dtype {feats.dtype}, expected floating point")
    if mask.dtype.is_complex or not ((mask == 0) | (mask == 1)).all():
        raise InputError(mask_path, "mask values must be 0 or 1")
    return feats, mask


def item_paths(root: str | os.PathLike[str], modality: str, item_id: str, stride: float = 2.5) -> tuple[Path, Path]:
    """The feature and mask files of one id in the official layout under `root`."""
    top = Path(root) / (VIDEO_DIR if modality == "video" else music_dir(stride))
    features, mask = _KINDS[modality]
    return top / features / f"{item_id}.pt", top / mask / f"{item_id}.pt"


def read_official_item(
    root: str | os.PathLike[str], modality: str, item_id: str, spec: FeatureSpec, stride: float = 2.5
) -> tuple[np.ndarray, np.ndarray]:
    """One id's tokens (float32 [max_tokens, dim], as released: padding rows included) and mask (bool) from the
    official layout under `root`, checked against `spec` like an import; raises `InputError` naming the file."""
    feature_path, mask_path = item_paths(root, modality, item_id, stride)
    for path in (feature_path, mask_path):
        if not path.is_file():
            raise InputError(path, "missing")
    feats, mask = _load_checked(feature_path, mask_path, spec)
    return feats.float().numpy(), mask.numpy() != 0


def _partial_path(out: Path) -> Path:
    return out.parent / f".{out.name}.partial"


def _open_partial(partial: Path, specs: dict[str, FeatureSpec]) -> FeatureStore:
    """Resume a partial import with the same specs, or start a fresh one."""
    if partial.exists():
        try:
            store = FeatureStore(partial)
            for name, spec in specs.items():
                spec.check_compatible(store.spec(name), what=str(partial))
            store.cleanup()
            return store
        except MgsvError:
            pass  # an unusable leftover (other stride, damaged): ours to replace
        if not partial.is_dir() or (not FeatureStore.exists(partial) and any(partial.iterdir())):
            raise OutputExistsError(f"{partial}: exists and is not a partial feature store; remove it")
        shutil.rmtree(partial)
    return FeatureStore.create(partial, specs)


def _existing_complete(out: Path, specs: dict[str, FeatureSpec], wanted: dict[str, list[str]]) -> FeatureStore | None:
    """The store at `out` if it already holds every wanted id with the same specs."""
    try:
        store = FeatureStore(out)
        for name, spec in specs.items():
            spec.check_compatible(store.spec(name), what=str(out))
            table = store.modality(name)
            if not all(i in table for i in wanted[name]):
                return None
        return store
    except MgsvError:
        return None


def import_official(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    csvs: Sequence[str | os.PathLike[str]] = (),
    stride: float = 2.5,
    force: bool = False,
    workers: int = 4,
    progress: Progress | None = None,
) -> ImportResult:
    """Convert the official `.pt` features under `src` into a feature store at `out`.

    With `csvs`, exactly the ids those CSVs name are imported and every one must have features; without, every
    id found is imported. Raises `ProblemsError` listing missing ids or bad files.
    """
    started = time.perf_counter()
    src, out = Path(src), Path(out)
    specs = official_specs(stride)
    folders = {
        "video": src / VIDEO_DIR,
        "music": src / music_dir(stride),
    }
    _check_layout(src, folders, stride)

    available: dict[str, set[str]] = {}
    unpaired: dict[str, tuple[set[str], set[str]]] = {}
    for name, top in folders.items():
        feats, masks = (_list_ids(top / sub) for sub in _KINDS[name])
        available[name] = feats & masks
        unpaired[name] = (feats - masks, masks - feats)
    if csvs:
        video_ids, music_ids = read_csv_ids([Path(c) for c in csvs])
        wanted = {"video": video_ids, "music": music_ids}
    else:
        wanted = {name: sorted(ids | unpaired[name][0] | unpaired[name][1]) for name, ids in available.items()}

    problems: list[str] = []
    for name, ids in wanted.items():
        feat_dir, mask_dir = (folders[name] / sub for sub in _KINDS[name])
        no_mask, no_feats = unpaired[name]
        for i in ids:
            if i in no_mask:
                problems.append(f"{mask_dir / (i + '.pt')}: missing (its features exist)")
            elif i in no_feats:
                problems.append(f"{feat_dir / (i + '.pt')}: missing (its mask exists)")
            elif i not in available[name]:
                problems.append(f"{name} id {i!r}: no {folders[name].name}/{_KINDS[name][0]}/{i}.pt")
    if problems:
        raise ProblemsError(src, problems, limit=SHOWN_PROBLEMS)
    ignored = {name: len(available[name]) - len(set(wanted[name])) for name in wanted}

    if out.exists() and not force:
        done = _existing_complete(out, specs, wanted)
        if done is None:
            raise OutputExistsError(f"{out}: already exists; use `force` to replace it")
        counts = {name: len(done.modality(name)) for name in specs}
        return ImportResult(
            out,
            counts,
            {n: 0 for n in specs},
            ignored,
            time.perf_counter() - started,
            True,
            {n: s.fingerprint() for n, s in specs.items()},
        )

    partial = _partial_path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    store = _open_partial(partial, specs)
    converted: dict[str, int] = {}
    for name in ("video", "music"):
        feat_dir, mask_dir = (folders[name] / sub for sub in _KINDS[name])
        converted[name] = _convert(store, name, wanted[name], feat_dir, mask_dir, workers, progress, problems)
    if problems:
        raise ProblemsError(src, problems, limit=SHOWN_PROBLEMS)
    counts = store.verify()
    _swap_into_place(partial, out)
    return ImportResult(
        out,
        counts,
        converted,
        ignored,
        time.perf_counter() - started,
        False,
        {n: s.fingerprint() for n, s in specs.items()},
    )


def _check_layout(src: Path, folders: dict[str, Path], stride: float) -> None:
    if not src.is_dir():
        raise InputError(src, "official feature folder not found")
    missing = [str(top / sub) for name, top in folders.items() for sub in _KINDS[name] if not (top / sub).is_dir()]
    if missing:
        hint = ""
        others = [f"{s:g}" for s, d in MUSIC_DIRS.items() if s != float(stride) and (src / d).is_dir()]
        if others:
            hint = f" (music features exist for stride {', '.join(others)}: pass `stride`)"
        elif find_layout_root(src, stride) not in (None, src):
            hint = f" (the layout is in {find_layout_root(src, stride)})"
        raise InputError(src, f"not the official feature layout: missing {', '.join(missing)}{hint}")


def _convert(
    store: FeatureStore,
    name: str,
    ids: Iterable[str],
    feat_dir: Path,
    mask_dir: Path,
    workers: int,
    progress: Progress | None,
    problems: list[str],
) -> int:
    """Convert one modality; bad files are appended to `problems`, good items are published as they go."""
    ids = list(ids)
    spec = store.spec(name)
    converted = 0
    with store.writer(name, flush_every=4096) as writer:
        todo = [i for i in ids if i not in writer]
        done = len(ids) - len(todo)
        if progress:
            progress(name, done, len(ids))

        def load(item_id: str) -> tuple[Any, Any] | str:
            return _load_item(feat_dir / f"{item_id}.pt", mask_dir / f"{item_id}.pt", spec)

        # torch.load is file I/O plus unpickling; a few threads hide the I/O latency. Chunks bound the memory held
        # by loaded-but-not-yet-stored items (Executor.map would otherwise queue every result).
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for first in range(0, len(todo), _CHUNK):
                chunk = todo[first : first + _CHUNK]
                for item_id, loaded in zip(chunk, pool.map(load, chunk), strict=True):
                    if isinstance(loaded, str):
                        problems.append(loaded)
                    else:
                        try:
                            writer.add(item_id, *loaded)
                            converted += 1
                        except InputError as exc:
                            problems.append(f"{feat_dir / (item_id + '.pt')}: {exc.problem}")
                    done += 1
                    if progress:
                        progress(name, done, len(ids))
    return converted


def _swap_into_place(partial: Path, out: Path) -> None:
    """Rename the finished store to `out`, replacing an old one only after the new one is in place."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(partial, out)
    if old is None:
        return
    if old.is_dir():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink()
