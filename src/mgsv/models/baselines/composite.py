"""Composite systems: one model ranks the tracks, another detects the moment on each top-k track (MsG).

The MGSV paper's MVPt+/UVCOM+ is `CompositeModel(ranker=MVPt+, grounder=UVCOM+)`: it exposes the model interface
the evaluation protocol uses (`encode_video`, `encode_music`, `relevance`, `detect`), each encoding holding both
models' encodings, so SmG, V2MR and MsG (detection on each query's top-k tracks) run unchanged. Users build it from
two trained checkpoints: `mgsv eval --ranker RUN_A --grounder RUN_B` (or `load_composite` in Python).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from mgsv.models.contract import Capabilities, CapabilityError, capabilities_of, model_name


@dataclass
class CompositeEncoding:
    """The ranker's and the grounder's encodings of the same videos (or tracks)."""

    ranker: Any
    grounder: Any

    def __len__(self) -> int:
        return len(self.ranker)

    def select(self, index: Tensor | list[int]) -> CompositeEncoding:
        """Some items, in the given order."""
        return CompositeEncoding(self.ranker.select(index), self.grounder.select(index))

    @staticmethod
    def concat(parts: list[CompositeEncoding]) -> CompositeEncoding:
        """Encodings of several batches as one."""
        return CompositeEncoding(_concat([p.ranker for p in parts]), _concat([p.grounder for p in parts]))


def _concat(parts: list[Any]) -> Any:
    """Concatenate encodings of any model (their class provides `concat`)."""
    return type(parts[0]).concat(parts)


class CompositeModel(nn.Module):
    """Ranking from `ranker`, moments from `grounder`; evaluation only (each part is trained on its own)."""

    preset_name = "composite"
    capabilities = Capabilities(ranks=True, grounds=True)

    def __init__(self, ranker: nn.Module, grounder: nn.Module, name: str | None = None) -> None:
        super().__init__()
        if not capabilities_of(ranker).ranks:
            raise CapabilityError(f"the ranker ({model_name(ranker)}) cannot rank tracks: it has no relevance score")
        if not capabilities_of(grounder).grounds:
            raise CapabilityError(f"the grounder ({model_name(grounder)}) cannot detect moments: it has no detect()")
        self.ranker = ranker
        self.grounder = grounder
        self.name = name or f"{model_name(ranker)}/{model_name(grounder)}"

    def encode_video(self, frame_feats: Tensor, frame_mask: Tensor) -> CompositeEncoding:
        """Both models' video encodings."""
        return CompositeEncoding(self.ranker.encode_video(frame_feats, frame_mask),
                                 self.grounder.encode_video(frame_feats, frame_mask))

    def encode_music(self, segment_feats: Tensor, segment_mask: Tensor) -> CompositeEncoding:
        """Both models' track encodings."""
        return CompositeEncoding(self.ranker.encode_music(segment_feats, segment_mask),
                                 self.grounder.encode_music(segment_feats, segment_mask))

    def relevance(self, video: CompositeEncoding, music: CompositeEncoding) -> Tensor:
        """The ranker's scores [B videos, M tracks]."""
        return self.ranker.relevance(video.ranker, music.ranker)

    def detect(self, video: CompositeEncoding, music: CompositeEncoding) -> Any:
        """The grounder's moments for aligned pairs."""
        return self.grounder.detect(video.grounder, music.grounder)


def load_composite(ranker: str | os.PathLike[str], grounder: str | os.PathLike[str],
                   map_location: str | torch.device = "cpu") -> tuple[CompositeModel, list[Any]]:
    """A CompositeModel from two checkpoint folders; returns it and both `CheckpointInfo`s (ranker first)."""
    from mgsv.models.checkpoint import load_checkpoint

    ranker_model, ranker_info = load_checkpoint(ranker, map_location=map_location)
    grounder_model, grounder_info = load_checkpoint(grounder, map_location=map_location)
    if not capabilities_of(ranker_model).ranks:
        raise CapabilityError(f"{ranker}: preset {ranker_info.preset!r} cannot rank tracks (grounding only); "
                              "pass a retrieval model (e.g. an mvpt+ run) as `ranker`")
    if not capabilities_of(grounder_model).grounds:
        raise CapabilityError(f"{grounder}: preset {grounder_info.preset!r} cannot detect moments (retrieval only); "
                              "pass a grounding model (e.g. a uvcom+ run) as `grounder`")
    name = f"{ranker_info.preset}/{grounder_info.preset}"
    return CompositeModel(ranker_model, grounder_model, name).eval(), [ranker_info, grounder_info]
