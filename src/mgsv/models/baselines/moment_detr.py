"""Moment-DETR (Lei et al., "Detecting Moments and Highlights in Videos via Natural Language Queries", NeurIPS 2021).

Adapted to MGSV as the MGSV paper states: the query video's CLIP frames take the place of the text query, the
track's AST segments the place of the video clips. Architecture (official `moment_detr/model.py`, defaults):
two-layer input projections per modality, a post-norm transformer encoder (2 layers) over concat(segments, frames)
with a normalised sine position embedding on the segments only (the query side gets none, `use_txt_pos=False`), a
DETR decoder (2 layers, self- and cross-attention) with 10 learned moment queries and zero content, then a span
MLP (sigmoid) and a foreground / background classifier on every layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mgsv.models.baselines.common import (
    DetrBaselineConfig,
    RankedDetection,
    TokenEncoding,
    check_pairs,
    encode_concat,
)
from mgsv.models.baselines.grounding import DetrGroundingModel
from mgsv.models.layers import DetrDecoder, DetrEncoder, reset_detr_parameters, sine_position_embedding


@dataclass
class MomentDetrConfig(DetrBaselineConfig):
    """Moment-DETR's sizes (official defaults: d 256, 8 heads, FFN 1024, 2 + 2 layers, 10 queries)."""


class MomentDETR(DetrGroundingModel):
    """Moment-DETR: concat(segments, frames) -> encoder -> decoder with learned queries -> span / class heads."""

    config_class = MomentDetrConfig

    def __init__(self, config: MomentDetrConfig | None = None) -> None:
        config = config or MomentDetrConfig()
        super().__init__(config)
        d = config.dim
        self.encoder = DetrEncoder(d, config.heads, config.ffn_dim, config.dropout, config.encoder_layers)
        self.decoder = DetrDecoder(d, config.heads, config.ffn_dim, config.dropout, config.decoder_layers,
                                   self_attention=True)
        self.query_embed = nn.Embedding(config.num_queries, d)
        reset_detr_parameters(self.encoder)
        reset_detr_parameters(self.decoder)

    def detect(self, video: TokenEncoding, music: TokenEncoding) -> RankedDetection:
        """Moments for aligned pairs (video i in track i)."""
        check_pairs(video, music)
        d = self.config.dim
        music_pos = sine_position_embedding(music.mask, d).to(music.tokens.dtype)
        video_pos = torch.zeros_like(video.tokens)
        music_mem, video_mem = encode_concat(self.encoder, [(music.tokens, music.mask, music_pos),
                                                            (video.tokens, video.mask, video_pos)])
        memory = torch.cat([music_mem, video_mem], 1)
        pos = torch.cat([music_pos, video_pos], 1).to(memory.dtype)
        mask = torch.cat([music.mask, video.mask], 1)
        target = memory.new_zeros(len(video), self.config.num_queries, d)
        hidden = self.decoder(target, self.query_embed.weight[None].to(memory.dtype), memory + pos, memory, mask)
        return self._heads(hidden)

    def omitted_parameters(self) -> dict[str, int]:
        """Saliency head (saliency loss) and the unused trainable query-position table (`use_txt_pos=False`)."""
        d = self.config.dim
        return {"saliency_proj": d + 1, "txt_position_embed (32 positions + LayerNorm)": 32 * d + 2 * d}
