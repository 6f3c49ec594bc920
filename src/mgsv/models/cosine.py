"""cos(h(v)_i, h1[j, i]) for every (track j, video i) pair, with a hand-written backward pass.

Why by hand: in training, X-Pool gives a d-wide h1 for each of the B x B pairs ([M, Nv, d], 67M numbers at batch
512). Autograd's backward of dot-product-over-norm walks that tensor about eight times (the norm's backward alone
divides, multiplies and reduces it); the gradient is a combination of two known vectors per pair,
    d cos / d h1 = v / |h1| - cos * h1 / |h1|^2   (v the unit video embedding),
which is one pass here. The forward is one batched product and one norm, read in h1's own precision (bf16 under
autocast) and finished in float32.
"""

from __future__ import annotations

import torch
from torch import Tensor


class _PairCosine(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h1: Tensor, video: Tensor) -> Tensor:
        unit, out = video.to(h1.dtype), torch.promote_types(h1.dtype, torch.float32)
        dots = torch.bmm(h1.transpose(0, 1), unit[:, :, None])[..., 0].to(out)  # [Nv, M]
        inv_norm = torch.linalg.vector_norm(h1, dim=-1).to(out).reciprocal().T  # [Nv, M]
        ctx.save_for_backward(h1, unit, dots, inv_norm)
        ctx.video_dtype = video.dtype
        return dots * inv_norm

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor]:
        h1, unit, dots, inv_norm = ctx.saved_tensors
        along_video = grad * inv_norm  # [Nv, M]
        along_h1 = -grad * dots * inv_norm**3
        grad_h1 = torch.addcmul(h1 * along_h1.T[..., None].to(h1.dtype), along_video.T[..., None].to(h1.dtype),
                                unit[None])
        grad_video = torch.bmm(along_video[:, None, :].to(h1.dtype), h1.transpose(0, 1))[:, 0]
        return grad_h1, grad_video.to(ctx.video_dtype)


def pair_cosine(h1: Tensor, video_unit: Tensor) -> Tensor:
    """h1 [M, Nv, d] (music-major, as X-Pool returns it), unit video embeddings [Nv, d] -> [Nv, M], float32 or wider."""
    return _PairCosine.apply(h1, video_unit)
