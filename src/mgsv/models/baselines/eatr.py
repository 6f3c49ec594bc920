"""EaTR (Jang et al., "Knowing Where to Focus: Event-aware Transformer for Video Grounding", ICCV 2023).

Architecture (official `models/model.py`, `models/transformer.py`, defaults): input projections; a self-attention
encoder (3 layers) over concat(segments, frames) with the sine position on the segments; **event reasoning**: slot
attention (3 iterations, 10 learned slots) over the position-embedded segment tokens gives event slots, whose spans
(`event_span_embed`) are the decoder's initial anchors and whose vectors are its initial content; **moment
reasoning**: an anchor decoder (3 layers) over the whole encoder memory whose first layer has a **gated fusion**
block that injects the sentence-level query (here: the max-pooled frame tokens); `moment_span_embed` (our `span_head`)
both refines the anchors and predicts the spans.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mgsv.models.baselines.anchor_decoder import AnchorDecoder
from mgsv.models.baselines.common import (
    DetrBaselineConfig,
    RankedDetection,
    SlotAttention,
    TokenEncoding,
    check_pairs,
    encode_concat,
    xavier_init,
    zero_last_layer,
)
from mgsv.models.baselines.grounding import DetrGroundingModel
from mgsv.models.layers import MLP, DetrEncoder, MultiHeadAttention, sine_position_embedding


@dataclass
class EatrConfig(DetrBaselineConfig):
    """EaTR's sizes (official: 3 encoder and 3 decoder layers, 10 slots / queries, 3 slot iterations)."""

    encoder_layers: int = 3
    decoder_layers: int = 3
    slot_iterations: int = 3

    POSITIVE = (*DetrBaselineConfig.POSITIVE, "slot_iterations")


class GatedFusion(nn.Module):
    """EaTR's gated fusion: the moment queries attend to the sentence vector, gated by their agreement with it."""

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.cross_attn = MultiHeadAttention(dim, 1, 0.1)
        self.self_attn = MultiHeadAttention(dim, 1, 0.1)
        self.linear = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, target: Tensor, sentence: Tensor) -> Tensor:
        """target [B, Q, d], sentence [B, 1, d] -> [B, Q, d]."""
        attended = self.cross_attn(target, sentence, sentence)
        gate = (target * attended).sigmoid()
        mixed = target + attended
        mixed = self.self_attn(mixed, mixed, mixed)
        return self.norm(self.dropout(F.relu(self.linear(gate * mixed))) + target)


class EaTR(DetrGroundingModel):
    """EaTR: concat SA encoder; event slots -> anchors; anchor decoder with gated fusion in its first layer."""

    config_class = EatrConfig

    def __init__(self, config: EatrConfig | None = None) -> None:
        config = config or EatrConfig()
        super().__init__(config)
        d = config.dim
        self.encoder = DetrEncoder(d, config.heads, config.ffn_dim, config.dropout, config.encoder_layers)
        self.slots = nn.Parameter(torch.empty(config.num_queries, d))
        self.slot_attention = SlotAttention(d, config.slot_iterations, d, 2)
        self.event_span_head = MLP(d, d, 2, 3)
        self.decoder = AnchorDecoder(d, config.heads, config.ffn_dim, config.dropout, config.decoder_layers,
                                     sine_dim=d, scale_first_layer=True,
                                     first_layer_fusion=GatedFusion(d, config.dropout))
        xavier_init([self.encoder, self.slot_attention, self.decoder])
        nn.init.xavier_normal_(self.slots)
        zero_last_layer(self.event_span_head)
        zero_last_layer(self.span_head)  # EaTR's moment_span_embed: it refines the anchors and predicts the spans

    def detect(self, video: TokenEncoding, music: TokenEncoding) -> RankedDetection:
        """Moments for aligned pairs (video i in track i)."""
        check_pairs(video, music)
        d, batch = self.config.dim, len(music)
        music_pos = sine_position_embedding(music.mask, d).to(music.tokens.dtype)
        video_pos = torch.zeros_like(video.tokens)
        music_mem, video_mem = encode_concat(self.encoder, [(music.tokens, music.mask, music_pos),
                                                            (video.tokens, video.mask, video_pos)])
        memory = torch.cat([music_mem, video_mem], 1)
        memory_pos = torch.cat([music_pos, video_pos], 1)
        memory_mask = torch.cat([music.mask, video.mask], 1)
        # Event reasoning on the projected, position-embedded segments (not the encoder output), as the official.
        slots = self.slot_attention(music.tokens + music_pos, music.mask,
                                    self.slots.to(music.tokens.dtype).expand(batch, -1, -1))
        anchors = self.event_span_head(slots).sigmoid()
        sentence = video.tokens.masked_fill(~video.mask[..., None], float("-inf")).amax(1, keepdim=True)
        hidden, references = self.decoder(slots, anchors, memory, memory_pos, memory_mask, self.span_head,
                                          context=sentence, detach_first_anchors=True)
        return self._heads(hidden, references)

    def omitted_parameters(self) -> dict[str, int]:
        """The saliency head, the event-output norm (both for losses we do not train) and the query-position table."""
        d = self.config.dim
        return {"saliency_proj": d + 1, "decoder event_norm": 2 * d,
                "txt_position_embed (32 positions + LayerNorm)": 34 * d}
