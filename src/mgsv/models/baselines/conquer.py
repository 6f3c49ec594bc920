"""CONQUER (Hou et al., "CONQUER: Contextual Query-aware Ranking for Video Corpus Moment Retrieval", ACM MM 2021),
re-trained for MGSV: the query video's frames are the query, each track is a corpus "video", its segments the clips.

Architecture (official `model/conquer.py` and its modules, `config/model_config.json`): one BERT-style encoder per
modality (LinearLayer, learned positions, LayerNorm, 1 transformer layer, hidden 768, 12 heads, FFN 3072, GELU);
**query-aware feature learning**: bidirectional attention flow between clips and query words (trilinear
similarity) gives [v, v2q, v * v2q, v * q2v]; a contextualising FC + transformer; the **moment localization head**:
start features from [QAL ; context] and end features from [context ; start], each an FC + transformer, then a
1-d convolution head (ConvSE) giving start and end logits over the clips.

Training uses CONQUER's **shared normalization** ("general" similarity): for every query, its ground-truth track and
`negatives` other tracks of the batch compete in one softmax over all their (track, clip) start positions (and one
over the end positions); the loss is the cross-entropy of the ground-truth start and end clips. A moment's score is
start logit + end logit, so scores compare across tracks: `relevance` of a (video, track) pair is its best moment
score, and `detect` returns that best moment (end >= start). Relevance needs the full cross-modal forward for every
pair (CONQUER is a re-ranker), so ranking a large music set costs N x M forwards.

Moments live on the clip grid: clip k is the window centred at k * stride seconds, a moment (start, end) maps to the
nearest clips and back to (start_clip * stride, end_clip * stride).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mgsv.defaults import MUSIC_HORIZON_S
from mgsv.models.baselines.common import (
    ConfigChecks,
    PostNormEncoderLayer,
    TokenEncoding,
    check_pairs,
)
from mgsv.models.contract import Capabilities
from mgsv.models.layers import TokenLayout, check_tokens
from mgsv.models.made import Detection

_NEG = -1e30  # CONQUER's mask_logits value
_RELEVANCE_PAIRS = 256  # (video, track) pairs per forward in `relevance`


@dataclass
class ConquerConfig(ConfigChecks):
    """CONQUER's sizes (official model_config.json) and the MGSV clip grid."""

    video_dim: int = 512
    music_dim: int = 768
    dim: int = 768
    heads: int = 12
    ffn_dim: int = 3072
    layers: int = 1  # transformer layers in every BERT block
    dropout: float = 0.1
    negatives: int = 3  # other tracks per query in the shared normalization (neg_video_num)
    conv_channels: int = 128  # ConvSE hidden channels
    conv_kernel: int = 5
    max_video_frames: int = 50
    max_segments: int = 96
    segment_stride_s: float = 2.5  # AST windows are centred every 2.5 s
    horizon_s: float = MUSIC_HORIZON_S  # spans are normalised by the fixed music horizon

    POSITIVE = ("video_dim", "music_dim", "dim", "heads", "ffn_dim", "layers", "conv_channels", "conv_kernel",
                "max_video_frames", "max_segments")
    NON_NEGATIVE = ("negatives",)
    FRACTIONS = ("dropout",)

    def __post_init__(self) -> None:
        self.check()
        if not (isinstance(self.segment_stride_s, (int, float)) and isinstance(self.horizon_s, (int, float))
                and 0 < self.segment_stride_s < self.horizon_s):
            raise ValueError("invalid ConquerConfig: need 0 < segment_stride_s < horizon_s")
        if self.conv_kernel % 2 == 0:
            raise ValueError(f"invalid ConquerConfig: conv_kernel must be odd, got {self.conv_kernel}")


@dataclass
class ConquerOutput:
    """Training forward: start / end logits of every query's candidate tracks (candidate 0 = ground truth)."""

    start_logits: Tensor  # [B, C, L]
    end_logits: Tensor  # [B, C, L]
    music_mask: Tensor  # [B, L] valid clips of each query's ground-truth track


class LinearLayer(nn.Module):
    """CONQUER's LinearLayer: LayerNorm -> Dropout -> Linear -> ReLU."""

    def __init__(self, input_dim: int, dim: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(input_dim)
        self.linear = nn.Linear(input_dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """[..., input_dim] -> [..., dim]."""
        return F.relu(self.linear(self.dropout(self.norm(x))))


class FCPlusTransformer(nn.Module):
    """An FC layer to `dim`, optionally learned positions + LayerNorm (BERT embeddings), then transformer layers."""

    def __init__(self, input_dim: int, config: ConquerConfig, positions: int | None = None) -> None:
        super().__init__()
        self.fc = LinearLayer(input_dim, config.dim, config.dropout)
        self.positions = nn.Embedding(positions, config.dim) if positions else None
        self.embed_norm = nn.LayerNorm(config.dim) if positions else None
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(PostNormEncoderLayer(config.dim, config.heads, config.ffn_dim, config.dropout,
                                                         "gelu") for _ in range(config.layers))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x [B, L, input_dim], bool mask [B, L] -> [B, L, dim], zero at padding."""
        x = self.fc(x)
        if self.positions is not None:
            x = self.dropout(self.embed_norm(x + self.positions.weight[: x.shape[1]].to(x.dtype)))
        layout = TokenLayout.from_mask(mask)
        rows = layout.pack(x)
        for layer in self.layers:
            rows = layer(rows, layout)
        return layout.unpack(rows)


class BidirectionalAttention(nn.Module):
    """Query-aware feature learning: clips attend to query words and back (BiDAF), [v, v2q, v*v2q, v*q2v]."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.similarity = nn.Linear(3 * dim, 1, bias=False)  # w . [v ; q ; v * q]

    def forward(self, clips: Tensor, clip_mask: Tensor, query: Tensor, query_mask: Tensor) -> Tensor:
        """clips [B, Lv, d], query [B, Lq, d] -> [B, Lv, 4d]."""
        w_clip, w_query, w_mix = self.similarity.weight[0].to(clips.dtype).chunk(3)
        # The trilinear score without the [B, Lv, Lq, 3d] tensor: w.[v; q; v*q] = w1.v + w2.q + (w3*v).q
        score = (clips @ w_clip)[..., None] + (query @ w_query)[:, None, :] + (clips * w_mix) @ query.transpose(1, 2)
        valid = clip_mask[:, :, None] & query_mask[:, None, :]
        score = score.float().masked_fill(~valid, _NEG)
        clip_to_query = score.softmax(-1).to(query.dtype) @ query
        query_to_clip = score.amax(-1).softmax(-1)[:, None, :].to(clips.dtype) @ clips  # [B, 1, d]
        return torch.cat([clips, clip_to_query, clips * clip_to_query, clips * query_to_clip], dim=-1)


class ConvScore(nn.Module):
    """ConvSE: Conv1d(d -> 128, k 5) -> ReLU -> Conv1d(128 -> 1), logits over clips (padding masked)."""

    def __init__(self, config: ConquerConfig) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(config.dim, config.conv_channels, config.conv_kernel,
                               padding=config.conv_kernel // 2, bias=False)
        self.conv2 = nn.Conv1d(config.conv_channels, 1, 1, bias=False)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x [B, L, d] -> logits [B, L] (float32), -1e30 at padding."""
        x = x.masked_fill(~mask[..., None], 0.0).transpose(1, 2)
        return self.conv2(F.relu(self.conv1(x)))[:, 0].float().masked_fill(~mask, _NEG)


class CONQUER(nn.Module):
    """CONQUER: unimodal BERT encoders; per pair: BiDAF, context transformer, start / end heads."""

    config_class = ConquerConfig
    capabilities = Capabilities(ranks=True, grounds=True)

    def __init__(self, config: ConquerConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or ConquerConfig()
        d = config.dim
        self.video_encoder = FCPlusTransformer(config.video_dim, config, positions=config.max_video_frames)
        self.music_encoder = FCPlusTransformer(config.music_dim, config, positions=config.max_segments)
        self.query_aware = BidirectionalAttention(d)
        self.context = FCPlusTransformer(4 * d, config)
        self.start_features = FCPlusTransformer(5 * d, config)
        self.end_features = FCPlusTransformer(2 * d, config)
        self.start_score = ConvScore(config)
        self.end_score = ConvScore(config)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """CONQUER's init: N(0, 0.02) for Linear and Embedding weights, zero biases; convolutions keep theirs."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    # -- encoders ---------------------------------------------------------------------------------------------

    def encode_video(self, frame_feats: Tensor, frame_mask: Tensor) -> TokenEncoding:
        """frame_feats [B, Lv, 512] + mask -> contextual query tokens."""
        mask = check_tokens(frame_feats, frame_mask, "frame_feats", self.config.video_dim,
                            self.config.max_video_frames)
        weight = self.video_encoder.fc.linear.weight
        return TokenEncoding(self.video_encoder(frame_feats.to(weight.dtype), mask), mask)

    def encode_music(self, segment_feats: Tensor, segment_mask: Tensor) -> TokenEncoding:
        """segment_feats [M, Lm, 768] + mask -> contextual clip tokens."""
        mask = check_tokens(segment_feats, segment_mask, "segment_feats", self.config.music_dim,
                            self.config.max_segments)
        weight = self.music_encoder.fc.linear.weight
        return TokenEncoding(self.music_encoder(segment_feats.to(weight.dtype), mask), mask)

    # -- pairs ------------------------------------------------------------------------------------------------

    def pair_logits(self, video: TokenEncoding, music: TokenEncoding) -> tuple[Tensor, Tensor]:
        """Start and end logits [P, Lm] of aligned pairs (video i with track i)."""
        check_pairs(video, music)
        mask = music.mask
        qal = self.query_aware(music.tokens, mask, video.tokens, video.mask)
        context = self.context(qal, mask)
        start = self.start_features(torch.cat([qal, context], -1), mask)
        end = self.end_features(torch.cat([context, start], -1), mask)
        return self.start_score(start, mask), self.end_score(end, mask)

    def best_moments(self, start: Tensor, end: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(score, start clip, end clip) [P] of the best moment with end >= start, from logits [P, L]."""
        length = start.shape[1]
        scores = start[:, :, None] + end[:, None, :]
        allowed = torch.ones(length, length, dtype=torch.bool, device=start.device).triu()
        flat = scores.masked_fill(~allowed, 2 * _NEG).flatten(1)
        best, index = flat.max(-1)
        return best, index // length, index % length

    def detect(self, video: TokenEncoding, music: TokenEncoding) -> Detection:
        """The best moment of each aligned pair (one layer, one query)."""
        start, end = self.pair_logits(video, music)
        score, first, last = self.best_moments(start, end)
        stride, horizon = self.config.segment_stride_s, self.config.horizon_s
        start_s, end_s = first.float() * stride, last.float() * stride
        spans = torch.stack([(start_s + end_s) / 2 / horizon, (end_s - start_s) / horizon], -1)
        logits = torch.stack([score, torch.zeros_like(score)], -1)
        return Detection(spans=spans[None, :, None], logits=logits[None, :, None],
                         hidden=spans.new_zeros(1, len(spans), 1, 0))

    def relevance(self, video: TokenEncoding, music: TokenEncoding) -> Tensor:
        """Best moment score [B videos, M tracks] of every pair (shared-normalization logits compare across tracks)."""
        num_videos, num_tracks = len(video), len(music)
        pairs = torch.arange(num_videos * num_tracks, device=video.tokens.device)
        scores = []
        for chunk in pairs.split(_RELEVANCE_PAIRS):
            start, end = self.pair_logits(video.select(chunk // num_tracks), music.select(chunk % num_tracks))
            scores.append(self.best_moments(start, end)[0])
        return torch.cat(scores).view(num_videos, num_tracks)

    # -- training ---------------------------------------------------------------------------------------------

    def forward(self, frame_feats: Tensor, frame_mask: Tensor, segment_feats: Tensor,
                segment_mask: Tensor) -> ConquerOutput:
        """Each query against its track and `negatives` other tracks of the batch (shared normalization)."""
        video = self.encode_video(frame_feats, frame_mask)
        music = self.encode_music(segment_feats, segment_mask)
        check_pairs(video, music)
        batch = len(video)
        candidates = 1 + min(self.config.negatives, batch - 1)
        rows = torch.arange(batch, device=video.tokens.device)
        tracks = (rows[:, None] + torch.arange(candidates, device=rows.device)[None]) % batch  # [B, C]
        start, end = self.pair_logits(video.select(rows.repeat_interleave(candidates)), music.select(tracks.flatten()))
        return ConquerOutput(start.view(batch, candidates, -1), end.view(batch, candidates, -1), music.mask)

    def clip_targets(self, target_spans: Tensor, music_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Ground-truth start / end clip indices [B] from normalised (centre, width) spans [B, 1, 2]."""
        centre, width = target_spans[:, 0].float().unbind(-1)
        horizon, stride = self.config.horizon_s, self.config.segment_stride_s
        last = (music_mask.sum(1) - 1).clamp(min=0)
        first = torch.round((centre - width / 2) * horizon / stride).long().clamp(min=0)
        first = torch.minimum(first, last)
        final = torch.round((centre + width / 2) * horizon / stride).long()
        return first, torch.minimum(torch.maximum(final, first), last)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """`enhancement`: the two unimodal encoders; `detection`: the query-aware and localization modules."""
        encoders = [*self.video_encoder.parameters(), *self.music_encoder.parameters()]
        ids = {id(p) for p in encoders}
        return {"enhancement": encoders, "detection": [p for p in self.parameters() if id(p) not in ids]}

    def omitted_parameters(self) -> dict[str, int]:
        """BERT token-type embeddings (one modality per encoder: a constant offset)."""
        return {"token_type_embeddings (2 encoders)": 2 * 2 * self.config.dim}
