"""TR-DETR (Sun et al., "TR-DETR: Task-Reciprocal Transformer for Joint Moment Retrieval and Highlight Detection",
AAAI 2024) and TR-DETR+ (the MGSV paper's variant without cross-attention in the multimodal fusion).

Architecture (official `tr_detr/model.py`, `tr_detr/transformer.py`, `tr_detr/interaction/test_CQA.py`): input
projections; a **visual-query fuser** (VSLNet's context-query attention + query concatenation) that injects the
query into every clip; the text-to-video **cross-attention encoder** (2 layers, no global token); a self-attention
encoder (2 layers) over the clips; **HD2MR** (highlight-to-moment): saliency scores from the encoder output weight
the clip features, which are added back and encoded again by the same encoder; an anchor decoder (2 layers, 10
anchors) over that memory.

TR-DETR+ drops the cross-attention encoder; the first self-attention pass then runs over concat(clips, frames).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mgsv.models.baselines.anchor_decoder import AnchorDecoder
from mgsv.models.baselines.common import (
    CrossAttentionEncoder,
    RankedDetection,
    TokenEncoding,
    check_pairs,
    encode_concat,
    xavier_init,
    zero_last_layer,
)
from mgsv.models.baselines.grounding import DetrGroundingModel
from mgsv.models.baselines.qd_detr import QdDetrConfig
from mgsv.models.layers import MLP, DetrEncoder, TokenLayout, sine_position_embedding

_NEG = -1e30  # VSLNet's mask value


@dataclass
class TrDetrConfig(QdDetrConfig):
    """TR-DETR's sizes (as QD-DETR's); `cross_attention` false gives TR-DETR+."""


class ContextQueryFuser(nn.Module):
    """VSLNet's fuser as TR-DETR uses it: context-query attention, then concatenation with the pooled query.

    Trilinear similarity s(c, q) = w_c.c + w_q.q + (w_m * c).q, dropout 0.1 on both inputs; context-to-query and
    query-to-context attention; a 1x1 convolution of [c, c2q, c * c2q, c * q2c]; then [.; attention-pooled query]
    through another 1x1 convolution and a ReLU.
    """

    def __init__(self, dim: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.w_context = nn.Parameter(torch.empty(dim, 1))
        self.w_query = nn.Parameter(torch.empty(dim, 1))
        self.w_mix = nn.Parameter(torch.empty(1, 1, dim))
        self.attention_out = nn.Linear(4 * dim, dim)  # Conv1D(4d -> d, kernel 1)
        self.pool_weight = nn.Parameter(torch.empty(dim, 1))  # WeightedPool
        self.concat_out = nn.Linear(2 * dim, dim)  # Conv1D(2d -> d, kernel 1)
        self.dropout = nn.Dropout(dropout)
        for weight in (self.w_context, self.w_query, self.w_mix, self.pool_weight):
            nn.init.xavier_uniform_(weight)

    def forward(self, context: Tensor, query: Tensor, context_mask: Tensor, query_mask: Tensor) -> Tensor:
        """context [B, Lc, d] (the segments), query [B, Lq, d] (the frames) -> fused context [B, Lc, d]."""
        c, q = self.dropout(context), self.dropout(query)
        score = (c @ self.w_context) + (q @ self.w_query).transpose(1, 2) + (c * self.w_mix) @ q.transpose(1, 2)
        score = score.float()
        c2q_weights = score.masked_fill(~query_mask[:, None, :], _NEG).softmax(2)
        q2c_weights = score.masked_fill(~context_mask[:, :, None], _NEG).softmax(1).transpose(1, 2)
        c2q = c2q_weights.to(query.dtype) @ query
        q2c = (c2q_weights @ q2c_weights).to(context.dtype) @ context
        fused = self.attention_out(torch.cat([context, c2q, context * c2q, context * q2c], dim=2))
        alpha = (query @ self.pool_weight).float().masked_fill(~query_mask[..., None], _NEG).softmax(1)
        pooled = (query * alpha.to(query.dtype)).sum(1, keepdim=True).expand(-1, fused.shape[1], -1)
        return F.relu(self.concat_out(torch.cat([fused, pooled], dim=2)))


class TRDETR(DetrGroundingModel):
    """TR-DETR: fuser -> [cross-attention] -> SA encoder -> HD2MR re-encoding -> anchor decoder -> heads."""

    config_class = TrDetrConfig

    def __init__(self, config: TrDetrConfig | None = None) -> None:
        config = config or TrDetrConfig()
        super().__init__(config)
        d = config.dim
        self.fuser = ContextQueryFuser(d)
        self.cross_encoder = (CrossAttentionEncoder(d, config.heads, config.ffn_dim, config.dropout,
                                                    config.encoder_layers) if config.cross_attention else None)
        self.encoder = DetrEncoder(d, config.heads, config.ffn_dim, config.dropout, config.encoder_layers)
        self.saliency_proj = nn.Linear(d, d)  # HD2MR's highlight scores
        self.decoder = AnchorDecoder(d, config.heads, config.ffn_dim, config.dropout, config.decoder_layers,
                                     sine_dim=d // 2)
        self.refine_head = MLP(d, d, 2, 3)
        self.anchor_embed = nn.Embedding(config.num_queries, 2)
        xavier_init([m for m in (self.cross_encoder, self.encoder, self.decoder, self.refine_head) if m is not None])
        zero_last_layer(self.refine_head)

    def detect(self, video: TokenEncoding, music: TokenEncoding) -> RankedDetection:
        """Moments for aligned pairs (video i in track i)."""
        check_pairs(video, music)
        d = self.config.dim
        music_pos = sine_position_embedding(music.mask, d).to(music.tokens.dtype)
        video_pos = torch.zeros_like(video.tokens)
        segments = self.fuser(music.tokens, video.tokens, music.mask, video.mask).masked_fill(~music.mask[..., None], 0)
        if self.cross_encoder is not None:
            segments = self.cross_encoder(segments, music_pos, video.tokens, video_pos, video.mask, music.mask)
            memory = encode_concat(self.encoder, [(segments, music.mask, music_pos)])[0]
        else:
            memory = encode_concat(self.encoder, [(segments, music.mask, music_pos),
                                                  (video.tokens, video.mask, video_pos)])[0]
        memory = self._highlight_to_moment(memory, segments, music.mask, music_pos)
        target = memory.new_zeros(len(music), self.config.num_queries, d)
        anchors = self.anchor_embed.weight.sigmoid()[None].expand(len(music), -1, -1)
        hidden, references = self.decoder(target, anchors, memory, music_pos, music.mask, self.refine_head)
        return self._heads(hidden, references)

    def _highlight_to_moment(self, memory: Tensor, segments: Tensor, mask: Tensor, pos: Tensor) -> Tensor:
        """HD2MR: add saliency-weighted clip features to the memory and encode it again with the same encoder."""
        saliency = self.saliency_proj(memory).sum(-1).float() / math.sqrt(self.config.dim)
        weights = saliency.masked_fill(~mask, float("-inf")).softmax(-1).to(segments.dtype)
        memory = memory + segments * weights[..., None]
        layout = TokenLayout.from_mask(mask)
        return layout.unpack(self.encoder(layout.pack(memory), layout.pack(pos), layout))

    def omitted_parameters(self) -> dict[str, int]:
        """MR2HD's GRU (it only refines the saliency scores of the saliency loss) and the query-position table."""
        d = self.config.dim
        return {"MR2HD gru_extractor": 3 * d * (2 * d + 2), "txt_position_embed (32 positions + LayerNorm)": 34 * d}
