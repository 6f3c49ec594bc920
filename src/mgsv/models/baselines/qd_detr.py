"""QD-DETR (Moon et al., "Query-Dependent Video Representation for Moment Retrieval and Highlight Detection", CVPR
2023) and QD-DETR+ (the MGSV paper's variant without cross-attention in the multimodal fusion).

Architecture (official `qd_detr/model.py`, `qd_detr/transformer.py`, defaults): input projections; a learned global
token (and its position) in front of the clip tokens; the **text-to-video cross-attention encoder** (2 layers:
segments attend to the query video's frames); a self-attention encoder (2 layers) over [global, segments]; an
anchor-based decoder (DAB-DETR, 2 layers, 10 learned anchors) over the segment memory; span offsets added to the
anchors in logit space.

QD-DETR+ drops the cross-attention encoder; the frames then reach the segments through the self-attention encoder,
which runs over the concatenation [global, segments, frames] (concat fusion, as MaDe), and the decoder reads the
segment part of its output as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mgsv.models.baselines.anchor_decoder import AnchorDecoder
from mgsv.models.baselines.common import (
    CrossAttentionEncoder,
    DetrBaselineConfig,
    RankedDetection,
    TokenEncoding,
    check_pairs,
    encode_concat,
    mlp_parameters,
    xavier_init,
    zero_last_layer,
)
from mgsv.models.baselines.grounding import DetrGroundingModel
from mgsv.models.layers import MLP, DetrEncoder, sine_position_embedding


@dataclass
class QdDetrConfig(DetrBaselineConfig):
    """QD-DETR's sizes; `cross_attention` false gives QD-DETR+."""

    cross_attention: bool = True

    FLAGS = ("cross_attention",)


class QDDETR(DetrGroundingModel):
    """QD-DETR: [cross-attention fusion] -> SA encoder with a global token -> anchor decoder -> heads."""

    config_class = QdDetrConfig

    def __init__(self, config: QdDetrConfig | None = None) -> None:
        config = config or QdDetrConfig()
        super().__init__(config)
        d = config.dim
        self.global_token = nn.Parameter(torch.randn(d))
        self.global_pos = nn.Parameter(torch.randn(d))
        self.cross_encoder = (CrossAttentionEncoder(d, config.heads, config.ffn_dim, config.dropout,
                                                    config.encoder_layers) if config.cross_attention else None)
        self.encoder = DetrEncoder(d, config.heads, config.ffn_dim, config.dropout, config.encoder_layers)
        self.decoder = AnchorDecoder(d, config.heads, config.ffn_dim, config.dropout, config.decoder_layers,
                                     sine_dim=d // 2)
        self.refine_head = MLP(d, d, 2, 3)  # the decoder's bbox_embed (iterative anchor update)
        self.anchor_embed = nn.Embedding(config.num_queries, 2)  # anchors before the sigmoid
        xavier_init([m for m in (self.cross_encoder, self.encoder, self.decoder, self.refine_head) if m is not None])
        zero_last_layer(self.refine_head)

    def fuse(self, video: TokenEncoding, music: TokenEncoding) -> tuple[torch.Tensor, torch.Tensor]:
        """The segment memory the decoder reads, and its position embedding: [B, Lm, d] each."""
        d, batch = self.config.dim, len(music)
        music_pos = sine_position_embedding(music.mask, d).to(music.tokens.dtype)
        video_pos = torch.zeros_like(video.tokens)
        segments = music.tokens
        if self.cross_encoder is not None:
            segments = self.cross_encoder(segments, music_pos, video.tokens, video_pos, video.mask, music.mask)
        ones = music.mask.new_ones(batch, 1)
        parts = [(self.global_token.to(segments.dtype).expand(batch, 1, d), ones,
                  self.global_pos.expand(batch, 1, d)),
                 (segments, music.mask, music_pos)]
        if self.cross_encoder is None:
            parts.append((video.tokens, video.mask, video_pos))
        memory = encode_concat(self.encoder, parts)[1]
        return memory, music_pos

    def detect(self, video: TokenEncoding, music: TokenEncoding) -> RankedDetection:
        """Moments for aligned pairs (video i in track i)."""
        check_pairs(video, music)
        memory, music_pos = self.fuse(video, music)
        target = memory.new_zeros(len(music), self.config.num_queries, self.config.dim)
        anchors = self.anchor_embed.weight.sigmoid()[None].expand(len(music), -1, -1)
        hidden, references = self.decoder(target, anchors, memory, music_pos, music.mask, self.refine_head)
        return self._heads(hidden, references)

    def omitted_parameters(self) -> dict[str, int]:
        """The two saliency projections (saliency loss) and the unused query-position table."""
        d = self.config.dim
        return {"saliency_proj1 + saliency_proj2": 2 * mlp_parameters(d, d, d, 1),
                "txt_position_embed (32 positions + LayerNorm)": 32 * d + 2 * d}
