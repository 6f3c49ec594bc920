"""Useful FLOPs of the frozen encoders, counted from their Hugging Face configs (multiply-adds x 2).

Counted: every matrix product of one input (the patch embedding, per layer the Q/K/V/output projections, the two
attention products over all tokens, the two MLP products; CLIP's final projection). Not counted: layer norms,
softmax, GELU, residual adds, position embeddings (elementwise work, a few percent of the time at these sizes) and
the preprocessing (AST's fbank, CLIP's resize), which the benchmarks time apart. Nothing is padding: AST's windows
are always 1024 fbank frames (zero-padded as the official model sees them) and all its patches are real input.

With `ASTConfig()` (the AudioSet AST of `mgsv.defaults.DEFAULT_AST_ID`: 128 mel bins x 1024 frames, 16x16 patches
at stride 10 in both axes, 768 wide, 12 layers, MLP 3072) a window is 12 x 101 = 1212 patches + the CLS and
distillation tokens = 1214 tokens, ~261 GFLOP. `CLIPVisionConfig()` (ViT-B/32 at 224 px) is 49 patches + CLS = 50
tokens, ~8.8 GFLOP (4.4 G multiply-adds) a frame.
"""

from __future__ import annotations

from typing import Any


def transformer_layer_flops(tokens: int, dim: int, ffn: int) -> float:
    """One pre-norm encoder layer over `tokens` tokens: Q/K/V/output projections, QK^T and AV, the two MLP products."""
    return 8.0 * tokens * dim * dim + 4.0 * tokens * tokens * dim + 4.0 * tokens * dim * ffn


def ast_patches(config: Any) -> int:
    """Patches of one AST input (the frequency x time grid of its patch embedding)."""
    freq = (config.num_mel_bins - config.patch_size) // config.frequency_stride + 1
    time = (config.max_length - config.patch_size) // config.time_stride + 1
    return freq * time


def ast_window_flops(config: Any) -> float:
    """Useful FLOPs of one AST window (one [max_length, num_mel_bins] input) through `ASTModel`."""
    patches, dim = ast_patches(config), config.hidden_size
    tokens = patches + 2  # CLS and distillation tokens
    embedding = 2.0 * patches * config.patch_size**2 * dim
    layers = config.num_hidden_layers * transformer_layer_flops(tokens, dim, config.intermediate_size)
    return embedding + layers


def clip_frame_flops(config: Any) -> float:
    """Useful FLOPs of one frame through `CLIPVisionModelWithProjection` (vision tower + projection of CLS)."""
    patches, dim = (config.image_size // config.patch_size) ** 2, config.hidden_size
    embedding = 2.0 * patches * config.num_channels * config.patch_size**2 * dim
    layers = config.num_hidden_layers * transformer_layer_flops(patches + 1, dim, config.intermediate_size)
    return embedding + layers + 2.0 * dim * config.projection_dim
