"""The official learning-rate schedule: linear warmup from 0, then a half cosine to 0, stepped every iteration."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """The lr multiplier at `step`: step / warmup during warmup (so step 0 runs at lr 0), then 0.5 (1 + cos(pi p))."""
    if step < warmup_steps:
        return float(step) / float(max(1, warmup_steps))
    progress = float(step - warmup_steps) / float(max(1, total_steps - warmup_steps))
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def warmup_cosine(optimizer: Optimizer, total_steps: int, warmup_rate: float) -> LambdaLR:
    """A LambdaLR with `warmup_steps = int(warmup_rate * total_steps)`, as the official `WarmupCosineSchedule`."""
    warmup_steps = int(warmup_rate * total_steps)
    return LambdaLR(optimizer, lambda step: warmup_cosine_factor(step, warmup_steps, total_steps))
