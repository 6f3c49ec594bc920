"""`mgsv extract`: video and music files -> CLIP / AST features in a feature store (the `mgsv data import` format).

For each modality the run is planned before anything is encoded:

1. Every file is hashed (SHA-256 of its bytes) and given an id: its file stem (so `113722188340.mp4` matches the
   CSV's video_id) or, with `ids="hash"`, the first 16 hex digits of its hash.
2. Files whose ids collide with different content are refused, naming all of them (which one the annotations
   mean cannot be guessed); files with the same content under the same id are one item.
3. An id the store already holds is skipped when its recorded content hash is the file's (or when no hash was
   recorded: an import, or a run killed between publishing a shard and saving the index); with another hash it is
   refused. A file whose content is already stored under another id is not encoded again: its stored features are
   copied under the new id.
4. The rest is decoded (one file ahead, in a thread) and encoded; items are published in shards of `flush_every`
   and the content index (`content-index.json` in the store folder) is saved after each shard, so a killed run
   loses at most one shard's work and a re-run resumes.

A bad file never stops the batch: its problem is collected and reported at the end (`ExtractReport.failures`).
The store stays consistent whatever happens (see `mgsv.features.store`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mgsv.defaults import (
    DEFAULT_AST_ID,
    DEFAULT_CLIP_ID,
    MUSIC_HORIZON_S,
    OFFICIAL_CHANNEL,
    OFFICIAL_FRAME_TIMES,
    OFFICIAL_RESAMPLER,
)
from mgsv.encoders.inputs import decode_video, encode_track, encode_video
from mgsv.errors import InputError, MgsvError, OptionError, SpecMismatchError
from mgsv.extract.hashing import ContentIndex
from mgsv.extract.plan import IdScheme, ModalityReport, Planned, Progress, hash_files, plan_items, store_copies
from mgsv.features.spec import FeatureSpec, decode_options
from mgsv.features.store import FeatureStore
from mgsv.files.discover import Discovered, find_media
from mgsv.files.prefetch import prefetched
from mgsv.files.problems import Problem, problem_for
from mgsv.media.tracks import decode_track

if TYPE_CHECKING:
    from mgsv.encoders.ast import AstMusicEncoder
    from mgsv.encoders.clip import ClipFrameEncoder

log = logging.getLogger(__name__)

INDEX_FILE = "content-index.json"
DEFAULT_FLUSH_EVERY = 16  # items per published shard: bounds the work a killed run loses
ENGINES = ("serial", "ray")


@dataclass
class ExtractReport:
    """The result of `extract_features`."""

    store: Path
    modalities: dict[str, ModalityReport]
    input_problems: list[Problem]  # inputs that are not files or folders we can read
    seconds: float = 0.0

    @property
    def failures(self) -> list[Problem]:
        """Every input or file that could not be used."""
        return self.input_problems + [p for r in self.modalities.values() for p in r.failures]

    @property
    def ok(self) -> bool:
        """True if nothing failed."""
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {
            "store": str(self.store),
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "modalities": {name: report.to_dict() for name, report in self.modalities.items()},
            "input_problems": [p.to_dict() for p in self.input_problems],
        }


@dataclass
class EncoderOptions:
    """Which encoders to load and how (see `mgsv.encoders`; the ids decide the feature specs)."""

    clip: str = DEFAULT_CLIP_ID
    ast: str = DEFAULT_AST_ID
    clip_encoder_id: str | None = None
    ast_encoder_id: str | None = None
    dtype: str = "auto"
    batch_size: int | None = None  # frames (CLIP) / windows (AST) per forward; None: each encoder's default
    device: str = "cpu"
    # Preprocessing choices the specs record (defaults: the official extraction's; docs/encoders.md).
    channel: int | str = OFFICIAL_CHANNEL
    resampler: str = OFFICIAL_RESAMPLER
    frame_times: str = OFFICIAL_FRAME_TIMES
    jpeg_quality: int | None = None

    def load_clip(self) -> ClipFrameEncoder:
        """The CLIP frame encoder these options describe."""
        from mgsv.encoders.clip import ClipFrameEncoder

        extra = {} if self.batch_size is None else {"batch_size": self.batch_size}
        return ClipFrameEncoder.from_pretrained(
            self.clip, device=self.device, dtype=self.dtype, encoder_id=self.clip_encoder_id,
            frame_times=self.frame_times, jpeg_quality=self.jpeg_quality, **extra,
        )

    def load_ast(self) -> AstMusicEncoder:
        """The AST music encoder these options describe."""
        from mgsv.encoders.ast import AstMusicEncoder

        extra = {} if self.batch_size is None else {"batch_size": self.batch_size}
        return AstMusicEncoder.from_pretrained(
            self.ast, device=self.device, dtype=self.dtype, encoder_id=self.ast_encoder_id, channel=self.channel,
            resampler=self.resampler, **extra,
        )


def open_or_create_store(root: Path, specs: dict[str, FeatureSpec]) -> FeatureStore:
    """The store at `root`, created with `specs` if absent; an existing store must hold these modalities and specs."""
    if not FeatureStore.exists(root):
        return FeatureStore.create(root, specs)
    store = FeatureStore(root)
    for modality, spec in specs.items():
        if modality not in store.specs:
            raise SpecMismatchError(
                f"{root}: this store was created without {modality} features (it holds: "
                f"{', '.join(store.modalities)}); extract {modality} into a new store, or extract every modality "
                "into a new store in one run"
            )
        store.spec(modality).check_compatible(spec, what=f"{root} (store) vs the {modality} encoder")
    return store


def extract_features(
    store_dir: str | Path,
    videos: list[Path] | tuple[Path, ...] = (),
    music: list[Path] | tuple[Path, ...] = (),
    encoders: EncoderOptions | None = None,
    ids: IdScheme = "stem",
    window_start: float = 0.0,
    flush_every: int = DEFAULT_FLUSH_EVERY,
    progress: Progress | None = None,
    clip_encoder: ClipFrameEncoder | None = None,
    ast_encoder: AstMusicEncoder | None = None,
    engine: str = "serial",
    ray_address: str | None = None,
    encoder_loaders: dict[str, Callable[[], Any]] | None = None,
) -> ExtractReport:
    """Encode video and music files into the store at `store_dir` (see the module docstring).

    Encoders are loaded from `encoders` unless given ready-made. `window_start` picks the 50 s of longer videos.
    `engine="ray"` spreads the work over a Ray cluster (`mgsv.extract.ray_engine`; `ray_address` as for
    `ray.init`, None: the running session or a new local one); there `encoder_loaders` ("video" / "music":
    picklable callables run in each worker) replace the encoders of `encoders`, and `flush_every` is the
    encoding batch (one part file, then one store shard, per batch).
    """
    started = time.perf_counter()
    if flush_every < 1:
        raise InputError("flush_every", f"must be at least 1, got {flush_every}")
    if ids not in ("stem", "hash"):
        raise OptionError("ids", f"must be 'stem' or 'hash', got {ids!r}")
    if engine not in ENGINES:
        raise OptionError("engine", f"must be one of {', '.join(ENGINES)}, got {engine!r}")
    store_dir = Path(store_dir)
    encoders = encoders or EncoderOptions()
    found = {"video": find_media(list(videos), "video"), "music": find_media(list(music), "music")}
    input_problems = [Problem(str(p), r) for d in found.values() for p, r in d.problems]
    wanted = [m for m in ("video", "music") if found[m].files]
    if not wanted:
        if input_problems:
            return ExtractReport(store_dir, {}, input_problems, time.perf_counter() - started)
        given = [str(p) for p in (*videos, *music)]
        raise InputError(", ".join(given) or "(no inputs)", "no video or music files found (give files or folders)")

    loaders = {"video": encoders.load_clip, "music": encoders.load_ast, **(encoder_loaders or {})}
    ready = {"video": clip_encoder, "music": ast_encoder}

    def driver_encoder(modality: str) -> Any:
        if ready[modality] is not None:
            return ready[modality]
        if engine == "ray":
            if encoder_loaders and modality in encoder_loaders:
                return encoder_loaders[modality]()
            # The Ray driver needs the spec only: its copy of the encoder runs on the CPU and is dropped after.
            cpu = dataclasses.replace(encoders, device="cpu")
            return cpu.load_clip() if modality == "video" else cpu.load_ast()
        return loaders[modality]()

    loaded = {modality: driver_encoder(modality) for modality in wanted}
    store = open_or_create_store(store_dir, {m: loaded[m].spec for m in wanted})
    index = ContentIndex(store_dir / INDEX_FILE)

    reports = {}
    if engine == "ray":
        from mgsv.extract.ray_engine import connect, extract_modality_on_ray

        loaded.clear()
        connect(ray_address)
    for modality in wanted:
        report = ModalityReport(found=len(found[modality].files))
        reports[modality] = report
        if engine == "ray":
            extract_modality_on_ray(store, index, modality, found[modality], loaders[modality], ids, window_start,
                                    flush_every, report, progress, encoders.device)  # fmt: skip
        else:
            _extract_modality(store, index, modality, found[modality], loaded[modality], ids, window_start,
                              flush_every, report, progress)  # fmt: skip
    return ExtractReport(store_dir, reports, input_problems, time.perf_counter() - started)


def _extract_modality(
    store: FeatureStore,
    index: ContentIndex,
    modality: str,
    discovered: Discovered,
    encoder: Any,
    ids: IdScheme,
    window_start: float,
    flush_every: int,
    report: ModalityReport,
    progress: Progress | None,
) -> None:
    todo = plan_items(hash_files(discovered.files, report), store.modality(modality), index, modality, ids, report)
    index.save()  # adopted ids
    to_encode = [p for p in todo if p.copy_from is None]
    copies = [p for p in todo if p.copy_from is not None]
    total = len(todo)
    done = 0
    if progress:
        progress(modality, 0, total)

    options = decode_options(store.spec(modality))  # decode as the store's spec records (= the encoder's)

    def decode(planned: Planned) -> Any:
        if modality == "video":
            return decode_video(planned.path, window_start, **options)
        return decode_track(planned.path, **options)

    # A large flush_every for the writer itself: shards are published by `commit` below, followed by the index.
    with store.writer(modality, flush_every=1 << 30) as writer:
        pending: list[Planned] = []

        def commit() -> None:
            writer.flush()
            for planned in pending:
                index.record(modality, planned.item_id, planned.digest, planned.path.resolve())
            if pending:
                index.save()
            pending.clear()

        for fetched in prefetched(decode, to_encode):
            planned = fetched.item
            try:
                if fetched.error is not None:
                    raise fetched.error
                if modality == "video":
                    tokens, mask = encode_video(fetched.result, encoder)
                    _warn_long_video(fetched.result, window_start, report)
                else:
                    tokens, mask = encode_track(fetched.result, encoder)
                    if fetched.result.beyond_horizon:
                        report.warnings.append(
                            Problem(
                                str(planned.path),
                                (
                                    f"track is {fetched.result.duration:.1f} s long: its features cover the first "
                                    f"{MUSIC_HORIZON_S:g} s (the model's horizon)"
                                ),
                            )
                        )
                writer.add(planned.item_id, tokens, mask)
            except MgsvError as exc:
                report.failures.append(problem_for(planned.path, exc))
            else:
                pending.append(planned)
                report.encoded += 1
            done += 1
            if progress:
                progress(modality, done, total)
            if len(pending) >= flush_every:
                commit()
        commit()
    # Copies go last: their source may be an item encoded just now.
    store_copies(store, index, modality, copies, report, progress, done, total)


def _warn_long_video(frames: Any, window_start: float, report: ModalityReport) -> None:
    if frames.truncated:
        last = frames.timestamps[-1]
        report.warnings.append(
            Problem(
                str(frames.path),
                (
                    f"video is {frames.duration:.1f} s long: features cover seconds {window_start:g}-{last + 1:g} "
                    "(50 frames at 1 fps; `window_start` picks another start)"
                ),
            )
        )
