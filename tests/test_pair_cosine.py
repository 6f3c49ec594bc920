"""pair_cosine (X-Pool's S1 with a hand-written backward) against autograd of the plain formula."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mgsv.models.cosine import pair_cosine


def test_values_and_gradients_match_the_plain_formula() -> None:
    torch.manual_seed(0)
    h1 = torch.randn(5, 3, 8, dtype=torch.float64, requires_grad=True)
    video = F.normalize(torch.randn(3, 8, dtype=torch.float64), dim=-1).requires_grad_()
    assert torch.autograd.gradcheck(pair_cosine, (h1, video))
    plain = F.cosine_similarity(h1, video[None], dim=-1).T  # [videos, tracks]
    torch.testing.assert_close(pair_cosine(h1, video), plain)


def test_bf16_input_gives_float32_output_close_to_float32() -> None:
    torch.manual_seed(1)
    h1, video = torch.randn(4, 6, 32), F.normalize(torch.randn(6, 32), dim=-1)
    out = pair_cosine(h1.bfloat16(), video)
    assert out.dtype == torch.float32 and out.shape == (6, 4)
    torch.testing.assert_close(out, pair_cosine(h1, video), rtol=0, atol=2e-2)
