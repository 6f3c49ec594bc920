"""MVPt (McKee et al., "Language-Guided Music Recommendation for Video via Prompt Analogies", CVPR 2023): the video-
music retrieval model of that paper without its text branch, and MVPt+ (the MGSV paper's variant: mean pooling
instead of the CLS token).

A two-tower model: each modality is projected to d, gets a learned CLS token (MVPt) and a sinusoidal position
encoding, and goes through its own transformer encoder (2 post-norm layers); the track / video embedding is the CLS
output (MVPt) or the mean of the valid token outputs (MVPt+), through a linear head and L2-normalised. Relevance is
the cosine; training is the symmetric InfoNCE with a learnable temperature (init 0.07).

Retrieval only: no `detect`, so the evaluation reports V2MR and leaves SmG / MsG as not computed. Combine it with a
grounding model for MsG (`mgsv eval --ranker RUN --grounder RUN`, see `composite.py`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mgsv.models.baselines.common import (
    ConfigChecks,
    PostNormEncoderLayer,
    check_pairs,
    masked_mean,
)
from mgsv.models.contract import Capabilities
from mgsv.models.layers import TokenLayout, check_tokens, sinusoidal_table

POOLING_CHOICES = ("cls", "mean")


@dataclass
class MvptConfig(ConfigChecks):
    """MVPt's sizes (d 256, 8 heads, FFN 1024, 2 layers per tower) and its pooling."""

    video_dim: int = 512
    music_dim: int = 768
    dim: int = 256
    heads: int = 8
    ffn_dim: int = 1024
    layers: int = 2
    dropout: float = 0.1
    pooling: str = "cls"  # "cls": MVPt; "mean": MVPt+
    temperature_init: float = 0.07
    max_video_frames: int = 50
    max_segments: int = 96

    POSITIVE = ("video_dim", "music_dim", "dim", "heads", "ffn_dim", "layers", "max_video_frames", "max_segments")
    FRACTIONS = ("dropout",)
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"pooling": POOLING_CHOICES}

    def __post_init__(self) -> None:
        self.check()
        if not isinstance(self.temperature_init, (int, float)) or not self.temperature_init > 0:
            raise ValueError(f"invalid MvptConfig: temperature_init must be > 0, got {self.temperature_init!r}")


@dataclass
class EmbeddingEncoding:
    """One unit-norm embedding per video or track."""

    embedding: Tensor  # [B, d] float32

    def __len__(self) -> int:
        return self.embedding.shape[0]

    def select(self, index: Tensor | list[int]) -> EmbeddingEncoding:
        """Some items, in the given order."""
        index = torch.as_tensor(index, dtype=torch.long, device=self.embedding.device)
        return EmbeddingEncoding(self.embedding.index_select(0, index))

    @staticmethod
    def concat(parts: list[EmbeddingEncoding]) -> EmbeddingEncoding:
        """Encodings of several batches as one."""
        return EmbeddingEncoding(torch.cat([p.embedding for p in parts]))


@dataclass
class RetrievalOutput:
    """What MVPt's training forward returns: the [B, B] cosine matrix and the learnable log-scale."""

    similarity: Tensor
    logit_scale: Tensor


class Tower(nn.Module):
    """One modality: projection, [CLS], sinusoidal positions, post-norm encoder, pooling, linear head."""

    def __init__(self, input_dim: int, config: MvptConfig, max_len: int) -> None:
        super().__init__()
        d = config.dim
        self.pooling = config.pooling
        self.max_len = max_len
        self.proj = nn.Linear(input_dim, d)
        self.cls = nn.Parameter(torch.zeros(1, 1, d)) if config.pooling == "cls" else None
        self.register_buffer("pe", sinusoidal_table(max_len + 1, d), persistent=False)
        self.layers = nn.ModuleList(PostNormEncoderLayer(d, config.heads, config.ffn_dim, config.dropout)
                                    for _ in range(config.layers))
        self.head = nn.Linear(d, d)
        if self.cls is not None:
            nn.init.normal_(self.cls, std=0.02)

    def forward(self, feats: Tensor, mask: Tensor) -> Tensor:
        """feats [B, L, in] + bool mask -> unit-norm embedding [B, d] (float32)."""
        x = self.proj(feats.to(self.proj.weight.dtype))
        if self.cls is not None:
            x = torch.cat([self.cls.to(x.dtype).expand(len(x), -1, -1), x], 1)
            mask = torch.cat([mask.new_ones(len(mask), 1), mask], 1)
        x = x + self.pe[: x.shape[1]].to(x.dtype)
        layout = TokenLayout.from_mask(mask)
        rows = layout.pack(x)
        for layer in self.layers:
            rows = layer(rows, layout)
        tokens = layout.unpack(rows)
        pooled = tokens[:, 0] if self.cls is not None else masked_mean(tokens, mask)
        return F.normalize(self.head(pooled).float(), dim=-1)


class MVPt(nn.Module):
    """Two towers and a learnable temperature; `relevance` is the cosine of the two embeddings."""

    config_class = MvptConfig
    capabilities = Capabilities(ranks=True)

    def __init__(self, config: MvptConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or MvptConfig()
        self.video_tower = Tower(config.video_dim, config, config.max_video_frames)
        self.music_tower = Tower(config.music_dim, config, config.max_segments)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / config.temperature_init)))

    def encode_video(self, frame_feats: Tensor, frame_mask: Tensor) -> EmbeddingEncoding:
        """frame_feats [B, Lv, 512] + mask -> the video embedding."""
        mask = check_tokens(frame_feats, frame_mask, "frame_feats", self.config.video_dim,
                            self.config.max_video_frames)
        return EmbeddingEncoding(self.video_tower(frame_feats, mask))

    def encode_music(self, segment_feats: Tensor, segment_mask: Tensor) -> EmbeddingEncoding:
        """segment_feats [M, Lm, 768] + mask -> the track embedding."""
        mask = check_tokens(segment_feats, segment_mask, "segment_feats", self.config.music_dim,
                            self.config.max_segments)
        return EmbeddingEncoding(self.music_tower(segment_feats, mask))

    def relevance(self, video: EmbeddingEncoding, music: EmbeddingEncoding) -> Tensor:
        """Cosine [B videos, M tracks] (float32, also under a bf16 autocast: close scores must keep their order)."""
        with torch.autocast(video.embedding.device.type, enabled=False):
            return video.embedding.float() @ music.embedding.float().T

    def forward(self, frame_feats: Tensor, frame_mask: Tensor, segment_feats: Tensor,
                segment_mask: Tensor) -> RetrievalOutput:
        """Training pass over B aligned pairs: the [B, B] similarity of every video with every track."""
        video = self.encode_video(frame_feats, frame_mask)
        music = self.encode_music(segment_feats, segment_mask)
        check_pairs(video, music)
        return RetrievalOutput(self.relevance(video, music), self.logit_scale)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """`enhancement`: the two encoders; `matching`: the output heads and the temperature."""
        heads = [*self.video_tower.head.parameters(), *self.music_tower.head.parameters()]
        head_ids = {id(p) for p in heads}
        towers = [p for p in (*self.video_tower.parameters(), *self.music_tower.parameters())
                  if id(p) not in head_ids]
        return {"enhancement": towers, "matching": [*heads, self.logit_scale]}
