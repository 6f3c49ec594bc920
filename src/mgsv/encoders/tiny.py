"""Tiny randomly initialised CLIP / AST checkpoints, saved in the `save_pretrained` layout of the real ones.

They load through exactly the code path real weights take (`ClipFrameEncoder.from_pretrained(folder)`), so the
demo and the tests run the whole pipeline offline in seconds. Their features mean nothing beyond what random
networks compute from pixels and spectrograms: a tiny encoder's features get their own encoder id and a model
trained on them only works with them. Weights are seeded: one seed gives bit-identical files.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mgsv.atomic_io import apply_umask

TINY_CLIP_DIM = 16
TINY_AST_DIM = 32


def make_tiny_clip(
    folder: Path | str, *, vision_only: bool = False, image_size: int = 224, seed: int = 0, init_scale: float = 1.0
) -> Path:
    """Save a tiny CLIP (full CLIPModel, or only `CLIPVisionModelWithProjection`) to `folder`; return the folder.

    `init_scale` multiplies the initial weights (transformers' `initializer_factor`): at 1 a tiny random CLIP's
    output is mostly a constant (its class and position embeddings); at ~3 the picture dominates, which the demo
    needs for its model to learn in a minute.
    """
    from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig, CLIPVisionModelWithProjection

    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": image_size,
        "patch_size": 32,
        "projection_dim": TINY_CLIP_DIM,
        "initializer_factor": float(init_scale),
    }
    text = {
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "vocab_size": 64,
        "max_position_embeddings": 16,
        "projection_dim": TINY_CLIP_DIM,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "pad_token_id": 1,
    }
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=TINY_CLIP_DIM,
                                     initializer_factor=float(init_scale)))
    if vision_only:
        # The vision tower of the full model, so both layouts of one seed hold the same vision weights.
        tower = CLIPVisionModelWithProjection(CLIPVisionConfig(**vision))
        prefixes = ("vision_model.", "visual_projection.")
        tower.load_state_dict({k: v for k, v in model.state_dict().items() if k.startswith(prefixes)}, strict=True)
        model = tower
    return save_pretrained_quietly(model, folder)


def make_tiny_ast(folder: Path | str, *, with_classifier: bool = True, seed: int = 0) -> Path:
    """Save a tiny AST (with an AudioSet-style classifier head, or the bare `ASTModel`) to `folder`; return it."""
    from transformers import ASTConfig, ASTForAudioClassification, ASTModel

    config = ASTConfig(
        hidden_size=TINY_AST_DIM,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=5,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ASTForAudioClassification(config) if with_classifier else ASTModel(config)
    return save_pretrained_quietly(model, folder)


def save_pretrained_quietly(model: torch.nn.Module, folder: Path | str) -> Path:
    """`model.save_pretrained(folder)` without transformers' progress bars; returns the folder."""
    from transformers.utils import logging as hf_logging

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(folder)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    for path in folder.glob("*.safetensors"):  # safetensors writes them owner-only (0600): the umask decides instead
        apply_umask(path)
    return folder
