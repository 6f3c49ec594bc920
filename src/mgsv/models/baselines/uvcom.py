"""UVCOM (Xiao et al., "Bridging the Gap: A Unified Video Comprehension Framework for Moment Retrieval and Highlight
Detection", CVPR 2024) and UVCOM+ (the MGSV paper's variant without cross-attention in the multimodal fusion).

Architecture (official `uvcom/model.py`, `uvcom/CIM.py`, `uvcom/addition.py`, defaults): input projections; the
**text-to-video cross-attention encoder** (2 layers: segments attend to frames) and the **video-to-text** one (2
layers: frames attend to segments); **dual-branch intra-modality aggregation**: EM attention (RBF kernel, 5
iterations) condenses the frames into 5 query centres and the segments into 30 video centres; the global token
becomes the video centre most similar to the query centres; **local relation perception**: a small convolution
stack on the segments; a bidirectional random walk (BMRW) propagates the query centres into the segments; a
self-attention encoder (2 layers) over [global, segments]; slot attention (5 iterations) initialised with the pooled
query gives the moment queries' content; an anchor decoder (2 layers, 10 anchors).

UVCOM+ drops the text-to-video cross-attention encoder; the frames then reach the segments through the
self-attention encoder, which runs over [global, segments, frames] (concat fusion). The video-to-text branch (frames
attending to segments for the query centres) is kept: it builds the query side, not the fused clip tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mgsv.models.baselines.anchor_decoder import AnchorDecoder
from mgsv.models.baselines.common import (
    CrossAttentionEncoder,
    RankedDetection,
    SlotAttention,
    TokenEncoding,
    check_pairs,
    encode_concat,
    masked_mean,
    mlp_parameters,
    xavier_init,
    zero_last_layer,
)
from mgsv.models.baselines.grounding import DetrGroundingModel
from mgsv.models.baselines.qd_detr import QdDetrConfig
from mgsv.models.layers import MLP, DetrEncoder, sine_position_embedding


@dataclass
class UvcomConfig(QdDetrConfig):
    """UVCOM's sizes; `cross_attention` false gives UVCOM+."""

    query_centres: int = 5  # n_txt_mu
    video_centres: int = 30  # n_visual_mu
    em_iterations: int = 5
    slot_iterations: int = 5
    walk_weight: float = 0.5  # BMRW's w

    POSITIVE = (*QdDetrConfig.POSITIVE, "query_centres", "video_centres", "em_iterations", "slot_iterations")
    FRACTIONS = (*QdDetrConfig.FRACTIONS, "walk_weight")


def _normalize(x: Tensor) -> Tensor:
    """x / (|x| + 1e-9), UVCOM's `calculate_l1_norm` (an L2 normalisation despite the name)."""
    return x / (x.norm(dim=-1, keepdim=True) + 1e-9)


def em_centres(centres: Tensor, x: Tensor, mask: Tensor, iterations: int, sigma: float = 1.2) -> Tensor:
    """EM attention with an RBF kernel: centres [B, K, d] re-estimated from tokens x [B, T, d] (mask [B, T])."""
    x = x.float()
    unit_x = _normalize(x)
    centres = centres.float()
    for _ in range(iterations):
        unit_c = _normalize(centres)
        # |c - x|^2 expanded, so no [B, K, T, d] tensor is built.
        distance = ((unit_c * unit_c).sum(-1)[..., None] + (unit_x * unit_x).sum(-1)[:, None, :]
                    - 2 * unit_c @ unit_x.transpose(1, 2))
        responsibility = (-0.5 * distance / sigma**2).softmax(dim=1) * mask[:, None, :]
        responsibility = responsibility / (responsibility.sum(-1, keepdim=True) + 1e-9)
        centres = responsibility @ x
    return centres


def random_walk(x: Tensor, centres: Tensor, mask: Tensor, weight: float) -> Tensor:
    """BMRW: propagate centres [B, K, d] into tokens x [B, T, d] by a random walk solved in closed form."""
    x, centres = x.float(), centres.float()
    z = (_normalize(centres) @ _normalize(x).transpose(1, 2) * 5.0).softmax(dim=1) * mask[:, None, :]  # [B, K, T]
    z_normed = z / (z.sum(-1, keepdim=True) + 1e-9)
    affinity = z.transpose(1, 2) @ z_normed  # [B, T, T]
    eye = torch.eye(x.shape[1], device=x.device, dtype=x.dtype).expand_as(affinity)
    walked = weight * z.transpose(1, 2) @ centres + x
    return (1 - weight) * torch.linalg.solve(eye - weight**2 * affinity, walked)


class LocalConv(nn.Module):
    """Local relation perception: Conv1d k1 -> k3 -> k1 over the segments (no activations, as the official).

    Padding is zeroed before every convolution, so a track's output does not depend on how far the batch is
    padded (the official zeroes it only before the first, and the first convolution's bias then leaks into the
    kernel-3 convolution at the track's end).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv1d(dim, dim, 1), nn.Conv1d(dim, dim, 3, padding=1), nn.Conv1d(dim, dim, 1)])

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x [B, L, d], mask [B, L] -> [B, L, d]."""
        keep = mask[:, None, :].to(x.dtype)
        x = x.transpose(1, 2)
        for conv in self.convs:
            x = conv(x * keep)
        return x.transpose(1, 2)


class UVCOM(DetrGroundingModel):
    """UVCOM: [t2v] + v2t encoders, EM centres, local convolution, random walk, SA encoder, slots, anchor decoder."""

    config_class = UvcomConfig

    def __init__(self, config: UvcomConfig | None = None) -> None:
        config = config or UvcomConfig()
        super().__init__(config)
        d = config.dim
        self.global_pos = nn.Parameter(torch.randn(d))
        self.cross_encoder = (CrossAttentionEncoder(d, config.heads, config.ffn_dim, config.dropout,
                                                    config.encoder_layers) if config.cross_attention else None)
        self.video_to_text = CrossAttentionEncoder(d, config.heads, config.ffn_dim, config.dropout,
                                                   config.encoder_layers)
        self.query_proj = nn.Sequential(nn.Linear(d, d), nn.LayerNorm(d))  # feature_proj
        self.local_conv = LocalConv(d)
        self.query_centres = nn.Parameter(torch.randn(config.query_centres, d))
        self.video_centres = nn.Parameter(torch.randn(config.video_centres, d))
        self.encoder = DetrEncoder(d, config.heads, config.ffn_dim, config.dropout, config.encoder_layers)
        self.slot_attention = SlotAttention(d, config.slot_iterations, config.ffn_dim, 3)
        self.query_content = nn.Embedding(config.num_queries, d)  # the decoder's span_embed, added to the slots
        self.decoder = AnchorDecoder(d, config.heads, config.ffn_dim, config.dropout, config.decoder_layers,
                                     sine_dim=d // 2)
        self.refine_head = MLP(d, d, 2, 3)
        self.anchor_embed = nn.Embedding(config.num_queries, 2)
        xavier_init([m for m in (self.cross_encoder, self.video_to_text, self.query_proj, self.local_conv,
                                 self.encoder, self.slot_attention, self.decoder, self.refine_head) if m is not None])
        nn.init.xavier_uniform_(self.query_centres)
        nn.init.xavier_uniform_(self.video_centres)
        zero_last_layer(self.refine_head)

    def detect(self, video: TokenEncoding, music: TokenEncoding) -> RankedDetection:
        """Moments for aligned pairs (video i in track i)."""
        check_pairs(video, music)
        cfg, batch = self.config, len(music)
        d = cfg.dim
        music_pos = sine_position_embedding(music.mask, d).to(music.tokens.dtype)
        video_pos = torch.zeros_like(video.tokens)
        segments = music.tokens
        if self.cross_encoder is not None:
            segments = self.cross_encoder(segments, music_pos, video.tokens, video_pos, video.mask, music.mask)
        frames = self.video_to_text(video.tokens, video_pos, music.tokens, music_pos, music.mask, video.mask)
        pooled_query = masked_mean(self.query_proj(frames), video.mask)  # txt_seq

        query_centres = em_centres(self.query_centres.expand(batch, -1, -1), frames, video.mask, cfg.em_iterations)
        video_centres = em_centres(self.video_centres.expand(batch, -1, -1), segments, music.mask,
                                   cfg.em_iterations)
        local = segments + self.local_conv(segments, music.mask)
        similarity = (_normalize(video_centres) @ _normalize(query_centres).transpose(1, 2)).mean(-1)  # [B, Kv]
        best = similarity.argmax(-1)
        global_token = video_centres[torch.arange(batch, device=best.device), best][:, None].to(segments.dtype)
        segments = segments + random_walk(local, query_centres, music.mask, cfg.walk_weight).to(segments.dtype)

        ones = music.mask.new_ones(batch, 1)
        parts = [(global_token, ones, self.global_pos.expand(batch, 1, d)), (segments, music.mask, music_pos)]
        if self.cross_encoder is None:
            parts.append((video.tokens, video.mask, video_pos))
        memory = encode_concat(self.encoder, parts)[1]

        slots = self.slot_attention(memory, music.mask, pooled_query[:, None].expand(-1, cfg.num_queries, -1))
        target = slots + self.query_content.weight.to(slots.dtype)
        anchors = self.anchor_embed.weight.sigmoid()[None].expand(batch, -1, -1)
        hidden, references = self.decoder(target, anchors, memory, music_pos, music.mask, self.refine_head,
                                          reference_after_layer=True)
        return self._heads(hidden, references)

    def omitted_parameters(self) -> dict[str, int]:
        """Heads of the losses we do not train (similarity, saliency), and parameters the official forward ignores."""
        d, hidden = self.config.dim, self.config.ffn_dim
        return {
            "sim_vid + sim_txt (similarity losses)": 2 * mlp_parameters(d, hidden, d, 3),
            "saliency_proj1 + saliency_proj2": 2 * mlp_parameters(d, d, d, 1),
            "global_rep_token (overwritten by the top video centre)": d,
            "txt_position_embed (32 positions + LayerNorm)": 34 * d,
        }
