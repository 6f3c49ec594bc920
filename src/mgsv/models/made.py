"""MaDe: video-to-music **Ma**tching and music moment **De**tection (paper "Music Grounding by Short Video").

Pipeline (names follow the paper; shapes for d = 256):

1. `enhance`: one unimodal enhancement block per modality. Frame features [B, Lv, 512] and segment features
   [M, Lm, 768] are projected to d (f^, s^), get a sinusoidal position encoding and one self-attention block, giving
   f~ and s~. Holistic embeddings h(v) and h0(M) are masked means, L2-normalised.
2. `xpool`: video-guided music pooling. For every (video, track) pair, h(v) attends over the track's s~ to give
   h1(M | v). Relevance p_s = cos(h(v), h0(M)) + cos(h(v), h1(M | v)) (S0 + S1).
3. `fusion`: DETR encoder (SA x 2) over concat(f~, s~) with a sine position embedding of the concatenated mask.
4. `decoder`: DETR decoder (6 layers) with one moment query: content query h(v), positional query P.
5. `span_head` (MLP + sigmoid: normalised centre and width) and `class_head` (foreground logit) on every layer.

`MaDeConfig` holds every switch of the paper's ablations; `docs/models.md` maps them to Table 6 / Table 7 and lists
where the official code (preset `made`) and the paper's text (preset `made-paper`) differ.

Exactness vs speed: training (`forward`) computes X-Pool the way the official code does, h1 for every pair of the
batch. Inference (`relevance` in eval mode) folds X-Pool's linear layers into per-track tensors (see
`XPool.track_state`), so that a (video, track) pair costs two d-wide dot products per segment and sums of segment
length; the result is the same up to rounding (tests compare both paths).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mgsv.models.contract import Capabilities, IndexLayout
from mgsv.models.cosine import pair_cosine
from mgsv.models.dropout import Dropout
from mgsv.models.layers import (
    MLP,
    DetrDecoder,
    DetrEncoder,
    FeedForward,
    ModelInputError,
    MultiHeadAttention,
    TokenLayout,
    check_tokens,
    normalized_positions,
    reset_detr_parameters,
    sine_embedding,
    sinusoidal_table,
)

MATCHING_CHOICES = ("both", "h0", "xpool")
FUSION_CHOICES = ("concat", "cross_attention")
FUSION_INPUT_CHOICES = ("enhanced", "projected")
QUERY_CHOICES = ("video", "music", "xpool", "zero")

# Named ablations of the paper's Table 6 / Table 7, as config overrides of preset `made` (docs/models.md explains
# each; the paper's own row numbering could not be checked here, so the names describe the switch instead).
ABLATIONS: dict[str, dict] = {
    "no-enhancement": {"enhance": False},
    "matching-h0-only": {"matching": "h0"},
    "matching-xpool-only": {"matching": "xpool"},
    "fusion-input-projected": {"fusion_input": "projected"},
    "fusion-cross-attention": {"fusion": "cross_attention"},
    "no-fusion-encoder": {"encoder_layers": 0},
    "query-music": {"query": "music"},
    "query-xpool": {"query": "xpool"},
    "query-zero": {"query": "zero"},
    "no-decoder-self-attention": {"decoder_self_attention": False},
    "trainable-query-position": {"train_query_pos": True},
    "no-contrastive-align": {"contrastive_align": False},
    "paper-dropout": {"enhance_dropout": 0.1, "xpool_dropout": 0.1},
    **{f"decoder-layers-{n}": {"decoder_layers": n} for n in range(1, 7)},
}

# Elements of one [tracks, videos, 4 L] block of X-Pool's Gram sums; bounds relevance()'s memory per chunk.
_RELEVANCE_CHUNK_ELEMENTS = 1 << 25
# Detection in inference computes the padded batch as it is (`TokenLayout.padded`) when its positions are at most
# this many times its valid tokens: a few padded rows cost less than packing around every attention.
_DENSE_DETECTION_POSITIONS = 1.125


def standardize_tokens(tokens: Tensor, mask: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """A LayerNorm's normalisation without its affine: (standardised tokens [M, L, d], mean [M, L], std [M, L]).

    With X-Pool's input norm (LN1) eps, the standardised tokens are all X-Pool needs from a track at inference
    (`MaDe.relevance_standardized`), and tokens = standardised * std + mean gives them back. Float32; padded
    positions hold zeros (std 1).
    """
    x = tokens.float()
    mean = x.mean(-1)
    std = torch.sqrt(x.var(-1, unbiased=False) + eps)
    standard = ((x - mean[..., None]) / std[..., None]).masked_fill(~mask[..., None], 0.0)
    return standard, mean.masked_fill(~mask, 0.0), std.masked_fill(~mask, 1.0)


@dataclass
class MaDeConfig:
    """Every size and switch of MaDe. Defaults are the official training script's model (preset `made`)."""

    # Inputs and width.
    video_dim: int = 512  # CLIP ViT-B/32 frame feature size
    music_dim: int = 768  # AST segment feature size
    dim: int = 256  # d: width of every module (official dim_input = hidden_dim = detr_hidden_dim)
    max_video_frames: int = 50  # official max_v_frames; the padding the contrastive-align logits assume
    video_positions: int = 250  # rows of the video sinusoidal table: longest frame sequence accepted
    music_positions: int = 300  # rows of the music sinusoidal table: longest segment sequence accepted
    # Unimodal feature enhancement.
    enhance: bool = True  # False: f~ = f^ (projection only), Table 6 "w/o enhancement"
    enhance_layers: int = 1
    enhance_heads: int = 8
    enhance_ffn_dim: int = 1024  # hard-coded in the official code, independent of d
    enhance_dropout: float = 0.8  # official r_enc (paper: 0.1)
    # Video-music matching.
    matching: str = "both"  # "both": S0 + S1; "h0": S0 only; "xpool": S1 only
    xpool_dropout: float = 0.3  # paper: 0.1
    temperature_init: float = 0.03  # logit_scale starts at log(1 / temperature_init)
    # Music moment detection.
    fusion: str = "concat"  # "concat": SA over concat(f, s); "cross_attention": s attends to f, then SA over s
    fusion_input: str = "enhanced"  # tokens detection fuses: "enhanced" (f~, s~; official) or "projected" (f^, s^)
    cross_fusion_heads: int = 8  # only for fusion="cross_attention" (official CrossTransformer: 8 heads x 128)
    cross_fusion_head_dim: int = 128
    encoder_layers: int = 2  # DETR encoder ("SA x 2")
    decoder_layers: int = 6  # DETR decoder layers (Table 7: number of CAs)
    decoder_self_attention: bool = True  # official code runs it (a dead flag there); paper: no decoder SA
    detr_heads: int = 8
    detr_ffn_dim: int = 1024
    detr_dropout: float = 0.1
    query: str = "video"  # content query: h(v) "video", h0(M) "music", h1(M|v) "xpool", or "zero"
    train_query_pos: bool = False  # official: P stays at its random init; paper: P is learnable
    contrastive_align: bool = True  # keep the (loss-free with one query) contrastive-align projections
    contrastive_dim: int = 256

    def __post_init__(self) -> None:
        problems = []
        for name in ("video_dim", "music_dim", "dim", "max_video_frames", "video_positions", "music_positions",
                     "enhance_heads", "enhance_ffn_dim", "cross_fusion_heads", "cross_fusion_head_dim",
                     "decoder_layers", "detr_heads", "detr_ffn_dim", "contrastive_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(f"{name} must be a positive integer, got {value!r}")
        for name in ("enhance_layers", "encoder_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                problems.append(f"{name} must be a non-negative integer, got {value!r}")
        for name in ("enhance_dropout", "xpool_dropout", "detr_dropout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1:
                problems.append(f"{name} must be in [0, 1), got {value!r}")
        if not isinstance(self.temperature_init, (int, float)) or not self.temperature_init > 0:
            problems.append(f"temperature_init must be > 0, got {self.temperature_init!r}")
        for name, choices in (("matching", MATCHING_CHOICES), ("fusion", FUSION_CHOICES),
                              ("fusion_input", FUSION_INPUT_CHOICES), ("query", QUERY_CHOICES)):
            if getattr(self, name) not in choices:
                problems.append(f"{name} must be one of {', '.join(choices)}, got {getattr(self, name)!r}")
        for name in ("enhance", "decoder_self_attention", "train_query_pos", "contrastive_align"):
            if not isinstance(getattr(self, name), bool):
                problems.append(f"{name} must be true or false, got {getattr(self, name)!r}")
        if not problems:
            if self.enhance and self.dim % self.enhance_heads:
                problems.append(f"dim {self.dim} is not divisible by enhance_heads {self.enhance_heads}")
            if self.dim % self.detr_heads:
                problems.append(f"dim {self.dim} is not divisible by detr_heads {self.detr_heads}")
            if self.query == "xpool" and self.matching == "h0":
                problems.append("query 'xpool' needs the X-Pool module (matching 'both' or 'xpool')")
            if self.enhance and self.enhance_layers == 0:
                problems.append("enhance_layers must be >= 1 when enhance is true (set enhance false instead)")
        if problems:
            raise ValueError("invalid MaDe config: " + "; ".join(problems))

    @property
    def uses_xpool(self) -> bool:
        """Whether the model has the X-Pool module (S1)."""
        return self.matching in ("both", "xpool")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every field."""
        return asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        """Names of the config fields, in declaration order."""
        return [f.name for f in fields(cls)]

    def updated(self, **changes: Any) -> MaDeConfig:
        """A copy with some fields changed (validated)."""
        return replace(self, **changes)


# ----------------------------------------------------------------------------------------------------------------
# Results


@dataclass
class VideoEncoding:
    """Everything about a batch of query videos that does not depend on the music (computed once per video)."""

    tokens: Tensor  # f~ [B, Lv, d], zero at padded frames
    mask: Tensor  # [B, Lv] bool, True = valid frame
    embedding: Tensor  # h(v) [B, d] float32, unit norm
    detection_tokens: Tensor  # the frame tokens detection fuses (f~, or f^ with fusion_input="projected")

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def token_counts(self) -> Tensor:
        """Valid frames of each video, int64 [B] (`mgsv.models.contract`)."""
        return self.mask.sum(1)

    def select(self, index: Tensor | list[int]) -> VideoEncoding:
        """The encodings of some videos, in the given order."""
        index = torch.as_tensor(index, dtype=torch.long, device=self.tokens.device)
        tokens = self.tokens.index_select(0, index)
        return VideoEncoding(tokens, self.mask.index_select(0, index), self.embedding.index_select(0, index),
                             _select_detection_tokens(self, tokens, index))

    @staticmethod
    def concat(parts: list[VideoEncoding]) -> VideoEncoding:
        """Concatenate encodings of several batches (padded to the longest sequence)."""
        if not parts:
            raise ValueError("nothing to concatenate")
        length = max(p.mask.shape[1] for p in parts)

        def pad(t: Tensor) -> Tensor:
            extra = length - t.shape[1]
            return F.pad(t, (0, 0, 0, extra)) if t.dim() == 3 else F.pad(t, (0, extra))

        tokens = torch.cat([pad(p.tokens) for p in parts])
        return VideoEncoding(tokens, torch.cat([pad(p.mask) for p in parts]), torch.cat([p.embedding for p in parts]),
                             _detection_tokens(parts, tokens, pad))


@dataclass
class MusicEncoding:
    """Everything about a batch of tracks that does not depend on the video (computed once per track)."""

    tokens: Tensor  # s~ [M, Lm, d], zero at padded segments
    mask: Tensor  # [M, Lm] bool
    embedding: Tensor  # h0(M) [M, d] float32, unit norm
    detection_tokens: Tensor  # the segment tokens detection fuses
    xpool: XPoolState | None = None  # per-track X-Pool tensors for inference; None without X-Pool

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def token_counts(self) -> Tensor:
        """Valid segments of each track, int64 [M] (`mgsv.models.contract`)."""
        return self.mask.sum(1)

    def for_detection(self) -> MusicEncoding:
        """The same tracks without X-Pool's state, which only relevance reads (`mgsv.models.contract`)."""
        return replace(self, xpool=None)

    def select(self, index: Tensor | list[int]) -> MusicEncoding:
        """The encodings of some tracks (e.g. the top-k of a ranking), in the given order."""
        index = torch.as_tensor(index, dtype=torch.long, device=self.tokens.device)
        tokens = self.tokens.index_select(0, index)
        return MusicEncoding(
            tokens, self.mask.index_select(0, index), self.embedding.index_select(0, index),
            _select_detection_tokens(self, tokens, index), None if self.xpool is None else self.xpool.select(index),
        )

    @staticmethod
    def concat(parts: list[MusicEncoding]) -> MusicEncoding:
        """Concatenate encodings of several batches (padded to the longest sequence)."""
        if not parts:
            raise ValueError("nothing to concatenate")
        length = max(p.mask.shape[1] for p in parts)

        def pad(t: Tensor) -> Tensor:
            extra = length - t.shape[1]
            return F.pad(t, (0, 0, 0, extra)) if t.dim() == 3 else F.pad(t, (0, extra))

        states = [p.xpool for p in parts]
        xpool = None
        if all(state is not None for state in states):
            padded = [state.padded(length) for state in states]
            xpool = XPoolState(*(torch.cat([getattr(p, f.name) for p in padded]) for f in fields(XPoolState)))
        tokens = torch.cat([pad(p.tokens) for p in parts])
        return MusicEncoding(tokens, torch.cat([pad(p.mask) for p in parts]), torch.cat([p.embedding for p in parts]),
                             _detection_tokens(parts, tokens, pad), xpool)


def _select_detection_tokens(encoding: Any, tokens: Tensor, index: Tensor) -> Tensor:
    """The selected detection tokens: the selected `tokens` themselves when the encoding detects on its own tokens."""
    if encoding.detection_tokens is encoding.tokens:
        return tokens
    return encoding.detection_tokens.index_select(0, index)


def _detection_tokens(parts: list[Any], tokens: Tensor, pad: Any) -> Tensor:
    """The concatenated detection tokens of encodings: `tokens` itself when every part detects on its own tokens
    (fusion_input "enhanced"), so that a large music set keeps one copy instead of two."""
    if all(p.detection_tokens is p.tokens for p in parts):
        return tokens
    return torch.cat([pad(p.detection_tokens) for p in parts])


@dataclass
class Relevance:
    """p_s and its two parts for every (video, track) pair; rows are videos, columns tracks."""

    p_s: Tensor
    s0: Tensor | None
    s1: Tensor | None


@dataclass
class Detection:
    """Moment predictions of every decoder layer for aligned (video i, track i) pairs; the last layer is the answer."""

    spans: Tensor  # [layers, B, Q, 2] (centre, width) / 240 s, float32
    logits: Tensor  # [layers, B, Q, 2] class logits, index 0 = foreground, float32
    hidden: Tensor  # [layers, B, Q, d] normalised decoder outputs

    @property
    def final_spans(self) -> Tensor:
        """[B, 2] normalised (centre, width) of the last layer's (only) query."""
        return self.spans[-1, :, 0]


@dataclass
class MaDeOutput:
    """What a training forward pass returns: everything the losses and the parity checks read."""

    video: VideoEncoding
    music: MusicEncoding
    s0: Tensor | None  # [B, B] cos(h(v)_i, h0(M)_j)
    s1: Tensor | None  # [B, B] cos(h(v)_i, h1(M_j | v_i))
    p_s: Tensor  # [B, B]
    xpool_music_emb: Tensor | None  # h1 [B music, B video, d] (official layout)
    detection: Detection
    contrastive_logits: Tensor | None  # [layers, B, Q]
    fusion_memory: Tensor  # DETR encoder output [B, L, d] in the compact layout (valid tokens first)
    fusion_layout: TokenLayout  # where the DETR tokens sit (mask [B, L])
    fusion_pos_rows: Tensor  # DETR position embedding of the valid tokens [N, d]
    logit_scale: Tensor  # learnable log scale of the InfoNCE logits

    @property
    def fusion_pos(self) -> Tensor:
        """DETR position embedding [B, L, d] in the layout of `fusion_memory` (zeros at padding)."""
        return self.fusion_layout.unpack(self.fusion_pos_rows)


# ----------------------------------------------------------------------------------------------------------------
# Modules


class EnhancementLayer(nn.Module):
    """The official enhancement block: x = LN1(x); x = SA(x) + x; x = LN2(x); x = FFN(x) + x.

    The residuals start from the *normalised* x and there is no final norm; that is what the official code runs.
    """

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, num_heads, dropout)
        self.ffn_norm = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn_dim, "gelu", dropout)

    def forward(self, x: Tensor, layout: TokenLayout) -> Tensor:
        """Packed rows [N, d] -> [N, d]."""
        x = self.attn_norm(x)
        x = self.attn.attend_packed(x, x, x, layout) + x
        x = self.ffn_norm(x)
        return self.ffn(x) + x


class UnimodalEnhancement(nn.Module):
    """Projection to d, then (when enabled) sinusoidal positions, self-attention block(s) and a final Linear."""

    def __init__(self, input_dim: int, config: MaDeConfig, positions: int) -> None:
        super().__init__()
        self.proj = nn.Linear(input_dim, config.dim)
        self.enabled = config.enhance
        self.max_len = positions
        if self.enabled:
            # Rebuilt, not stored: the official checkpoints' copy is only compared (official_keys.py).
            self.register_buffer("pe", sinusoidal_table(positions, config.dim), persistent=False)
            self.layers = nn.ModuleList(
                EnhancementLayer(config.dim, config.enhance_heads, config.enhance_ffn_dim, config.enhance_dropout)
                for _ in range(config.enhance_layers)
            )
            self.final_linear = nn.Linear(config.dim, config.dim)

    def reset_parameters(self) -> None:
        """PyTorch defaults everywhere; attention as `nn.MultiheadAttention` initialises itself."""
        for layer in getattr(self, "layers", []):
            layer.attn.reset_parameters()

    def forward(self, feats: Tensor, mask: Tensor, keep_projected: bool = False) -> tuple[Tensor, Tensor | None]:
        """feats [B, L, in], bool mask [B, L] -> (enhanced tokens [B, L, d], projected tokens or None), zero-padded."""
        layout = TokenLayout.from_mask(mask)
        x = self.proj(layout.pack(feats).to(self.proj.weight.dtype))
        projected = layout.unpack(x) if keep_projected else None
        if self.enabled:
            # Official: the table is added at every position (padding included); padded rows never reach valid
            # ones, so adding it to the valid rows at their own position gives the same valid tokens.
            positions = layout.index % layout.length
            x = x + self.pe.index_select(0, positions).to(x.dtype)
            for layer in self.layers:
                x = layer(x, layout)
            x = self.final_linear(x)
        return layout.unpack(x), projected


class XPool(nn.Module):
    """Video-guided music pooling (X-Pool), exactly as the official `Transformer_XA` with one head.

    h1(M | v) = LN3(a + Dropout(linear_proj(a))), a = LN2(out_proj(softmax(q k^T / sqrt(d)) v)),
    q = q_proj(LN1(h(v))), k = k_proj(LN1(s~)), v = v_proj(LN1(s~)); LN1 is shared by the query and the keys.
    """

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.dim = dim
        self.norm_in = nn.LayerNorm(dim)
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.norm_attn = nn.LayerNorm(dim)
        self.linear_proj = nn.Linear(dim, dim)
        self.norm_out = nn.LayerNorm(dim)
        self.dropout = Dropout(dropout)

    def reset_parameters(self) -> None:
        """The official init: identity matrices and zero biases for every projection."""
        with torch.no_grad():
            for proj in (self.q_proj, self.k_proj, self.v_proj, self.out_proj, self.linear_proj):
                nn.init.eye_(proj.weight)
                proj.bias.zero_()

    def query(self, video_emb: Tensor) -> Tensor:
        """q = q_proj(LN1(h(v))) [Nv, d]."""
        return self.q_proj(self.norm_in(video_emb.to(self.q_proj.weight.dtype)))

    def music_state(self, tokens: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Per-track keys and values [M, L, d] (zero at padding), computed on the valid segments only.

        out_proj is applied to the values before pooling (it is linear and no dropout sits between), and
        out_proj(v_proj(x)) = (W_o W_v) x + (W_o b_v + b_o) is one product per segment.
        """
        layout = TokenLayout.from_mask(mask)
        x = self.norm_in(layout.pack(tokens))
        value_map = self.out_proj.weight @ self.v_proj.weight
        value_bias = self.out_proj.weight @ self.v_proj.bias + self.out_proj.bias
        return layout.unpack(self.k_proj(x)), layout.unpack(F.linear(x, value_map, value_bias))

    def _attention(self, q: Tensor, keys: Tensor, mask: Tensor) -> Tensor:
        """Softmax weights [M, Nv, L] of queries [Nv, d] over each track's keys [M, L, d]."""
        # One matrix product [Nv, d] x [d, M * L]; broadcasting q against [M, d, L] would copy q M times.
        num_tracks, length, dim = keys.shape
        logits = (q @ keys.reshape(-1, dim).T).view(q.shape[0], num_tracks, length).transpose(0, 1)
        return (logits / math.sqrt(self.dim)).masked_fill(~mask[:, None, :], float("-inf")).softmax(-1)

    def _finish(self, attended: Tensor) -> Tensor:
        """a = LN2(attended); h1 = LN3(a + Dropout(linear_proj(a)))."""
        a = self.norm_attn(attended)
        return self.norm_out(a + self.dropout(self.linear_proj(a)))

    def forward(self, video_emb: Tensor, keys: Tensor, values: Tensor, mask: Tensor) -> Tensor:
        """h1 for every (track j, video i) pair: [M, Nv, d] (the official music-major layout)."""
        weights = self._attention(self.query(video_emb), keys, mask)
        return self._finish(torch.matmul(weights, values))

    def aligned(self, video_emb: Tensor, keys: Tensor, values: Tensor, mask: Tensor) -> Tensor:
        """h1 of the aligned pairs (video i, track i) only: [B, d]."""
        q = self.query(video_emb)[:, None, :]  # [B, 1, d]
        logits = torch.bmm(q, keys.transpose(1, 2)) / math.sqrt(self.dim)
        weights = logits.masked_fill(~mask[:, None, :], float("-inf")).softmax(-1)
        return self._finish(torch.bmm(weights, values)[:, 0])

    def track_state(self, tokens: Tensor, mask: Tensor) -> XPoolState:
        """Everything X-Pool needs from a batch of tracks at inference, computed once per track.

        Notation, per pair (video v, track M) with attention weights w over the segments (summing to one): the
        pooled values a = sum_l w_l v_l (v_l = out_proj(v_proj(x_l)), x_l = LN1(s~_l); out_proj moved inside the
        sum since it is linear), c = a - mean(a) = sum_l w_l vc_l with vc_l = v_l - mean(v_l),
        LN2(a) = g2 c / sigma + b2 and sigma^2 = |c|^2 / d + eps. Without dropout,
            z = LN2(a) + linear_proj(LN2(a)) = u / sigma + k0,  u = sum_l w_l u_l,  u_l = (I + W_p)(g2 vc_l),
            k0 = (I + W_p) b2 + b_p,  h1 = LN3(z) = g3 (z - mean(z)) / std(z) + b3.
        cos(h(v), h1) needs only sums over the d channels of z, which expand into
            |c|^2 = w' Gc w, |u|^2 = w' Gu w, |g3 u|^2 = w' Gg w   (Gram matrices of vc_l, u_l, g3 u_l),
            u . r = w . (U r) for five fixed vectors r (`_fixed_forms`),  u . (g3 h(v)) = w . (U (g3 h(v))).
        So a track stores its keys, U [L, d], the three Grams [3, L, L] and U r [L, 5]; a pair then costs two
        d-wide dot products per segment and sums over segments, never a d-wide vector per pair. vc_l and u_l are
        affine in x_l, so each is one matrix product per segment (`_value_maps`).
        """
        layout = TokenLayout.from_mask(mask)
        x = self.norm_in(layout.pack(tokens))
        u_map, u_bias, c_map, c_bias = self._value_maps()
        # keys, u_l and vc_l in one matrix product.
        weight = torch.cat([self.k_proj.weight.float(), u_map, c_map]).to(x.dtype)
        bias = torch.cat([self.k_proj.bias.float(), u_bias, c_bias]).to(x.dtype)
        keys, u, centred = F.linear(x, weight, bias).split(self.dim, dim=-1)
        forms, _ = self._fixed_forms()
        count, length = mask.shape
        with torch.autocast(tokens.device.type, enabled=False):
            # float32: the quadratic forms subtract nearly equal numbers when segments cancel out.
            uf = u.float()
            linear = layout.unpack(uf @ forms)
            parts = (centred.float(), uf, uf * self.norm_out.weight.float())
            grams = uf.new_zeros(count, 3, length, length)
            blocks = [layout.unpack_buckets(part) for part in parts]
            for i, bucket in enumerate(layout.buckets):  # tracks of similar length: Grams padded to their length
                size = bucket.length
                gram = torch.stack([b[i] @ b[i].transpose(1, 2) for b in blocks], dim=1)  # [items, 3, size, size]
                grams[bucket.items, :, :size, :size] = gram
        return XPoolState(layout.unpack(keys), layout.unpack(u), grams, linear)

    def _value_maps(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Affine maps (float32) from x = LN1(s~) to u_l and to vc_l (see `track_state`)."""
        w_v, b_v = self.v_proj.weight.float(), self.v_proj.bias.float()
        w_o, b_o = self.out_proj.weight.float(), self.out_proj.bias.float()
        value_map, value_bias = w_o @ w_v, w_o @ b_v + b_o
        c_map = value_map - value_map.mean(0, keepdim=True)  # centring over output channels is linear too
        c_bias = value_bias - value_bias.mean()
        mix = self.linear_proj.weight.float() * self.norm_attn.weight.float()  # W_p diag(g2)
        mix = mix + torch.diag(self.norm_attn.weight.float())  # (I + W_p) diag(g2)
        return mix @ c_map, mix @ c_bias, c_map, c_bias

    def _fixed_forms(self) -> tuple[Tensor, dict[str, Tensor]]:
        """The fixed vectors [d, 5] (1, k0, g3^2, g3^2 k0, g3 b3) and the float32 constants `similarity` uses."""
        b2 = self.norm_attn.bias.float()
        k0 = b2 + F.linear(b2, self.linear_proj.weight.float(), self.linear_proj.bias.float())
        g3, b3 = self.norm_out.weight.float(), self.norm_out.bias.float()
        forms = torch.stack([torch.ones_like(k0), k0, g3 * g3, g3 * g3 * k0, g3 * b3], dim=1)
        constants = {
            "k0": k0, "k0_sum": k0.sum(), "k0_sq": k0 @ k0, "g2_k0": (g3 * g3) @ k0,
            "g2_k0_sq": (g3 * g3) @ (k0 * k0), "gb_k0": (g3 * b3) @ k0, "g2": (g3 * g3).sum(),
            "gb": (g3 * b3).sum(), "b3_sq": b3 @ b3,
        }
        return forms, constants

    def attention_query(self, video_emb: Tensor) -> Tensor:
        """The query [Nv, d] that attends over standardised tokens: W_k^T q_proj(LN1(h(v))) * g1 / sqrt(d), float32.

        With x_l the standardised s~_l (`standardize_tokens` with LN1's eps), LN1(s~_l) = g1 x_l + b1 and the attention
        logit q . k_proj(LN1(s~_l)) / 16 is (W_k^T q * g1 / 16) . x_l plus a term that does not depend on l (softmax
        ignores it). So one attention of this folded query over x gives both the weights and the pooled x
        (`pool_standardized`); out_proj(v_proj(.)) is affine and the weights sum to one, so the pooled values are
        W_o W_v (g1 * pooled x + b1) + (W_o b_v + b_o) (`similarity_pooled`). A pair costs one pass over its track's
        [L, d] tokens; everything after the pooling is d-wide, and can run once for many tracks pooled in blocks.
        Unlike `similarity` (made for many videos x many tracks), a track stores nothing but x: this is what a large
        library keeps on disk.
        """
        query = self.query(video_emb).float() @ self.k_proj.weight.float()
        return query * self.norm_in.weight.float() / math.sqrt(self.dim)

    def pool_standardized(self, query: Tensor, standard: Tensor, mask: Tensor) -> Tensor:
        """Attention-pooled standardised tokens [M, Nv, d] of tracks `standard` [M, L, d] for queries [Nv, d]."""
        num_tracks, (num_videos, dim) = standard.shape[0], query.shape
        x = standard.float()
        # SDPA pools in one pass over x (no [M, Nv, L] weights in memory); bool mask: True = attend.
        return F.scaled_dot_product_attention(
            query.expand(num_tracks, num_videos, dim)[:, None], x[:, None], x[:, None],
            attn_mask=mask[:, None, None, :], scale=1.0,
        )[:, 0]

    def similarity_pooled(self, video_emb: Tensor, pooled: Tensor) -> Tensor:
        """S1 [Nv, M] from pooled standardised tokens [M, Nv, d] (`pool_standardized`)."""
        weight_in = self.norm_in.weight.float()
        value_map = self.out_proj.weight.float() @ self.v_proj.weight.float()
        value_bias = self.out_proj.weight.float() @ self.v_proj.bias.float() + self.out_proj.bias.float()
        values = F.linear(pooled.float() * weight_in + self.norm_in.bias.float(), value_map, value_bias)
        with torch.autocast(values.device.type, enabled=False):
            return MaDe._s1(video_emb, self._finish(values))

    def similarity(self, video_emb: Tensor, state: XPoolState, mask: Tensor, chunk: int | None = None) -> Tensor:
        """S1 [Nv, M] = cos(h(v)_i, h1(M_j | v_i)) from per-track states (`track_state`); float32.

        Tracks are sorted by length and handled in chunks padded to their own longest track, so memory stays
        bounded for any number of pairs and padding costs little.
        """
        num_videos, num_tracks, dim = video_emb.shape[0], len(state), self.dim
        if chunk is None:
            chunk = max(1, _RELEVANCE_CHUNK_ELEMENTS // max(1, num_videos * 4 * mask.shape[1]))
        q = self.query(video_emb) / math.sqrt(dim)
        video = video_emb.float()
        video = video / video.norm(dim=-1, keepdim=True)
        _, const = self._fixed_forms()
        b3 = self.norm_out.bias.float()
        video_g = video * self.norm_out.weight.float()  # g3 h(v) [Nv, d]
        vg_sum, vg_k0, v_b3 = video_g.sum(-1), video_g @ const["k0"], video @ b3
        video_g = video_g.to(state.values.dtype)
        eps2, eps3 = self.norm_attn.eps, self.norm_out.eps
        lengths = (mask * torch.arange(1, mask.shape[1] + 1, device=mask.device)).amax(1)
        order = torch.argsort(lengths, descending=True)
        out = torch.empty(num_videos, num_tracks, dtype=torch.float32, device=video_emb.device)
        for start in range(0, num_tracks, chunk):
            if chunk >= num_tracks:
                # One chunk holds every track (one video against a part of a library): reading the state in
                # place, padding included, is cheaper than copying it into length order.
                tracks = torch.arange(num_tracks, device=mask.device)
                part, valid = state, mask[None]
            else:
                tracks = order[start:start + chunk]
                part = state.select(tracks, length=int(lengths[tracks[0]]))
                valid = mask.index_select(0, tracks)[None, :, :part.keys.shape[1]]
            m, length = len(tracks), part.keys.shape[1]
            # Track-major layout [m, L, Nv] throughout: each of the two matrix products over all (segment, video)
            # pairs of the chunk is one [m * L, d] x [d, Nv] product, and the per-track batched products below read
            # it as it is (no transposed copies).
            logits = (part.keys.reshape(-1, dim) @ q.T).view(m, length, num_videos)
            w = logits.masked_fill(~valid.view(m, length, 1), float("-inf")).softmax(1, dtype=torch.float32)
            uv = (part.values.reshape(-1, dim) @ video_g.T).view(m, length, num_videos)
            with torch.autocast(w.device.type, enabled=False):
                uv = uv.float().mul_(w).sum(1)  # u . (g3 h(v)) [m, Nv]
                quad = torch.bmm(part.grams.view(m, 3 * length, length), w).view(m, 3, length, num_videos)
                cc, uu, gu = (quad.mul_(w[:, None]).sum(2)).unbind(1)  # w' G w for the three Grams, [m, Nv] each
                lin = torch.bmm(part.linear.transpose(1, 2), w).transpose(1, 2)  # [m, Nv, 5]
            s = torch.rsqrt(cc.clamp(min=0) / dim + eps2)  # 1 / sigma of LN2
            # LN3 statistics of z = s u + k0.
            mean = (s * lin[..., 0] + const["k0_sum"]) / dim
            var = (s * s * uu + 2 * s * lin[..., 1] + const["k0_sq"]) / dim - mean * mean
            inv = torch.rsqrt(var.clamp(min=0) + eps3)
            # h(v) . LN3(z) and |LN3(z)|^2, with LN3(z) = g3 (z - mean) inv + b3.
            dot = (s * uv + vg_k0 - mean * vg_sum) * inv + v_b3
            spread = (s * s * gu + 2 * s * lin[..., 3] + const["g2_k0_sq"]
                      - 2 * mean * (s * lin[..., 2] + const["g2_k0"]) + mean * mean * const["g2"])
            norm_sq = inv * inv * spread + 2 * inv * (s * lin[..., 4] + const["gb_k0"] - mean * const["gb"]) \
                + const["b3_sq"]
            out[:, tracks] = (dot / norm_sq.clamp(min=0).sqrt()).T
        return out


@dataclass
class XPoolState:
    """Per-track X-Pool tensors for inference (see `XPool.track_state`); item i belongs to track i."""

    keys: Tensor  # [M, L, d] k_proj(LN1(s~))
    values: Tensor  # [M, L, d] u_l = (I + W_p)(g2 * centred(out_proj(v_proj(LN1(s~)))))
    grams: Tensor  # [M, 3, L, L] float32 Gram matrices of centred values, u_l and g3 * u_l
    linear: Tensor  # [M, L, 5] float32 u_l . r for the fixed vectors r

    def __len__(self) -> int:
        return self.keys.shape[0]

    def select(self, index: Tensor, length: int | None = None) -> XPoolState:
        """Some tracks, optionally cut to their first `length` segments."""
        length = self.keys.shape[1] if length is None else length
        return XPoolState(
            self.keys.index_select(0, index)[:, :length], self.values.index_select(0, index)[:, :length],
            self.grams.index_select(0, index)[:, :, :length, :length].contiguous(),
            self.linear.index_select(0, index)[:, :length],
        )

    def padded(self, length: int) -> XPoolState:
        """The same tracks padded with zeros to `length` segments."""
        pad = length - self.keys.shape[1]
        if pad == 0:
            return self
        return XPoolState(F.pad(self.keys, (0, 0, 0, pad)), F.pad(self.values, (0, 0, 0, pad)),
                          F.pad(self.grams, (0, pad, 0, pad)), F.pad(self.linear, (0, 0, 0, pad)))


class CrossFusion(nn.Module):
    """Ablation fusion "CA": segments attend to frames (the official `CrossTransformer`, depth 1).

    x = s + to_out(attend(LNq(s), LNc(f))); x = x + FFN(LNf(x)); final_linear(x); padded segments zeroed.
    """

    def __init__(self, config: MaDeConfig) -> None:
        super().__init__()
        dim, inner = config.dim, config.cross_fusion_heads * config.cross_fusion_head_dim
        self.heads = config.cross_fusion_heads
        self.query_norm = nn.LayerNorm(dim)
        self.context_norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.Linear(inner, dim)
        self.ffn_norm = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, config.enhance_ffn_dim, "gelu", config.enhance_dropout)
        self.final_linear = nn.Linear(dim, dim)
        self.dropout = Dropout(config.enhance_dropout)

    def reset_parameters(self) -> None:
        """The official init: xavier-normal matrices (k and v drawn as one packed matrix), biases 0.01."""
        with torch.no_grad():
            nn.init.xavier_normal_(self.to_q.weight)
            packed = torch.empty(2 * self.to_k.out_features, self.to_k.in_features, device=self.to_k.weight.device)
            nn.init.xavier_normal_(packed)
            self.to_k.weight.copy_(packed[: self.to_k.out_features])
            self.to_v.weight.copy_(packed[self.to_k.out_features:])
            for linear in (self.to_out, self.ffn.fc1, self.ffn.fc2):
                nn.init.xavier_normal_(linear.weight)
                linear.bias.fill_(0.01)

    def forward(self, music: Tensor, music_mask: Tensor, video: Tensor, video_mask: Tensor) -> Tensor:
        """music [B, Lm, d] attends to video [B, Lv, d] -> fused music tokens [B, Lm, d]."""
        q = self.to_q(self.query_norm(music)).unflatten(-1, (self.heads, -1)).transpose(1, 2)
        context = self.context_norm(video)
        k = self.to_k(context).unflatten(-1, (self.heads, -1)).transpose(1, 2)
        v = self.to_v(context).unflatten(-1, (self.heads, -1)).transpose(1, 2)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=video_mask[:, None, None, :])
        x = music + self.dropout(self.to_out(attended.transpose(1, 2).flatten(2)))
        x = x + self.ffn(self.ffn_norm(x))
        return self.final_linear(x).masked_fill(~music_mask[..., None], 0.0)


# ----------------------------------------------------------------------------------------------------------------
# The model


class MaDe(nn.Module):
    """MaDe: enhance -> xpool (matching) and fusion -> decoder -> span/class heads (detection)."""

    config_class = MaDeConfig
    capabilities = Capabilities(ranks=True, grounds=True, searchable=True)

    def __init__(self, config: MaDeConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or MaDeConfig()
        d = config.dim
        self.enhance = nn.ModuleDict({
            "video": UnimodalEnhancement(config.video_dim, config, config.video_positions),
            "music": UnimodalEnhancement(config.music_dim, config, config.music_positions),
        })
        self.xpool = XPool(d, config.xpool_dropout) if config.uses_xpool else None
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / config.temperature_init), dtype=torch.float32))
        self.cross_fusion = CrossFusion(config) if config.fusion == "cross_attention" else None
        self.fusion = DetrEncoder(d, config.detr_heads, config.detr_ffn_dim, config.detr_dropout,
                                  config.encoder_layers)
        self.decoder = DetrDecoder(d, config.detr_heads, config.detr_ffn_dim, config.detr_dropout,
                                   config.decoder_layers, config.decoder_self_attention)
        # The positional query P. The official optimiser never sees it, so it stays at its N(0, 1) init; frozen
        # here unless the config trains it, so no optimiser can move it by accident.
        self.query_pos = nn.Parameter(torch.empty(1, d), requires_grad=config.train_query_pos)
        self.span_head = MLP(d, d, 2, 3)
        self.class_head = nn.Linear(d, 2)
        if config.contrastive_align:
            self.align_query_proj = nn.Linear(d, config.contrastive_dim)
            self.align_video_proj = nn.Linear(d, config.contrastive_dim)
        else:
            self.align_query_proj = self.align_video_proj = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The official initialisation (docs/official-code.md, "Model"): defaults, identity X-Pool, xavier DETR, N(0, 1) P."""
        for enhancement in self.enhance.values():
            enhancement.reset_parameters()
        if self.xpool is not None:
            self.xpool.reset_parameters()
        if self.cross_fusion is not None:
            self.cross_fusion.reset_parameters()
        reset_detr_parameters(self.fusion)
        reset_detr_parameters(self.decoder)
        with torch.no_grad():
            self.logit_scale.fill_(math.log(1 / self.config.temperature_init))
            nn.init.normal_(self.query_pos)

    # -- parameter groups -------------------------------------------------------------------------------------

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """The official optimiser groups: enhancement, matching (X-Pool + logit_scale), detection.

        A frozen positional query (config.train_query_pos false, the official behaviour) is in no group.
        """
        detection = [p for name, p in self.named_parameters()
                     if not name.startswith(("enhance.", "xpool.", "logit_scale")) and p.requires_grad]
        matching = ([] if self.xpool is None else list(self.xpool.parameters())) + [self.logit_scale]
        return {"enhancement": list(self.enhance.parameters()), "matching": matching, "detection": detection}

    # -- encoders ---------------------------------------------------------------------------------------------

    def _encode(self, modality: str, feats: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(tokens, bool mask, unit-norm float32 embedding, detection tokens) of one modality."""
        block = self.enhance[modality]
        name, dim = (("frame_feats", self.config.video_dim) if modality == "video"
                     else ("segment_feats", self.config.music_dim))
        mask = check_tokens(feats, mask, name, dim, block.max_len)
        projected = self.config.fusion_input == "projected"
        tokens, proj_tokens = block(feats, mask, keep_projected=projected)
        pooled = tokens.sum(1, dtype=torch.float32) / mask.sum(1, keepdim=True)
        embedding = F.normalize(pooled, p=2, dim=-1)
        return tokens, mask, embedding, proj_tokens if projected else tokens

    def encode_video(self, frame_feats: Tensor, frame_mask: Tensor) -> VideoEncoding:
        """frame_feats [B, Lv, 512] + mask [B, Lv] (1 = valid) -> VideoEncoding (f~, h(v))."""
        return VideoEncoding(*self._encode("video", frame_feats, frame_mask))

    def encode_music(
        self, segment_feats: Tensor, segment_mask: Tensor, *, matching_state: bool = True
    ) -> MusicEncoding:
        """segment_feats [M, Lm, 768] + mask -> MusicEncoding (s~, h0(M) and, unless told not to, X-Pool's state)."""
        music = MusicEncoding(*self._encode("music", segment_feats, segment_mask))
        return self.with_matching_state(music) if matching_state else music

    def with_matching_state(self, music: MusicEncoding) -> MusicEncoding:
        """The same encoding with X-Pool's per-track inference state (see `XPool.track_state`) computed."""
        if self.xpool is None:
            return music
        return replace(music, xpool=self.xpool.track_state(music.tokens, music.mask))

    # -- matching ---------------------------------------------------------------------------------------------

    def _combine(self, s0: Tensor | None, s1: Tensor | None) -> Tensor:
        """p_s from the similarities the config uses."""
        if self.config.matching == "h0":
            return s0
        if self.config.matching == "xpool":
            return s1
        return s0 + s1

    def relevance(self, video: VideoEncoding, music: MusicEncoding, *, components: bool = False,
                  chunk: int | None = None) -> Tensor | Relevance:
        """p_s [B videos, M tracks] (float32) for every pair; with components=True a `Relevance` (p_s, S0, S1).

        Eval mode uses the folded X-Pool and handles tracks in chunks (memory stays bounded for 2,000 x 2,000);
        training mode recomputes X-Pool the official way so that its dropout applies.
        """
        s0 = s1 = None
        if self.config.matching in ("both", "h0"):
            s0 = video.embedding @ music.embedding.T
        if self.xpool is not None:
            if self.training:
                keys, values = self.xpool.music_state(music.tokens, music.mask)
                s1 = self._s1(video.embedding, self.xpool(video.embedding, keys, values, music.mask))
            else:
                if music.xpool is None:
                    raise ModelInputError("this MusicEncoding has no X-Pool state; make it with this model's "
                                          "encode_music")
                s1 = self.xpool.similarity(video.embedding, music.xpool, music.mask, chunk)
        p_s = self._combine(s0, s1)
        return Relevance(p_s, s0, s1) if components else p_s

    def relevance_standardized(self, video: VideoEncoding, embedding: Tensor, standard: Tensor,
                               mask: Tensor) -> Tensor:
        """p_s [B videos, M tracks] (float32) from the compact per-track form a search index stores.

        `embedding` is h0(M) [M, d]; `standard` [M, L, d] (any float dtype, read in float32) are the tracks' s~
        standardised with X-Pool's input-norm eps (`standardize_tokens`), `mask` [M, L]. Eval mode: no dropout.
        """
        pooled = None
        if self.xpool is not None:
            pooled = self.xpool.pool_standardized(self.xpool.attention_query(video.embedding), standard, mask)
        return self.relevance_pooled(video, embedding, pooled)

    def relevance_pooled(self, video: VideoEncoding, embedding: Tensor, pooled: Tensor | None) -> Tensor:
        """p_s [B, M] from h0 [M, d] and X-Pool's pooled standardised tokens [M, B, d] (`XPool.pool_standardized`;
        None for a model without X-Pool). Lets a search pool its candidates block by block and finish them at once."""
        s0 = s1 = None
        if self.config.matching in ("both", "h0"):
            s0 = video.embedding.float() @ embedding.float().T
        if self.xpool is not None:
            s1 = self.xpool.similarity_pooled(video.embedding, pooled)
        return self._combine(s0, s1)

    # -- the index form a music library stores (mgsv.models.contract.LibrarySearchable) ------------------------

    def index_layout(self) -> IndexLayout:
        """Per track: h0 and s~ standardised with X-Pool's input-norm eps (float16) with each token's (mean, std),
        plus the detection tokens when detection fuses other tokens than s~ (docs/scale.md)."""
        return IndexLayout(self.config.dim, detection_tokens=self.config.fusion_input != "enhanced")

    @torch.no_grad()
    def index_entries(self, music: MusicEncoding) -> dict[str, np.ndarray]:
        """What the index stores for a batch of encoded tracks (numpy, per track; see `index_layout`)."""
        eps = self.xpool.norm_in.eps if self.xpool is not None else 1e-5
        tokens, mask = music.tokens.float().cpu(), music.mask.cpu()
        standard, mean, std = standardize_tokens(tokens, mask, eps)
        entries = {
            "embedding": music.embedding.float().cpu().numpy(),
            "tokens": standard.half().numpy(),
            "moments": torch.stack([mean, std], dim=-1).numpy(),
            "mask": mask.numpy(),
        }
        if self.index_layout().detection_tokens:
            entries["detection"] = music.detection_tokens.half().cpu().numpy()
        return entries

    def index_scorer(self, video: VideoEncoding) -> MaDeIndexScorer:
        """Scores one encoded video against stored tracks from their index form (exact p_s, float32)."""
        return MaDeIndexScorer(self, video)

    def index_encodings(self, entries: Mapping[str, Tensor]) -> MusicEncoding:
        """Tracks' encodings for detection, rebuilt from stored entries padded to one length (s~ = x * std + mean;
        no X-Pool state: detection does not need it)."""
        mask = entries["mask"]
        moments = entries["moments"].float()
        tokens = (entries["tokens"].float() * moments[..., 1:] + moments[..., :1]).masked_fill(~mask[..., None], 0.0)
        detection = entries["detection"].float() if "detection" in entries else tokens
        return MusicEncoding(tokens, mask, entries["embedding"].float(), detection, None)

    @staticmethod
    def _s1(video_emb: Tensor, h1: Tensor) -> Tensor:
        """S1[i, j] = cos(h(v)_i, h1[j, i]) from h1 in the music-major layout [M, Nv, d] -> float32 [Nv, M].

        Reductions read h1 in its own precision (bf16 under autocast) instead of copying [M, Nv, d] to float32;
        `pair_cosine` has a one-pass backward.
        """
        video = video_emb.float()
        return pair_cosine(h1, video / video.norm(dim=-1, keepdim=True))

    # -- detection --------------------------------------------------------------------------------------------

    def _fusion_rows(self, video: VideoEncoding, music: MusicEncoding) -> tuple[Tensor, TokenLayout]:
        """The DETR input as packed rows [N, d] and their layout.

        concat: each pair's valid frames followed by its valid segments. The official input is concat([f (50 rows),
        s (96 rows)]) with padding inside; the sine positions count valid tokens only and padded tokens are masked
        keys, so this compact order gives the same valid outputs without computing any padding.
        """
        if self.cross_fusion is not None:
            fused = self.cross_fusion(music.detection_tokens, music.mask, video.detection_tokens, video.mask)
            layout = TokenLayout.from_mask(music.mask)
            return layout.pack(fused), layout
        video_mask, music_mask = video.mask, music.mask
        num_video = video_mask.sum(1)
        total = num_video + music_mask.sum(1)
        length = int(total.max())
        batch = video_mask.shape[0]
        mask = torch.arange(length, device=total.device)[None, :] < total[:, None]
        row = torch.arange(batch, device=total.device)[:, None] * length
        slots = torch.cat([(row + video_mask.cumsum(1) - 1)[video_mask],
                           (row + music_mask.cumsum(1) - 1 + num_video[:, None])[music_mask]])
        tokens = video.detection_tokens
        rows = torch.cat([tokens[video_mask], music.detection_tokens[music_mask].to(tokens.dtype)])
        if not self.training and batch * length <= _DENSE_DETECTION_POSITIONS * rows.shape[0]:
            # Pairs of nearly equal length (detection sorts them, mgsv.inference.batched): the padded batch is
            # the layout, each token placed at its slot. Not in training, where dropout would draw its masks over
            # the padded rows too and change which units a seed drops.
            layout = TokenLayout.padded(mask)
            return rows.new_zeros(batch * length, rows.shape[1]).index_copy_(0, slots, rows), layout
        layout = TokenLayout.from_mask(mask)
        # Packed rows follow the layout's order: place each token at the rank its slot has there.
        rank = torch.empty(batch * length, dtype=torch.long, device=total.device)
        rank[layout.index] = torch.arange(layout.index.numel(), device=total.device)
        return rows.new_empty(rows.shape).index_copy_(0, rank[slots], rows), layout

    def _fusion_positions(self, layout: TokenLayout) -> Tensor:
        """DETR sine positions of the layout's rows [N, d].

        In a dense layout (`_fusion_rows`) every item is a prefix of valid tokens, so its positions depend only on
        its count: they are computed once per distinct count and gathered, instead of a sine and a cosine per row.
        """
        if not layout.dense:
            return sine_embedding(layout.pack(normalized_positions(layout.mask)[..., None])[:, 0], self.config.dim)
        counts, which = torch.unique(layout.mask.sum(1), return_inverse=True)
        prefixes = torch.arange(layout.length, device=counts.device)[None, :] < counts[:, None]
        table = sine_embedding(normalized_positions(prefixes), self.config.dim)  # [distinct counts, L, d]
        return layout.pack(table.index_select(0, which))

    def _content_query(self, video: VideoEncoding, music: MusicEncoding, aligned_h1: Tensor | None) -> Tensor:
        """The decoder's content query [B, d] (float32 sources)."""
        kind = self.config.query
        if kind == "video":
            return video.embedding
        if kind == "music":
            return music.embedding
        if kind == "xpool":
            if aligned_h1 is None:
                keys, values = self.xpool.music_state(music.tokens, music.mask)
                aligned_h1 = self.xpool.aligned(video.embedding, keys, values, music.mask)
            return aligned_h1
        return torch.zeros_like(video.embedding)

    def _detect(self, video: VideoEncoding, music: MusicEncoding,
                aligned_h1: Tensor | None = None) -> tuple[Detection, TokenLayout, Tensor, Tensor]:
        """Detection plus the DETR layout, the padded encoder memory and the position rows."""
        if len(video) != len(music):
            raise ModelInputError(f"detect pairs video i with track i: got {len(video)} videos and {len(music)} "
                                  "tracks")
        rows, layout = self._fusion_rows(video, music)
        pos = self._fusion_positions(layout).to(rows.dtype)
        memory_rows = self.fusion(rows, pos, layout)
        memory, memory_keys = layout.unpack(memory_rows), layout.unpack(memory_rows + pos)
        target = self._content_query(video, music, aligned_h1)[:, None, :]
        hidden = self.decoder(target, self.query_pos[None], memory_keys, memory, layout.mask)
        # The heads run in float32 even under a bf16 autocast: they are cheap and the spans keep their precision.
        with torch.autocast(memory.device.type, enabled=False):
            dtype = self.class_head.weight.dtype
            logits = self.class_head(hidden.to(dtype)).float()
            spans = self.span_head(hidden.to(dtype)).sigmoid().float()
        return Detection(spans, logits, hidden), layout, memory, pos

    def detect(self, video: VideoEncoding, music: MusicEncoding) -> Detection:
        """Moments for aligned pairs (video i in track i): spans and logits of every decoder layer."""
        return self._detect(video, music)[0]

    def _contrastive_logits(self, hidden: Tensor, video: VideoEncoding) -> Tensor | None:
        """Official contrastive-align logits [layers, B, Q]: sum over frames of cos(proj(query), proj(frame)) / 0.07.

        The official sum runs over all `max_video_frames` rows, padded ones (zero tokens, so the projection is the
        bias) included; counting those rows explicitly makes the value independent of how the batch is padded.
        The sum over frames of cos(query, frame) is query . (sum of the unit frame vectors), one product per query.

        Computed without an autograd graph: with MaDe's single query the contrastive-align loss is
        -x + logsumexp([x]), exactly 0 with an exactly zero gradient (training/losses.py), so a graph would only
        carry zeros back (through a [B, frames, c] normalisation) and the align projections would receive zero
        gradients, which leave Adam's update of them at zero as no gradient does.
        """
        if self.align_query_proj is None:
            return None
        with torch.no_grad():
            queries = self.align_query_proj(hidden.to(self.align_query_proj.weight.dtype)).float()
            queries = F.normalize(queries, dim=-1)
            frames = F.normalize(self.align_video_proj(video.tokens).float(), dim=-1)
            frame_sum = frames.masked_fill(~video.mask[..., None], 0.0).sum(1)  # [B, c]
            padded = (self.config.max_video_frames - video.mask.sum(1)).clamp(min=0).float()
            bias = F.normalize(self.align_video_proj.bias.float(), dim=-1)
            return (torch.einsum("lbqc,bc->lbq", queries, frame_sum) + padded[:, None] * (queries @ bias)) / 0.07

    # -- training forward -------------------------------------------------------------------------------------

    def forward(self, frame_feats: Tensor, frame_mask: Tensor, segment_feats: Tensor,
                segment_mask: Tensor) -> MaDeOutput:
        """Training pass over B aligned (video i, track i) pairs: all B x B similarities and B detections."""
        video = VideoEncoding(*self._encode("video", frame_feats, frame_mask))
        tokens, mask, embedding, detection_tokens = self._encode("music", segment_feats, segment_mask)
        music = MusicEncoding(tokens, mask, embedding, detection_tokens)
        s0 = video.embedding @ music.embedding.T if self.config.matching in ("both", "h0") else None
        s1 = h1 = aligned = None
        if self.xpool is not None:
            keys, values = self.xpool.music_state(music.tokens, music.mask)
            h1 = self.xpool(video.embedding, keys, values, music.mask)
            s1 = self._s1(video.embedding, h1)
            aligned = torch.diagonal(h1).T  # h1(M_i | v_i) [B, d]
        detection, layout, memory, pos = self._detect(video, music, aligned)
        # Returned through an op, not as the Parameter itself: DistributedDataParallel(find_unused_parameters=True)
        # walks the graph from the outputs, cannot see a bare leaf, marks it unused and then fails when its
        # gradient arrives ("marked as ready twice").
        return MaDeOutput(
            video=video, music=music, s0=s0, s1=s1, p_s=self._combine(s0, s1), xpool_music_emb=h1,
            detection=detection, contrastive_logits=self._contrastive_logits(detection.hidden, video),
            fusion_memory=memory, fusion_layout=layout, fusion_pos_rows=pos, logit_scale=self.logit_scale.view(()),
        )


class MaDeIndexScorer:
    """p_s of one video against tracks stored in MaDe's index form (`MaDe.index_entries`), pooled block by block.

    X-Pool's query folds into one vector (`XPool.attention_query`), each block of standardised tokens is pooled
    (`XPool.pool_standardized`), and the d-wide rest runs once for every track (`MaDe.relevance_pooled`). Float32
    whatever the caller's autocast: the stored tokens are float16 already, and bf16 would make scores coarser
    without making this pass faster.
    """

    def __init__(self, model: MaDe, video: VideoEncoding) -> None:
        if len(video) != 1:
            raise ModelInputError(f"an index scorer ranks for one video, got {len(video)}")
        self.model, self.video = model, video
        self.needs_tokens = model.xpool is not None  # without X-Pool, p_s needs no tokens at all
        with torch.autocast(video.embedding.device.type, enabled=False):
            self.query = model.xpool.attention_query(video.embedding) if self.needs_tokens else None

    def pool(self, tokens: Tensor, mask: Tensor) -> Tensor:
        """Pooled standardised tokens [c, 1, d] of a block of tracks (tokens [c, L, d], mask [c, L])."""
        with torch.autocast(tokens.device.type, enabled=False):
            return self.model.xpool.pool_standardized(self.query, tokens, mask)

    def scores(self, embeddings: Tensor, pooled: Tensor | None) -> Tensor:
        """p_s [n] from h0 [n, d] and the pooled tokens [n, 1, d] (None without X-Pool)."""
        with torch.autocast(embeddings.device.type, enabled=False):
            return self.model.relevance_pooled(self.video, embeddings, pooled)[0]
