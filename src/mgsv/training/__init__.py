"""Training: losses (`losses.py`); the trainer and schedule live beside them."""

from mgsv.training.losses import LossWeights, fixture_key, infonce, made_losses

__all__ = ["LossWeights", "fixture_key", "infonce", "made_losses"]
