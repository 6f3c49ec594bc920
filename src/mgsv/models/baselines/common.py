"""What the baselines share: encodings, outputs, input projections, config checks and small transformer pieces.

MGSV maps onto moment retrieval as: the query **video** plays the role of the text query (its CLIP frames are the
"words") and the **music track** plays the role of the video being searched (its AST segments are the "clips"). So
in every grounding baseline the music tokens carry the temporal position embedding and the predicted span lives on
the music time axis, normalised by the 240 s horizon like MaDe's.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mgsv.models.layers import FeedForward, ModelInputError, MultiHeadAttention, TokenLayout, check_tokens
from mgsv.models.made import Detection

# ----------------------------------------------------------------------------------------------------------------
# Configs


class ConfigChecks:
    """Mixin for config dataclasses: `to_dict`, and field validation declared by the subclass."""

    POSITIVE: ClassVar[tuple[str, ...]] = ()
    NON_NEGATIVE: ClassVar[tuple[str, ...]] = ()
    FRACTIONS: ClassVar[tuple[str, ...]] = ()  # dropout-like values in [0, 1)
    FLAGS: ClassVar[tuple[str, ...]] = ()
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {}

    def problems(self) -> list[str]:
        """Every invalid field, as messages (empty when the config is valid)."""
        found = []
        for name in self.POSITIVE:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                found.append(f"{name} must be a positive integer, got {value!r}")
        for name in self.NON_NEGATIVE:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                found.append(f"{name} must be a non-negative integer, got {value!r}")
        for name in self.FRACTIONS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                found.append(f"{name} must be in [0, 1), got {value!r}")
        for name in self.FLAGS:
            if not isinstance(getattr(self, name), bool):
                found.append(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name, choices in self.CHOICES.items():
            if getattr(self, name) not in choices:
                found.append(f"{name} must be one of {', '.join(choices)}, got {getattr(self, name)!r}")
        return found

    def check(self) -> None:
        """Raise ValueError listing every problem (the registry turns it into a ConfigError)."""
        found = self.problems()
        if not found:
            heads = getattr(self, "heads", None)
            if heads and self.dim % heads:
                found.append(f"dim {self.dim} is not divisible by heads {heads}")
        if found:
            raise ValueError(f"invalid {type(self).__name__}: " + "; ".join(found))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every field."""
        return asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        """Names of the config fields, in declaration order."""
        return [f.name for f in fields(cls)]


@dataclass
class DetrBaselineConfig(ConfigChecks):
    """Sizes shared by the DETR-style grounding baselines; defaults are their official QVHighlights settings."""

    video_dim: int = 512  # CLIP frame features (the "text query" of moment retrieval)
    music_dim: int = 768  # AST segment features (the "video clips" of moment retrieval)
    dim: int = 256  # hidden_dim
    heads: int = 8
    ffn_dim: int = 1024  # dim_feedforward
    dropout: float = 0.1
    input_dropout: float = 0.5
    num_queries: int = 10
    encoder_layers: int = 2
    decoder_layers: int = 2
    max_video_frames: int = 50
    max_segments: int = 96

    POSITIVE = ("video_dim", "music_dim", "dim", "heads", "ffn_dim", "num_queries", "decoder_layers",
                "max_video_frames", "max_segments")
    NON_NEGATIVE = ("encoder_layers",)
    FRACTIONS = ("dropout", "input_dropout")

    def __post_init__(self) -> None:
        self.check()


# ----------------------------------------------------------------------------------------------------------------
# Encodings and outputs


@dataclass
class TokenEncoding:
    """Projected tokens of a batch of videos or tracks: what a grounding baseline keeps per item."""

    tokens: Tensor  # [B, L, d], zero at padding
    mask: Tensor  # [B, L] bool, True = valid

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def token_counts(self) -> Tensor:
        """Valid tokens of each item, int64 [B] (`mgsv.models.contract`)."""
        return self.mask.sum(1)

    def select(self, index: Tensor | list[int]) -> TokenEncoding:
        """Some items, in the given order (repeats allowed)."""
        index = torch.as_tensor(index, dtype=torch.long, device=self.tokens.device)
        return TokenEncoding(self.tokens.index_select(0, index), self.mask.index_select(0, index))

    @staticmethod
    def concat(parts: list[TokenEncoding]) -> TokenEncoding:
        """Encodings of several batches as one, padded to the longest sequence."""
        length = max(p.mask.shape[1] for p in parts)
        return TokenEncoding(
            torch.cat([F.pad(p.tokens, (0, 0, 0, length - p.tokens.shape[1])) for p in parts]),
            torch.cat([F.pad(p.mask, (0, length - p.mask.shape[1])) for p in parts]),
        )


@dataclass
class RankedDetection(Detection):
    """Detections of several moment queries: the answer is the query with the highest foreground probability."""

    @property
    def final_spans(self) -> Tensor:
        """[B, 2] normalised (centre, width) of the last layer's most confident query."""
        foreground = self.logits[-1].float().softmax(-1)[..., 0]  # [B, Q]
        best = foreground.argmax(-1)
        return self.spans[-1, torch.arange(len(best), device=best.device), best]


@dataclass
class GroundingOutput:
    """What a grounding baseline's training forward returns: the detection of every aligned pair."""

    detection: Detection


# ----------------------------------------------------------------------------------------------------------------
# Layers


class InputProjection(nn.Module):
    """Moment-DETR's input projection: [LayerNorm -> Dropout -> Linear -> ReLU] then [LayerNorm -> Dropout -> Linear].

    Used unchanged by Moment-DETR, QD-DETR, TR-DETR, EaTR and UVCOM (`n_input_proj=2`).
    """

    def __init__(self, input_dim: int, dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(input_dim)
        self.fc1 = nn.Linear(input_dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.fc2 = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """[..., input_dim] -> [..., dim]."""
        x = F.relu(self.fc1(self.dropout(self.norm1(x))))
        return self.fc2(self.dropout(self.norm2(x)))


class PostNormEncoderLayer(nn.Module):
    """A standard post-norm transformer encoder layer (BERT / nn.TransformerEncoderLayer), on packed rows.

    Unlike `DetrEncoderLayer` no position embedding is added inside: the caller adds it to the input once.
    """

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float, activation: str = "relu",
                 eps: float = 1e-5) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(dim, heads, dropout)
        self.attn_norm = nn.LayerNorm(dim, eps=eps)
        self.ffn = FeedForward(dim, ffn_dim, activation, dropout)
        self.ffn_norm = nn.LayerNorm(dim, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, layout: TokenLayout) -> Tensor:
        """Packed rows [N, d] of `layout` -> [N, d]."""
        x = self.attn_norm(x + self.dropout(self.self_attn.attend_packed(x, x, x, layout)))
        return self.ffn_norm(x + self.ffn(x))


class CrossAttentionLayer(nn.Module):
    """QD-DETR's text-to-video encoder layer ("T2V"): one sequence attends to another, then a feed-forward.

    queries = x + pos_x, keys = context + pos_context, values = context; y = x + attention; out = LN2(y + FFN(LN1(y))).
    The FFN reads the normalised y but its residual is the un-normalised y, exactly as the official layer.
    """

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(dim, heads, dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn_dim, "relu", dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, pos: Tensor, context: Tensor, context_pos: Tensor, context_mask: Tensor) -> Tensor:
        """x [B, L, d] attends to context [B, Lc, d] (mask [B, Lc]) -> [B, L, d]."""
        y = x + self.dropout(self.attn(x + pos, context + context_pos, context, context_mask))
        return self.norm2(y + self.ffn(self.norm1(y)))


class CrossAttentionEncoder(nn.Module):
    """A stack of `CrossAttentionLayer`s (the context stays fixed, as in QD-DETR's t2v encoder)."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(CrossAttentionLayer(dim, heads, ffn_dim, dropout) for _ in range(num_layers))

    def forward(self, x: Tensor, pos: Tensor, context: Tensor, context_pos: Tensor, context_mask: Tensor,
                mask: Tensor) -> Tensor:
        """x [B, L, d] (mask [B, L]) attending to context -> [B, L, d], zero at padding."""
        for layer in self.layers:
            x = layer(x, pos, context, context_pos, context_mask)
        return x.masked_fill(~mask[..., None], 0.0)


class SlotAttention(nn.Module):
    """Slot attention (Locatello et al.), as EaTR (event slots) and UVCOM (query-initialised slots) use it.

    Each iteration: attention normalised over the slots (slots compete for inputs), then re-normalised over the
    inputs, updates added to the slots, then an MLP residual. Padded inputs get zero weight.
    """

    def __init__(self, dim: int, iterations: int, mlp_hidden: int, mlp_layers: int, epsilon: float = 1e-8) -> None:
        super().__init__()
        from mgsv.models.layers import MLP

        self.iterations = iterations
        self.epsilon = epsilon
        self.norm_inputs = nn.LayerNorm(dim)
        self.norm_slots = nn.LayerNorm(dim)
        self.norm_mlp = nn.LayerNorm(dim)
        self.norm_out = nn.LayerNorm(dim)
        self.project_q = nn.Linear(dim, dim)
        self.project_k = nn.Linear(dim, dim)
        self.project_v = nn.Linear(dim, dim)
        self.mlp = MLP(dim, mlp_hidden, dim, mlp_layers)

    def forward(self, inputs: Tensor, mask: Tensor, slots: Tensor) -> Tensor:
        """inputs [B, L, d] (mask [B, L]), initial slots [B, S, d] -> slots [B, S, d]."""
        inputs = self.norm_inputs(inputs)
        k, v = self.project_k(inputs), self.project_v(inputs)
        scale = k.shape[-1] ** -0.5
        for _ in range(self.iterations):
            previous = slots
            q = self.project_q(self.norm_slots(slots))
            attn = (torch.einsum("bsd,bld->bsl", q, k) * scale).softmax(dim=1) * mask[:, None, :]
            attn = attn / (attn.sum(-1, keepdim=True) + self.epsilon)
            slots = previous + torch.einsum("bsl,bld->bsd", attn, v)
            slots = slots + self.mlp(self.norm_mlp(slots))
        return self.norm_out(slots)


# ----------------------------------------------------------------------------------------------------------------
# Helpers


def project_tokens(projection: nn.Module, feats: Tensor, mask: Tensor, name: str, dim: int,
                   max_len: int) -> TokenEncoding:
    """Validate a padded batch, project it and zero its padding."""
    mask = check_tokens(feats, mask, name, dim, max_len)
    tokens = projection(feats.to(next(projection.parameters()).dtype))
    return TokenEncoding(tokens.masked_fill(~mask[..., None], 0.0), mask)


def check_pairs(video: Any, music: Any) -> None:
    """Detection pairs video i with track i: the batches must have the same size."""
    if len(video) != len(music):
        raise ModelInputError(f"detect pairs video i with track i: got {len(video)} videos and {len(music)} tracks")


def encode_concat(encoder: nn.Module, parts: list[tuple[Tensor, Tensor, Tensor]]) -> list[Tensor]:
    """Run a packed-row encoder (`DetrEncoder`-like: `encoder(rows, pos_rows, layout)`) over concatenated sequences.

    parts: (tokens [B, Li, d], mask [B, Li], pos [B, Li, d]) each. Returns each part's output [B, Li, d] (zero at
    padding). Padded positions never enter the computation (see `TokenLayout`), so the result equals the padded
    official computation on valid tokens.
    """
    tokens = torch.cat([p[0] for p in parts], 1)
    mask = torch.cat([p[1] for p in parts], 1)
    pos = torch.cat([p[2].to(tokens.dtype) for p in parts], 1)
    layout = TokenLayout.from_mask(mask)
    out = layout.unpack(encoder(layout.pack(tokens), layout.pack(pos), layout))
    return list(out.split([p[0].shape[1] for p in parts], dim=1))


def masked_mean(tokens: Tensor, mask: Tensor) -> Tensor:
    """Mean over the valid positions: [B, L, d], [B, L] -> [B, d]."""
    return (tokens * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)


def inverse_sigmoid(x: Tensor, eps: float = 1e-3) -> Tensor:
    """The DAB-DETR inverse sigmoid (clamped away from 0 and 1)."""
    x = x.clamp(0, 1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def xavier_init(modules: Iterable[nn.Module]) -> None:
    """The official `_reset_parameters` of these repos: xavier-uniform on every matrix of the transformer.

    Attention layers are re-initialised like `nn.MultiheadAttention` (q/k/v drawn as one packed matrix).
    """
    for module in modules:
        for param in module.parameters():
            if param.dim() > 1:
                nn.init.xavier_uniform_(param)
        for sub in module.modules():
            if isinstance(sub, MultiHeadAttention):
                sub.reset_parameters(xavier_out=True)


def zero_last_layer(mlp: nn.Module) -> None:
    """DAB-DETR starts refinement heads at zero so the first offsets do not move the anchors."""
    last = mlp.layers[-1]
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)


def mlp_parameters(input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> int:
    """Parameter count of `MLP(input_dim, hidden_dim, output_dim, num_layers)` (for `omitted_parameters`)."""
    dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
    return sum(a * b + b for a, b in itertools.pairwise(dims))


def sine_anchor_embedding(anchors: Tensor, dim_per_coordinate: int) -> Tensor:
    """DAB-DETR sine embedding of anchors (centre, width) in [0, 1]: [..., 2] -> [..., 2 * dim_per_coordinate]."""
    from mgsv.models.layers import sine_embedding

    scaled = anchors.float() * (2 * math.pi)
    return torch.cat([sine_embedding(scaled[..., 0], dim_per_coordinate),
                      sine_embedding(scaled[..., 1], dim_per_coordinate)], dim=-1)
