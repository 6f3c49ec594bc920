"""Building blocks shared by MaDe and the baselines.

Two ideas keep these blocks fast on CPUs without changing any result:

- **Packed tokens.** A batch of padded sequences is carried between attention calls as the valid rows only
  (`TokenLayout.pack`), so projections, feed-forward layers and norms never compute padding. Attention unpacks
  items of similar length together (a bucket, padded to its own longest item), masks padded keys and packs again.
  Valid rows never see padded ones, so the values are those of the padded computation.
- **Query-side folding** (`MultiHeadAttention.attend_few`). With few queries per item (DETR's moment query), the key
  and value projections of a long memory cost far more than the attention itself. Per head,
  q.(W_k m + b_k) = (W_k^T q).m + q.b_k and sum_l a_l (W_v m_l + b_v) = W_v (sum_l a_l m_l) + b_v (the weights a sum
  to one; with attention dropout the bias is scaled by the kept weight), so the projections move to the query
  side: exact, and about L / (Q * heads) times cheaper for Q queries over L memory tokens.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mgsv.errors import MgsvError
from mgsv.models.dropout import Dropout, dropout


class ModelInputError(MgsvError, ValueError):
    """Tensors handed to a model have the wrong shape, an empty item or a sequence longer than it supports."""


def check_tokens(feats: Tensor, mask: Tensor, name: str, dim: int, max_len: int) -> Tensor:
    """Validate a padded batch [B, L, dim] + mask [B, L]; return the mask as bool."""
    if feats.dim() != 3 or feats.shape[-1] != dim:
        raise ModelInputError(f"{name}: expected features of shape [batch, length, {dim}], got {list(feats.shape)}")
    if mask.shape != feats.shape[:2]:
        raise ModelInputError(f"{name}: mask shape {list(mask.shape)} does not match features {list(feats.shape[:2])}")
    if feats.shape[0] == 0:
        raise ModelInputError(f"{name}: empty batch")
    mask = mask.bool()
    lengths = mask.sum(1)
    if bool((lengths == 0).any()):
        rows = torch.nonzero(lengths == 0).flatten().tolist()[:10]
        raise ModelInputError(f"{name}: item(s) {rows} have no valid token (mask all zero)")
    last = int(torch.nonzero(mask.any(0)).max()) + 1
    if last > max_len:
        raise ModelInputError(f"{name}: {last} token positions, the model supports at most {max_len}")
    return mask


# ----------------------------------------------------------------------------------------------------------------
# Position encodings


def sinusoidal_table(length: int, dim: int) -> Tensor:
    """Transformer sinusoidal table [length, dim]: sin on even channels, cos on odd ones, base 10000."""
    # Computed exactly as the official `PositionalEncoding` (float32, exp of a log-spaced ramp) so that the rebuilt
    # buffer equals the one stored in official checkpoints bit for bit.
    position = torch.arange(0, length, dtype=torch.float32).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, dim, 2).float() * -(math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * div_term)
    table[:, 1::2] = torch.cos(position * div_term)
    return table


def sine_embedding(positions: Tensor, dim: int, temperature: float = 10000.0) -> Tensor:
    """DETR sine features of scalar positions [...] -> [..., dim], sin/cos interleaved on even/odd channels."""
    dim_t = torch.arange(dim, dtype=torch.float32, device=positions.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / dim)
    pos = positions.float()[..., None] / dim_t
    return torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=-1).flatten(-2)


def normalized_positions(mask: Tensor, scale: float = 2 * math.pi, eps: float = 1e-6) -> Tensor:
    """DETR 1-d positions of a padded mask [B, L]: cumulative count of valid tokens / total valid, times 2 pi."""
    cumulative = mask.cumsum(1, dtype=torch.float32)
    return cumulative / (cumulative[:, -1:] + eps) * scale


def sine_position_embedding(mask: Tensor, dim: int, temperature: float = 10000.0) -> Tensor:
    """DETR `PositionEmbeddingSine(normalize=True)` of a padded mask [B, L] -> [B, L, dim]."""
    return sine_embedding(normalized_positions(mask), dim, temperature)


# ----------------------------------------------------------------------------------------------------------------
# Packed token layout


@dataclass
class Bucket:
    """Items of similar length whose attention runs together, padded to `length` (their longest)."""

    items: Tensor  # their indices in the batch
    length: int  # padded length of the bucket
    mask: Tensor  # [items, length] bool
    key_mask: Tensor | None  # the mask attention needs: None when nothing in the bucket is padded


@dataclass
class TokenLayout:
    """Where the packed valid rows [N, d] of a padded batch [B, L, d] live.

    Rows are packed item by item in order of decreasing length and split into buckets of similar length, so that
    attention pads each bucket only to its own longest item (attention cost grows with the square of the padded
    length; each item's attention is independent of the others, so bucketing changes no value).
    """

    mask: Tensor  # [B, L] bool
    index: Tensor  # [N] flat positions (b * L + t) of the packed rows
    buckets: list[Bucket]
    block_index: Tensor  # [N] positions of the rows in the buckets' padded blocks laid end to end
    block_sizes: list[int]  # elements (items x length) of each bucket's block
    dense: bool = False  # every position of the padded batch is a row (`TokenLayout.padded`)

    @classmethod
    def from_mask(cls, mask: Tensor, bucket_items: int = 64) -> TokenLayout:
        """Layout of the True entries of a bool mask [B, L]; buckets hold about `bucket_items` items."""
        batch, length = mask.shape
        positions = torch.arange(1, length + 1, device=mask.device)
        lengths = (mask * positions).amax(1)  # last valid position + 1
        order = torch.argsort(lengths, descending=True, stable=True)
        sorted_mask = mask.index_select(0, order)
        flat = torch.nonzero(sorted_mask.reshape(-1)).flatten()
        item, t = flat // length, flat % length
        index = order[item] * length + t
        counts = sorted_mask.sum(1).tolist()
        sorted_lengths = lengths.index_select(0, order).tolist()
        buckets, block_index, block_sizes = [], [], []
        row = 0
        num_buckets = max(1, round(batch / bucket_items))
        bounds = [round(i * batch / num_buckets) for i in range(num_buckets + 1)]
        for first, stop in itertools.pairwise(bounds):
            rows = sum(counts[first:stop])
            span = slice(row, row + rows)
            bucket_length = sorted_lengths[first]
            bucket_mask = sorted_mask[first:stop, :bucket_length]
            key_mask = None if rows == bucket_mask.numel() else bucket_mask
            buckets.append(Bucket(order[first:stop], bucket_length, bucket_mask, key_mask))
            # Flat positions (item * length + t) inside the bucket's block, which starts after the earlier ones.
            block_index.append((item[span] - first) * bucket_length + t[span] + sum(block_sizes))
            block_sizes.append((stop - first) * bucket_length)
            row += rows
        return cls(mask=mask, index=index, buckets=buckets, block_index=torch.cat(block_index),
                   block_sizes=block_sizes)

    @classmethod
    def padded(cls, mask: Tensor) -> TokenLayout:
        """Every position of a padded batch [B, L] as a row, padded ones too: one bucket, padded keys masked.

        For batches of nearly equal lengths (detection runs pairs sorted by length, `mgsv.inference.batched`),
        computing the few padded rows costs less than the gathers and scatters that packing needs around every
        attention. Valid rows get the values of `from_mask`'s layout: padded keys are masked and rows never mix
        outside attention. Padded rows hold values nobody reads; `unpack` still returns zeros there.
        """
        batch, length = mask.shape
        every = torch.arange(batch * length, device=mask.device)
        key_mask = None if bool(mask.all()) else mask
        return cls(mask=mask, index=every, buckets=[Bucket(torch.arange(batch, device=mask.device), length, mask,
                                                           key_mask)],
                   block_index=every, block_sizes=[batch * length], dense=True)

    @property
    def batch(self) -> int:
        return self.mask.shape[0]

    @property
    def length(self) -> int:
        return self.mask.shape[1]

    def pack(self, x: Tensor) -> Tensor:
        """[B, L, ...] -> the valid rows [N, ...] (every row when dense)."""
        if self.dense:
            return x.reshape(self.batch * self.length, *x.shape[2:])
        return x.reshape(self.batch * self.length, *x.shape[2:]).index_select(0, self.index)

    def unpack(self, rows: Tensor) -> Tensor:
        """Valid rows [N, ...] -> padded [B, L, ...] with zeros at padded positions."""
        if self.dense:
            padded = rows.view(self.batch, self.length, *rows.shape[1:])
            key_mask = self.buckets[0].key_mask
            if key_mask is None:
                return padded
            return padded.masked_fill(~key_mask.view(*key_mask.shape, *([1] * (rows.dim() - 1))), 0)
        flat = rows.new_zeros(self.batch * self.length, *rows.shape[1:]).index_copy_(0, self.index, rows)
        return flat.view(self.batch, self.length, *rows.shape[1:])

    def unpack_buckets(self, rows: Tensor) -> list[Tensor]:
        """Valid rows [N, ...] -> each bucket's padded block [items, length, ...] (zeros at padding).

        One scatter for all buckets, then a split: slicing rows bucket by bucket would make autograd build a
        full-size zero gradient per bucket.
        """
        if self.dense:
            return [rows.view(self.batch, self.length, *rows.shape[1:])]
        flat = rows.new_zeros(sum(self.block_sizes), *rows.shape[1:]).index_copy_(0, self.block_index, rows)
        return [block.view(len(bucket.items), bucket.length, *rows.shape[1:])
                for bucket, block in zip(self.buckets, flat.split(self.block_sizes))]

    def pack_buckets(self, blocks: list[Tensor]) -> Tensor:
        """The inverse of `unpack_buckets`: the buckets' padded blocks -> the valid rows [N, ...]."""
        if self.dense:
            return blocks[0].reshape(-1, *blocks[0].shape[2:])
        flat = torch.cat([block.reshape(-1, *block.shape[2:]) for block in blocks]) if len(blocks) > 1 else \
            blocks[0].reshape(-1, *blocks[0].shape[2:])
        return flat.index_select(0, self.block_index)


# ----------------------------------------------------------------------------------------------------------------
# Layers


class FeedForward(nn.Module):
    """Linear -> activation -> dropout -> Linear -> dropout (the transformer FFN, residual left to the caller)."""

    def __init__(self, dim: int, hidden_dim: int, activation: str = "relu", dropout: float = 0.0) -> None:
        super().__init__()
        if activation not in ("relu", "gelu"):
            raise ValueError(f"activation must be 'relu' or 'gelu', got {activation!r}")
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.activation = activation
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the FFN to the last dimension."""
        hidden = self.fc1(x)
        # In place: the Linear output is not needed by autograd, and a [tokens, 1024] copy is worth saving.
        hidden = F.relu(hidden, inplace=True) if self.activation == "relu" else F.gelu(hidden)
        return self.dropout(self.fc2(self.dropout(hidden)))


class MLP(nn.Module):
    """`num_layers` Linear layers with ReLU between them (DETR's box/span head)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(dims))

    def forward(self, x: Tensor) -> Tensor:
        """Apply the layers; no activation after the last one."""
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class MultiHeadAttention(nn.Module):
    """Multi-head attention as `nn.MultiheadAttention` computes it, with separate q/k/v/out projections.

    Dropout acts on the attention weights, as in `nn.MultiheadAttention`. Masks are bool [B, Lk] with True = a key
    that may be attended (the opposite of PyTorch's `key_padding_mask`).
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def reset_parameters(self, xavier_out: bool = False) -> None:
        """`nn.MultiheadAttention`'s init: xavier on the packed [3d, d] in-projection, zero biases.

        The packed matrix has fan-out 3d, so each of q/k/v gets the packed bound, not that of a d x d matrix.
        `xavier_out` also applies xavier to out_proj.weight (DETR re-initialises every matrix with xavier).
        """
        packed = torch.empty(3 * self.dim, self.dim, device=self.q_proj.weight.device)
        nn.init.xavier_uniform_(packed)
        with torch.no_grad():
            for proj, block in zip((self.q_proj, self.k_proj, self.v_proj), packed.chunk(3)):
                proj.weight.copy_(block)
                proj.bias.zero_()
            self.out_proj.reset_parameters()
            if xavier_out:
                nn.init.xavier_uniform_(self.out_proj.weight)
            self.out_proj.bias.zero_()

    def _heads(self, x: Tensor) -> Tensor:
        """[B, L, d] -> [B, H, L, d/H]."""
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None) -> Tensor:
        """Scaled dot-product attention of projected [B, L, d] tensors -> [B, Lq, d] (before out_proj)."""
        mask = None if key_mask is None else key_mask[:, None, None, :]
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        if self.training and self.dropout > 0 and q.device.type == "cpu":
            # What SDPA's math path computes with dropout, but with the fast CPU dropout mask (models/dropout.py).
            logits = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))
            if mask is not None:
                logits = logits.masked_fill(~mask, float("-inf"))
            out = dropout(logits.softmax(-1), self.dropout).to(v.dtype) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                                 dropout_p=self.dropout if self.training else 0.0)
        return out.transpose(1, 2).flatten(2)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_mask: Tensor | None = None) -> Tensor:
        """Padded attention: query [B, Lq, d], key/value [B, Lk, d] -> [B, Lq, d]."""
        if key.shape[1] == 1 and key_mask is None and not torch.is_grad_enabled() and not (
                self.training and self.dropout > 0):
            # One key gets softmax weight exactly 1: the output is its value whatever the query (DETR's decoder
            # self-attention with one moment query). Only without autograd: the skipped q/k projections would
            # otherwise receive (zero) gradients that optimisers treat differently from none.
            return self.out_proj(self.v_proj(value)).expand(-1, query.shape[1], -1)
        out = self._attend(self.q_proj(query), self.k_proj(key), self.v_proj(value), key_mask)
        return self.out_proj(out)

    def _project(self, query: Tensor, key: Tensor, value: Tensor) -> list[Tensor]:
        """q, k, v projections of packed rows; inputs that are the same tensor share one product ([N, 2d] or 3d)."""
        projs = (self.q_proj, self.k_proj, self.v_proj)
        if query is key is value:
            groups = [(query, projs)]
        elif query is key:
            groups = [(query, projs[:2]), (value, projs[2:])]
        else:
            groups = [(query, projs[:1]), (key, projs[1:2]), (value, projs[2:])]
        return [F.linear(x, torch.cat([p.weight for p in group]), torch.cat([p.bias for p in group]))
                for x, group in groups]

    def attend_packed(self, query: Tensor, key: Tensor, value: Tensor, layout: TokenLayout) -> Tensor:
        """Self-attention over packed rows [N, d] (query, key and value rows share `layout`) -> [N, d]."""
        projected = [layout.unpack_buckets(part) for part in self._project(query, key, value)]
        outputs = []
        for i, bucket in enumerate(layout.buckets):
            q, k, v = (x for part in projected for x in part[i].split(self.dim, dim=-1))  # [items, length, d] each
            outputs.append(self._attend(q, k, v, bucket.key_mask))
        return self.out_proj(layout.pack_buckets(outputs))

    def attend_few(self, query: Tensor, key_input: Tensor, value_input: Tensor, key_mask: Tensor | None) -> Tensor:
        """Attention for few queries over a long memory, with k/v projections folded into the query side.

        query [B, Q, d]; key_input / value_input [B, L, d] are the *unprojected* keys and values. Exact (see the
        module docstring); cheaper than `forward` when Q * num_heads is much smaller than d.
        """
        heads, head_dim = self.num_heads, self.head_dim
        q = self.q_proj(query).unflatten(-1, (heads, head_dim))  # [B, Q, H, dh]
        w_k = self.k_proj.weight.view(heads, head_dim, self.dim)  # [H, dh, d]
        w_v = self.v_proj.weight.view(heads, head_dim, self.dim)
        folded_q = torch.einsum("bqhe,hed->bqhd", q, w_k).flatten(1, 2)  # [B, Q*H, d]
        bias = torch.einsum("bqhe,he->bqh", q, self.k_proj.bias.view(heads, head_dim)).flatten(1, 2)
        logits = (torch.bmm(folded_q, key_input.transpose(1, 2)) + bias[..., None]) / math.sqrt(head_dim)
        if key_mask is not None:
            logits = logits.masked_fill(~key_mask[:, None, :], float("-inf"))
        weights = dropout(logits.softmax(-1), self.dropout, self.training)  # [B, Q*H, L]
        pooled = torch.bmm(weights.to(value_input.dtype), value_input)  # [B, Q*H, d]
        pooled = pooled.unflatten(1, (query.shape[1], heads))  # [B, Q, H, d]
        out = torch.einsum("bqhd,hed->bqhe", pooled, w_v)
        bias = self.v_proj.bias.view(heads, head_dim)
        if self.training and self.dropout > 0:
            # Dropped attention weights no longer sum to one: the value bias counts only with the kept weight.
            bias = weights.sum(-1).unflatten(1, (query.shape[1], heads))[..., None] * bias
        out = out + bias
        return self.out_proj(out.flatten(2))


class DetrEncoderLayer(nn.Module):
    """DETR post-norm encoder layer: q = k = x + pos, v = x; add & norm; ReLU FFN; add & norm."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(dim, num_heads, dropout)
        self.attn_norm = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn_dim, "relu", dropout)
        self.ffn_norm = nn.LayerNorm(dim)
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor, pos: Tensor, layout: TokenLayout) -> Tensor:
        """Packed rows x, pos [N, d] of `layout` -> [N, d]."""
        qk = x + pos
        x = self.attn_norm(x + self.dropout(self.self_attn.attend_packed(qk, qk, x, layout)))
        return self.ffn_norm(x + self.ffn(x))


class DetrEncoder(nn.Module):
    """A stack of post-norm encoder layers without a final norm (DETR with `normalize_before=False`)."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DetrEncoderLayer(dim, num_heads, ffn_dim, dropout) for _ in range(num_layers))

    def forward(self, x: Tensor, pos: Tensor, layout: TokenLayout) -> Tensor:
        """Packed rows [N, d] -> [N, d]; the position embedding is added to queries and keys of every layer."""
        for layer in self.layers:
            x = layer(x, pos, layout)
        return x


class DetrDecoderLayer(nn.Module):
    """DETR post-norm decoder layer: [self-attention, add & norm,] cross-attention, add & norm, FFN, add & norm.

    The positional query is added to the queries (and self-attention keys), the memory position embedding to the
    cross-attention keys; values never carry positions.
    """

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float, self_attention: bool = True) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(dim, num_heads, dropout) if self_attention else None
        self.self_attn_norm = nn.LayerNorm(dim) if self_attention else None
        self.cross_attn = MultiHeadAttention(dim, num_heads, dropout)
        self.cross_attn_norm = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn_dim, "relu", dropout)
        self.ffn_norm = nn.LayerNorm(dim)
        self.dropout = Dropout(dropout)

    def forward(
        self, target: Tensor, query_pos: Tensor, memory_keys: Tensor, memory: Tensor, memory_mask: Tensor
    ) -> Tensor:
        """target [B, Q, d]; query_pos broadcastable to it; memory_keys = memory + pos and memory [B, L, d]."""
        if self.self_attn is not None:
            q = target + query_pos
            target = self.self_attn_norm(target + self.dropout(self.self_attn(q, q, target)))
        attended = self.cross_attn.attend_few(target + query_pos, memory_keys, memory, memory_mask)
        target = self.cross_attn_norm(target + self.dropout(attended))
        return self.ffn_norm(target + self.ffn(target))


class DetrDecoder(nn.Module):
    """Decoder layers plus one shared final LayerNorm applied to every layer's output (DETR's intermediate outputs)."""

    def __init__(
        self, dim: int, num_heads: int, ffn_dim: int, dropout: float, num_layers: int, self_attention: bool = True
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            DetrDecoderLayer(dim, num_heads, ffn_dim, dropout, self_attention) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(
        self, target: Tensor, query_pos: Tensor, memory_keys: Tensor, memory: Tensor, memory_mask: Tensor
    ) -> Tensor:
        """Returns the normalised output of every layer, [num_layers, B, Q, d]."""
        outputs = []
        for layer in self.layers:
            target = layer(target, query_pos, memory_keys, memory, memory_mask)
            outputs.append(self.norm(target))
        return torch.stack(outputs)


def reset_detr_parameters(module: nn.Module) -> None:
    """DETR's init of a transformer: xavier-uniform on every matrix (attention in-projections as one packed matrix)."""
    for sub in module.modules():
        if isinstance(sub, MultiHeadAttention):
            sub.reset_parameters(xavier_out=True)
        elif isinstance(sub, FeedForward):
            nn.init.xavier_uniform_(sub.fc1.weight)
            nn.init.xavier_uniform_(sub.fc2.weight)
