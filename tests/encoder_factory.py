"""Build tiny randomly initialised CLIP / AST checkpoints in `save_pretrained` layout, for tests that need encoders.

    from encoder_factory import make_tiny_ast, make_tiny_clip

    clip_dir = make_tiny_clip(tmp_path / "clip")     # a folder like a snapshot of openai/clip-vit-base-patch32
    ast_dir = make_tiny_ast(tmp_path / "ast")        # a folder like a snapshot of MIT/ast-finetuned-audioset-...
    encoder = ClipFrameEncoder.from_pretrained(clip_dir, dtype="float32")

The folders hold what the real hub repositories hold (a full CLIPModel with its text tower; an AST with its
AudioSet classifier head), so loading them goes through the same code path and key handling as the real weights.
Sizes are tiny (hidden 32, 2 layers) but the interfaces are real: CLIP takes 224x224 images in 32-pixel patches,
AST takes 1024 x 128 fbank inputs in 16x16 patches at stride 10 (1212 patches). Weights are seeded: the same seed
gives bit-identical files, and `vision_only=True` saves the vision tower of the same full model.
`TINY_CLIP_DIM` / `TINY_AST_DIM` are the token sizes they produce.

`make_real_size_clip` / `make_real_size_ast` save random models with the official architectures (ViT-B/32 with a
512-d projection; the AudioSet AST), in float16 to halve the files (~175 MB each, a few seconds). With
`install_in_hf_cache` they stand in for the real hub checkpoints, so the default `from_pretrained()` path (hub id,
offline cache, official-id checks, default feature specs) runs for real:

    cache = tmp_path / "hub"
    install_in_hf_cache(cache, "openai/clip-vit-base-patch32", make_real_size_clip)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    ClipFrameEncoder.from_pretrained()                  # resolves the id from the cache, offline
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from mgsv.encoders.tiny import TINY_AST_DIM, TINY_CLIP_DIM, make_tiny_ast, make_tiny_clip  # noqa: F401
from mgsv.encoders.tiny import save_pretrained_quietly as _save


def make_real_size_clip(folder: Path | str, *, seed: int = 0) -> Path:
    """Save a random CLIP ViT-B/32 vision tower with its 512-d projection (the official architecture), float16."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPVisionModelWithProjection(CLIPVisionConfig(patch_size=32, image_size=224, projection_dim=512))
    return _save(model.half(), folder)


def make_real_size_ast(folder: Path | str, *, seed: int = 0) -> Path:
    """Save a random AST with the AudioSet architecture and a 527-class head (the official checkpoint's), float16."""
    from transformers import ASTConfig, ASTForAudioClassification

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ASTForAudioClassification(ASTConfig(num_labels=527))
    return _save(model.half(), folder)


def install_in_hf_cache(
    cache_dir: Path | str, repo_id: str, make: Callable[[Path], Path], revision: str = "0" * 40
) -> Path:
    """Build a model with `make(folder)` as the cached snapshot of hub repo `repo_id`; return the snapshot folder.

    The layout is the Hugging Face hub cache's (`models--ORG--NAME/snapshots/REV` + `refs/main`), so that
    `from_pretrained(repo_id)` finds it offline once `huggingface_hub.constants.HF_HUB_CACHE` points at `cache_dir`.
    """
    repo = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    snapshot = make(repo / "snapshots" / revision)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return snapshot
