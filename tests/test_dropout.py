"""The fast CPU dropout (mgsv.models.dropout): F.dropout's statistics and gradient, reproducible from torch's seed."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mgsv.models.dropout import Dropout, dropout


@pytest.mark.parametrize("p", [0.1, 0.3, 0.8])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_keeps_one_minus_p_and_preserves_the_mean(p: float, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    x = torch.ones(400, 1000, dtype=dtype)
    y = dropout(x, p)
    assert y.dtype == dtype and y.shape == x.shape
    kept = y != 0
    # 400,000 draws: the kept fraction is within 5 standard deviations of 1 - p.
    sd = (p * (1 - p) / x.numel()) ** 0.5
    assert abs(float(kept.float().mean()) - (1 - p)) < 5 * sd
    values = y[kept].float()
    assert torch.allclose(values, torch.full_like(values, 1 / (1 - p)), rtol=1e-2)  # bf16 rounds the scale
    assert abs(float(y.float().mean()) - 1) < 5 * sd / (1 - p) + 1e-2 * (dtype == torch.bfloat16)


def test_same_seed_same_mask_and_different_calls_differ() -> None:
    x = torch.randn(64, 64)
    torch.manual_seed(7)
    a, b = dropout(x, 0.5), dropout(x, 0.5)
    torch.manual_seed(7)
    assert torch.equal(dropout(x, 0.5), a)
    assert not torch.equal(a, b)


def test_gradient_is_the_mask_times_the_scale() -> None:
    torch.manual_seed(1)
    x = torch.randn(50, 30, requires_grad=True)
    y = dropout(x, 0.25)
    grad = torch.randn_like(y)
    y.backward(grad)
    kept = (y != 0).float()  # x has no exact zeros
    torch.testing.assert_close(x.grad, grad * kept * (y.detach() / x.detach()).max())
    torch.testing.assert_close(y.detach(), x.detach() * kept * (1 / (1 - 16384 / 65536)))


def test_eval_mode_p0_and_p1_match_f_dropout() -> None:
    x = torch.randn(10, 10)
    layer = Dropout(0.3).eval()
    assert torch.equal(layer(x), x)
    assert torch.equal(dropout(x, 0.0), x)
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))
    assert torch.equal(dropout(x, 0.3, training=False), F.dropout(x, 0.3, training=False))
