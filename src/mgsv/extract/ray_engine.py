"""`mgsv extract --engine ray`: the extraction of `mgsv.extract.pipeline` spread over a Ray cluster (Ray Data).

Per modality:

1. The driver lists the files; Ray tasks hash them where they live (the inputs and the store must be on a
   filesystem every node sees, e.g. NFS or a shared mount).
2. The driver plans exactly as the serial engine does (`plan_items`: ids, collisions, what is stored, copies).
3. Ray Data decodes the files in CPU tasks and encodes them in batches on an actor pool (one encoder per actor,
   loaded once; one GPU per actor with `device="cuda"`). Each batch is written by its actor as a *part* file,
   `STORE/.ray-parts/<modality>/part-<hash of the batch's ids>.npz` (temporary name, fsync, rename): a batch that
   Ray retries after a lost worker rewrites the same part instead of adding another.
4. The driver merges the parts: the items of a part that the store does not hold yet are published as one store
   shard (atomic), their content hashes recorded, then the part file is deleted.

Ray restarts a killed worker and retries its task (tasks and actor-pool actors retry system failures by
default); a bad file is a per-item failure in the report, as in the serial engine. If the job itself fails, the
parts written so far stay: a re-run merges them first, so their items are neither lost nor encoded twice, and
every item ends up in the store exactly once (the merge skips ids the store already holds).
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mgsv.atomic_io import TEMP_PREFIX, atomic_writer
from mgsv.defaults import MUSIC_HORIZON_S
from mgsv.errors import MgsvError
from mgsv.extract.hashing import ContentIndex
from mgsv.extract.plan import ModalityReport, plan_items, store_copies
from mgsv.features.spec import decode_options
from mgsv.features.store import FeatureStore
from mgsv.files.discover import Discovered
from mgsv.files.hashing import content_hash
from mgsv.files.problems import Problem, problem_for

log = logging.getLogger(__name__)

PARTS_DIR = ".ray-parts"
EncoderLoader = Callable[[], Any]  # picklable; returns a ClipFrameEncoder / AstMusicEncoder inside a Ray worker


class RayJobError(MgsvError):
    """The Ray job failed (not a bad input file); the work it finished is kept for a re-run."""


def require_ray() -> Any:
    """Import ray, or explain which extra installs it."""
    try:
        import ray
        import ray.data  # Ray Data comes with ray[data]; a bare ray lacks its dependencies
    except ImportError as exc:
        raise MgsvError(f"`engine` ray needs Ray Data: pip install 'mgsv[ray]' ({exc})") from exc
    return ray


def connect(address: str | None) -> Any:
    """Ray, initialised: the running session if any, else `ray.init(address)` (None: start a local instance)."""
    ray = require_ray()
    if not ray.is_initialized():
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise MgsvError(f"cannot connect to Ray at {address or 'a new local instance'}: {exc}") from exc
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # per-dataset INFO lines would drown the report
    return ray


# ------------------------------------------------------------------------------------------------------ workers


def _hash_row(row: dict[str, Any]) -> dict[str, Any]:
    """A Ray task: the content hash of one file, or why it cannot be read."""
    try:
        return {"path": row["path"], "digest": content_hash(row["path"]), "error": ""}
    except MgsvError as exc:
        return {"path": row["path"], "digest": "", "error": problem_for(row["path"], exc).reason}


def _to_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _from_bytes(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


@dataclass(frozen=True)
class _Decoder:
    """A Ray task: decode one planned file into what its encoder takes (samples or frames), or a failure."""

    modality: str
    window_start: float
    options: dict[str, Any]  # decode options of the store's spec (`mgsv.features.spec.decode_options`)

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        from mgsv.media.decode import read_video_frames
        from mgsv.media.tracks import decode_track

        out = {**row, "payload": b"", "error": "", "warning": ""}
        try:
            if self.modality == "video":
                frames = read_video_frames(row["path"], window_start=self.window_start, **self.options)
                out["payload"] = _to_bytes(frames.frames)
                if frames.truncated:
                    out["warning"] = (
                        f"video is {frames.duration:.1f} s long: features cover seconds {self.window_start:g}-"
                        f"{frames.timestamps[-1] + 1:g} (50 frames at 1 fps; `window_start` picks another start)"
                    )
            else:
                track = decode_track(row["path"], **self.options)
                out["payload"] = _to_bytes(track.samples)
                if track.beyond_horizon:
                    out["warning"] = (
                        f"track is {track.duration:.1f} s long: its features cover the first {MUSIC_HORIZON_S:g} s "
                        "(the model's horizon)"
                    )
        except MgsvError as exc:
            out["error"] = problem_for(row["path"], exc).reason
        except OSError as exc:
            out["error"] = f"cannot read: {exc.strerror or exc}"
        return out


class _Encoder:
    """A Ray actor: encodes batches of decoded files and writes each batch as one part file."""

    def __init__(self, modality: str, load: EncoderLoader, parts: str, threads: int | None) -> None:
        if threads:
            import torch

            torch.set_num_threads(threads)  # CPU actors: as many threads as CPUs Ray gave this actor
        self.modality = modality
        self.encoder = load()
        self.parts = Path(parts)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from mgsv.media.tracks import SAMPLE_RATE

        done: list[tuple[str, str, str, np.ndarray, np.ndarray]] = []
        errors = list(batch["error"])
        for i, (item_id, path, digest) in enumerate(zip(batch["item_id"], batch["path"], batch["digest"], strict=True)):
            if errors[i]:
                continue
            payload = _from_bytes(batch["payload"][i])
            try:
                if self.modality == "video":
                    tokens = self.encoder.encode(payload, source=str(path))
                    mask = np.ones(len(tokens), dtype=bool)
                else:
                    tokens, mask = self.encoder.encode(payload, sample_rate=SAMPLE_RATE, source=str(path))
            except MgsvError as exc:
                errors[i] = problem_for(path, exc).reason
                continue
            done.append((str(item_id), str(path), str(digest), np.asarray(tokens, np.float32), np.asarray(mask, bool)))
        if done:
            write_part(self.parts, done)
        return {"item_id": batch["item_id"], "path": batch["path"], "error": np.array(errors, dtype=object),
                "warning": batch["warning"]}  # fmt: skip


# ------------------------------------------------------------------------------------------------------ parts


def write_part(folder: Path, items: list[tuple[str, str, str, np.ndarray, np.ndarray]]) -> Path:
    """Write encoded items (id, path, content hash, tokens [L, D], mask [L]) as one part file, atomically.

    The name hashes the ids, so the same batch written again (a retried task) replaces its earlier copy.
    """
    folder.mkdir(parents=True, exist_ok=True)
    name = hashlib.sha256("\n".join(sorted(i[0] for i in items)).encode()).hexdigest()[:32]
    target = folder / f"part-{name}.npz"
    with atomic_writer(target, "wb") as handle:
        np.savez(
            handle,
            ids=np.array([i[0] for i in items]),
            paths=np.array([i[1] for i in items]),
            digests=np.array([i[2] for i in items]),
            lengths=np.array([len(i[3]) for i in items], dtype=np.int64),
            tokens=np.concatenate([i[3] for i in items]).astype(np.float16),
            masks=np.concatenate([i[4] for i in items]),
        )
    return target


def merge_parts(store: FeatureStore, index: ContentIndex, modality: str) -> list[str]:
    """Publish every part of a modality into the store (items it does not hold yet), then delete the part.

    One store shard per part; the content index is saved after each. Returns the ids published.
    """
    folder = store.root / PARTS_DIR / modality
    if not folder.is_dir():
        return []
    published: list[str] = []
    for leftover in folder.glob(f"{TEMP_PREFIX}*"):
        leftover.unlink(missing_ok=True)  # a part whose writer died before its rename
    for part in sorted(folder.glob("part-*.npz")):
        with np.load(part, allow_pickle=False) as data:
            ids, paths, digests = data["ids"].tolist(), data["paths"].tolist(), data["digests"].tolist()
            lengths, tokens, masks = data["lengths"], data["tokens"], data["masks"]
        ends = np.cumsum(lengths)
        added = []
        with store.writer(modality, flush_every=1 << 30) as writer:
            for number, item_id in enumerate(ids):
                if item_id in writer:
                    continue  # merged before (a re-run after a killed merge), or in two parts of a retried batch
                rows = slice(int(ends[number] - lengths[number]), int(ends[number]))
                writer.add(item_id, tokens[rows], masks[rows])
                added.append(number)
        for number in added:
            index.record(modality, ids[number], digests[number], Path(paths[number]).resolve())
        index.save()
        part.unlink()
        published += [ids[number] for number in added]
    return published


# ------------------------------------------------------------------------------------------------------ the run


def hash_files_on_ray(paths: list[Path], report: ModalityReport) -> list[tuple[Path, str]]:
    """Content hashes computed by Ray tasks; unreadable files become failures in `report`."""
    import ray.data

    if not paths:
        return []
    rows = ray.data.from_items([{"path": str(p)} for p in paths]).map(_hash_row).take_all()
    by_path = {row["path"]: row for row in rows}
    hashed = []
    for path in paths:
        row = by_path[str(path)]
        if row["error"]:
            report.failures.append(Problem(str(path), row["error"]))
        else:
            hashed.append((path, row["digest"]))
    return hashed


def extract_modality_on_ray(
    store: FeatureStore,
    index: ContentIndex,
    modality: str,
    discovered: Discovered,
    load: EncoderLoader,
    ids: str,
    window_start: float,
    batch_size: int,
    report: ModalityReport,
    progress: Callable[[str, int, int], None] | None,
    device: str,
) -> None:
    """One modality of `extract_features` with Ray (see the module docstring); fills `report`."""
    import ray
    import ray.data

    merge_parts(store, index, modality)  # what a previous run finished but did not merge
    hashed = hash_files_on_ray(discovered.files, report)
    todo = plan_items(hashed, store.modality(modality), index, modality, ids, report)
    index.save()
    to_encode = [p for p in todo if p.copy_from is None]
    copies = [p for p in todo if p.copy_from is not None]
    total, done = len(todo), 0
    if progress:
        progress(modality, 0, total)
    if to_encode:
        gpus = int(ray.cluster_resources().get("GPU", 0))
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        # "auto": the cluster's GPUs when it has any (each actor's encoder then resolves "auto" to its own GPU).
        if device.startswith("cuda") or (device == "auto" and gpus > 0):
            if gpus < 1:
                raise MgsvError("`device` cuda with `engine` ray: the Ray cluster has no GPU")
            actors, actor_resources, threads = gpus, {"num_gpus": 1}, None
        else:
            # CPU encoding: one single-threaded actor per CPU but one, which is left to the decoding tasks.
            actors, actor_resources, threads = max(1, cpus - 1), {"num_cpus": 1}, 1
        rows = [{"item_id": p.item_id, "path": str(p.path), "digest": p.digest} for p in to_encode]
        parts = store.root / PARTS_DIR / modality
        dataset = (
            ray.data.from_items(rows)
            .map(_Decoder(modality, window_start, decode_options(store.spec(modality))), num_cpus=1)
            .map_batches(_Encoder, fn_constructor_kwargs={"modality": modality, "load": load, "parts": str(parts),
                                                          "threads": threads},
                         batch_size=batch_size, batch_format="numpy",
                         compute=ray.data.ActorPoolStrategy(size=actors), **actor_resources)
        )  # fmt: skip
        try:
            for row in dataset.iter_rows():
                path = str(row["path"])
                if row["error"]:
                    report.failures.append(Problem(path, str(row["error"])))
                else:
                    report.encoded += 1
                    if row["warning"]:
                        report.warnings.append(Problem(path, str(row["warning"])))
                done += 1
                if progress:
                    progress(modality, done, total)
        except Exception as exc:  # the job, not a file, failed: keep what is done for a re-run
            merge_parts(store, index, modality)
            raise RayJobError(
                f"the Ray extraction of {modality} failed ({type(exc).__name__}: {exc}); the items encoded before "
                "the failure were stored, run the same command again to finish"
            ) from exc
    merge_parts(store, index, modality)
    store_copies(store, index, modality, copies, report, progress, done, total)
