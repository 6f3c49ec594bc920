"""Dropout whose random mask is cheap on CPUs.

Why by hand: PyTorch draws a CPU dropout mask with `bernoulli_`, one Mersenne-Twister number per element on one
thread (its vectorised MKL path is taken on Intel CPUs only). MaDe drops out ~4 x 10^8 elements per training step at
batch 512 (the FFNs, the attention weights, X-Pool's B x B x d pairs), and that drawing was about a quarter of a
bf16 step on a 2-core CPU (docs/models.md, "Speed"). Here the mask comes from numpy's PCG64 bit generator, 16 bits
per element taken from its raw 64-bit output, which is several times faster; the generator is seeded from torch's
default generator on every call, so `torch.manual_seed` and saving / restoring torch's RNG state keep training
reproducible and resumable.

The drop probability is rounded to a multiple of 2^-16 (0.1 -> 0.1000061), and kept values are scaled by the
inverse of the rounded keep probability, so the output's expectation is the input, as with `F.dropout`. Off CPU,
outside training, or with p = 0 this is `F.dropout` itself.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

_LEVELS = 1 << 16


def keep_multiplier(shape: torch.Size, p: float, dtype: torch.dtype) -> tuple[Tensor, float]:
    """A {0, 1} tensor of `shape` in `dtype` (1 = keep, probability 1 - p rounded to 2^-16) and the kept scale."""
    threshold = round(p * _LEVELS)
    count = math.prod(shape)
    seed = int(torch.randint(0, 2**62, (1,), device="cpu"))  # the CPU generator: this mask is the CPU path
    raw = np.random.PCG64(seed).random_raw((count + 3) // 4)  # four 16-bit numbers per 64-bit draw
    bits = torch.from_numpy(raw.view(np.int16)[:count]).view(shape)
    # Signed view: uniform on [-2^15, 2^15); keep when at least -2^15 + threshold. Comparing straight into the
    # tensor's dtype and multiplying by that (below) is ~3x faster here than multiplying by a bool mask.
    keep = torch.ge(bits, threshold - (_LEVELS >> 1), out=torch.empty(shape, dtype=dtype, device="cpu"))
    return keep, _LEVELS / (_LEVELS - threshold)


class _MaskedScale(torch.autograd.Function):
    """x * keep * scale, the same in the backward pass (`keep` is saved, as `F.dropout` saves its mask)."""

    @staticmethod
    def forward(ctx, x: Tensor, keep: Tensor, scale: float) -> Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return torch.addcmul(x.new_zeros(()), x, keep, value=scale)  # one pass over x

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        (keep,) = ctx.saved_tensors
        return torch.addcmul(grad.new_zeros(()), grad, keep.to(grad.dtype), value=ctx.scale), None, None


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """`F.dropout(x, p, training)` with a fast CPU mask (see the module docstring)."""
    if not training or p == 0 or x.device.type != "cpu":
        return F.dropout(x, p, training)
    if p == 1:
        return torch.zeros_like(x)
    keep, scale = keep_multiplier(x.shape, p, x.dtype)
    return _MaskedScale.apply(x, keep, scale)


class Dropout(nn.Dropout):
    """`nn.Dropout` with the fast CPU mask of `dropout` (same arguments, no state)."""

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)
