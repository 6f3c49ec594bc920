"""What a model can do, declared: the contract between models and the code that evaluates, trains and searches.

Every model class states its `capabilities`; callers read them with `capabilities_of(model)` and call the methods
the matching protocol below promises, never a model's submodules:

- `Ranker` (`ranks`): scores every (video, track) pair, p_s [B videos, M tracks] (V2MR, the ranking half of MsG).
- `MomentDetector` (`grounds`): a moment for aligned (video i, track i) pairs (SmG, the moment half of MsG).
- `LibrarySearchable` (`searchable`): the model exports a compact per-track form that a music library stores on
  disk (`index_layout`, `index_entries`), scores a video against stored tracks from that form block by block
  (`index_scorer`), and rebuilds the tracks' encodings for detection (`index_encodings`). The library never needs
  to know what the arrays mean (docs/scale.md describes MaDe's form).

Every model encodes each side once (`encode_video`, `encode_music`); encodings are opaque to callers, which only use
`len`, `select(index)` and the class's `concat`. Two optional methods let batched work run faster without knowing
what an encoding holds (`mgsv.inference.batched.detect_pairs` uses them when present): `token_counts()`, the number
of valid tokens of each item (int64 [n]; pairs of similar total length are then detected together, so a batch pads
little), and `for_detection()`, the same items without what only ranking needs (so that selecting pairs for
detection does not copy it).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn

from mgsv.errors import MgsvError


class CapabilityError(MgsvError):
    """A model was asked for something it cannot do (e.g. ranking tracks with a grounding-only model)."""


@dataclass(frozen=True)
class Capabilities:
    """What a model can be asked for (see the module docstring)."""

    ranks: bool = False
    grounds: bool = False
    searchable: bool = False

    def __post_init__(self) -> None:
        if self.searchable and not (self.ranks and self.grounds):
            raise ValueError("a searchable model must both rank and ground")


def capabilities_of(model: Any) -> Capabilities:
    """The capabilities a model declares (a model that declares none can do nothing the protocols promise)."""
    declared = getattr(model, "capabilities", None)
    if isinstance(declared, Capabilities):
        return declared
    if isinstance(model, nn.parallel.DistributedDataParallel):
        return capabilities_of(model.module)
    return Capabilities()


def model_name(model: Any) -> str:
    """The preset a model was built from, or its class name."""
    return getattr(model, "preset_name", type(model).__name__)


@runtime_checkable
class Ranker(Protocol):
    """A model that scores (video, track) pairs."""

    def encode_video(self, frame_feats: Tensor, frame_mask: Tensor) -> Any: ...

    def encode_music(self, segment_feats: Tensor, segment_mask: Tensor) -> Any: ...

    def relevance(self, video: Any, music: Any) -> Tensor: ...


@runtime_checkable
class MomentDetector(Protocol):
    """A model that predicts a moment for aligned (video i, track i) pairs; `final_spans` of the result is [B, 2]."""

    def encode_video(self, frame_feats: Tensor, frame_mask: Tensor) -> Any: ...

    def encode_music(self, segment_feats: Tensor, segment_mask: Tensor) -> Any: ...

    def detect(self, video: Any, music: Any) -> Any: ...


@dataclass(frozen=True)
class IndexLayout:
    """The shape of a model's per-track index form.

    Per track the index stores `embedding` [dim] float32 (the query-independent part of the score, used to pick
    candidates) and, per token, `tokens` [L, dim] float16, `moments` [L, 2] float32 and `mask` [L] bool, plus
    `detection` [L, dim] float16 when `detection_tokens` is true.
    """

    dim: int
    detection_tokens: bool


class IndexScorer(Protocol):
    """Scores one encoded video against stored tracks, pooling their tokens block by block."""

    needs_tokens: bool  # False: the scores need only the tracks' embeddings

    def pool(self, tokens: Tensor, mask: Tensor) -> Tensor:
        """Pooled tokens [c, 1, dim] of a block of stored tracks (tokens [c, L, dim] float32, mask [c, L])."""
        ...

    def scores(self, embeddings: Tensor, pooled: Tensor | None) -> Tensor:
        """p_s [len(embeddings)] float32 from the tracks' embeddings [n, dim] and their pooled tokens [n, 1, dim]."""
        ...


@runtime_checkable
class LibrarySearchable(Protocol):
    """A model whose per-track work a music library stores once (see the module docstring)."""

    def index_layout(self) -> IndexLayout: ...

    def index_entries(self, music: Any) -> dict[str, np.ndarray]: ...

    def index_scorer(self, video: Any) -> IndexScorer: ...

    def index_encodings(self, entries: Mapping[str, Tensor]) -> Any: ...


def require(model: Any, *, ranks: bool = False, grounds: bool = False, searchable: bool = False,
            purpose: str = "this") -> None:
    """Raise CapabilityError naming what `model` lacks for `purpose`."""
    have = capabilities_of(model)
    name = model_name(model)
    if searchable and not have.searchable:
        raise CapabilityError(
            f"{purpose} needs a model a music library can index (preset made, made-paper or one of their "
            f"ablations); {name!r} has no per-track index form (evaluate it with mgsv eval)")
    if ranks and not have.ranks:
        raise CapabilityError(f"{purpose} needs a model that ranks tracks; {name!r} is grounding-only")
    if grounds and not have.grounds:
        raise CapabilityError(f"{purpose} needs a model that detects moments; {name!r} is retrieval-only")


def model_fingerprint(model: nn.Module) -> str:
    """A short hash of a model's preset, config and every weight: equal fingerprints compute equal encodings."""
    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    header = {
        "preset": model_name(model),
        "config": config.to_dict() if hasattr(config, "to_dict") else repr(config),
    }
    digest.update(json.dumps(header, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{value.dtype}:{list(value.shape)}".encode())
        if value.numel():
            digest.update(value.view(-1).view(torch.uint8).numpy().tobytes())  # raw bytes: works for bf16 too
    return digest.hexdigest()[:16]
