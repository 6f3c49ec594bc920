"""The anchor-based moment decoder (DAB-DETR / Conditional DETR) of QD-DETR, TR-DETR, UVCOM and EaTR.

Each moment query carries an anchor (centre, width). Per layer the anchor's sine embedding gives the positional
query; cross-attention compares queries and keys per head as [content ; position] (Conditional DETR), with the
centre part scaled by the content (`query_scale`) and modulated by a predicted width over the anchor's width; after
the layer a refinement head predicts an offset of the anchor in logit space (iterative anchor update).

Only the first layer adds the positional query / key embeddings to the content ones (`keep_query_pos=False` in the
official code); later layers rely on the concatenated sine part.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mgsv.models.baselines.common import inverse_sigmoid, sine_anchor_embedding
from mgsv.models.layers import MLP, FeedForward


def _split_heads(x: Tensor, heads: int) -> Tensor:
    """[B, L, H * e] -> [B, H, L, e]."""
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


class AnchorDecoderLayer(nn.Module):
    """Self-attention over the queries, an optional fusion block (EaTR), conditional cross-attention, FFN."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float, first: bool,
                 fusion: nn.Module | None = None) -> None:
        super().__init__()
        self.heads = heads
        self.dropout_p = dropout
        self.sa_q_content = nn.Linear(dim, dim)
        self.sa_q_pos = nn.Linear(dim, dim)
        self.sa_k_content = nn.Linear(dim, dim)
        self.sa_k_pos = nn.Linear(dim, dim)
        self.sa_v = nn.Linear(dim, dim)
        self.sa_out = nn.Linear(dim, dim)
        self.sa_norm = nn.LayerNorm(dim)
        self.fusion = fusion
        self.ca_q_content = nn.Linear(dim, dim)
        self.ca_q_pos = nn.Linear(dim, dim) if first else None
        self.ca_k_content = nn.Linear(dim, dim)
        self.ca_k_pos = nn.Linear(dim, dim)
        self.ca_v = nn.Linear(dim, dim)
        self.ca_q_sine = nn.Linear(dim, dim)
        self.ca_out = nn.Linear(dim, dim)
        self.ca_norm = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn_dim, "relu", dropout)
        self.ffn_norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None) -> Tensor:
        """Heads of q/k (any per-head width) and v -> [B, Lq, d] before the output projection."""
        mask = None if key_mask is None else key_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v.to(q.dtype), attn_mask=mask,
                                             dropout_p=self.dropout_p if self.training else 0.0)
        return out.transpose(1, 2).flatten(2)

    def forward(self, target: Tensor, query_pos: Tensor, query_sine: Tensor, memory: Tensor, memory_pos: Tensor,
                memory_mask: Tensor, context: Tensor | None = None) -> Tensor:
        """target, query_pos, query_sine [B, Q, d]; memory, memory_pos [B, L, d], mask [B, L] -> [B, Q, d]."""
        h = self.heads
        q = _split_heads(self.sa_q_content(target) + self.sa_q_pos(query_pos), h)
        k = _split_heads(self.sa_k_content(target) + self.sa_k_pos(query_pos), h)
        attended = self._attend(q, k, _split_heads(self.sa_v(target), h), None)
        target = self.sa_norm(target + self.dropout(self.sa_out(attended)))
        if self.fusion is not None:
            target = self.fusion(target, context)

        q_content, k_content = self.ca_q_content(target), self.ca_k_content(memory)
        k_pos = self.ca_k_pos(memory_pos)
        if self.ca_q_pos is not None:
            q_content = q_content + self.ca_q_pos(query_pos)
            k_content = k_content + k_pos
        # Per head: [content ; sine position] for queries and [content ; position] for keys (Conditional DETR).
        q = torch.cat([_split_heads(q_content, h), _split_heads(self.ca_q_sine(query_sine), h)], dim=-1)
        k = torch.cat([_split_heads(k_content, h), _split_heads(k_pos, h)], dim=-1)
        attended = self._attend(q, k, _split_heads(self.ca_v(memory), h), memory_mask)
        target = self.ca_norm(target + self.dropout(self.ca_out(attended)))
        return self.ffn_norm(target + self.ffn(target))


class AnchorDecoder(nn.Module):
    """A stack of `AnchorDecoderLayer`s with iterative anchor refinement and one shared final LayerNorm.

    `sine_dim` is the sine width per anchor coordinate: d / 2 (QD-DETR, TR-DETR, UVCOM: the two halves make one d
    vector) or d (EaTR: 2d, reduced by `ref_point_head`; only the centre half is scaled and modulated).
    `scale_first_layer`: EaTR scales the first layer's positional query by the content too (QD-DETR does not).
    """

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float, num_layers: int, sine_dim: int,
                 scale_first_layer: bool = False, first_layer_fusion: nn.Module | None = None) -> None:
        super().__init__()
        self.dim = dim
        self.sine_dim = sine_dim
        self.scale_first_layer = scale_first_layer
        self.layers = nn.ModuleList(
            AnchorDecoderLayer(dim, heads, ffn_dim, dropout, first=i == 0,
                               fusion=first_layer_fusion if i == 0 else None)
            for i in range(num_layers)
        )
        self.norm = nn.LayerNorm(dim)
        self.ref_point_head = MLP(2 * sine_dim, dim, dim, 2)
        self.query_scale = MLP(dim, dim, dim, 2)
        self.ref_anchor_head = MLP(dim, dim, 1, 2)

    def forward(self, target: Tensor, anchors: Tensor, memory: Tensor, memory_pos: Tensor, memory_mask: Tensor,
                refine: nn.Module, context: Tensor | None = None, reference_after_layer: bool = False,
                detach_first_anchors: bool = False) -> tuple[Tensor, Tensor]:
        """Decode; returns (normalised outputs [layers, B, Q, d], reference anchors [layers, B, Q, 2] in [0, 1]).

        anchors [B, Q, 2] in [0, 1] (the first reference). `refine` maps a layer output to an anchor offset (logit
        space). The reference returned for layer i is the anchor layer i started from (DAB-DETR, QD-DETR, EaTR), or
        with `reference_after_layer` the anchor refined by layer i (UVCOM). References keep their gradient, so the
        refinement head also learns through the predictions that build on them. `detach_first_anchors`: the first
        layer reads the anchors without back-propagating into them (EaTR's event spans); learned anchors (DAB-DETR)
        are trained through the first layer too.
        """
        ref = anchors.detach() if detach_first_anchors else anchors
        references = [] if reference_after_layer else [anchors]
        outputs = []
        memory_pos = memory_pos.to(memory.dtype)
        for i, layer in enumerate(self.layers):
            sine = sine_anchor_embedding(ref, self.sine_dim).to(target.dtype)
            query_pos = self.ref_point_head(sine)
            query_sine = sine[..., : self.dim]
            if i > 0 or self.scale_first_layer:
                query_sine = query_sine * self.query_scale(target)
            width = self.ref_anchor_head(target).sigmoid()[..., 0]
            query_sine = query_sine * (width / ref[..., 1].to(width.dtype))[..., None]
            target = layer(target, query_pos, query_sine, memory, memory_pos, memory_mask, context)
            reference = (refine(target) + inverse_sigmoid(ref).to(target.dtype)).sigmoid()
            if reference_after_layer or i < len(self.layers) - 1:
                references.append(reference)
            ref = reference.detach()  # later layers start from the refined anchor without back-propagating into it
            outputs.append(self.norm(target))
        return torch.stack(outputs), torch.stack(references)
