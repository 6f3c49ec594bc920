"""Frozen encoders with the official MGSV-EC preprocessing: CLIP frame embeddings and AST music window tokens.

    from mgsv.encoders import AstMusicEncoder, ClipFrameEncoder

    clip = ClipFrameEncoder.from_pretrained()            # openai/clip-vit-base-patch32, bf16 where fast
    frame_feats = clip.encode(frames)                    # uint8 [N, H, W, 3] -> float32 [N, 512]
    ast = AstMusicEncoder.from_pretrained()              # MIT/ast-finetuned-audioset-10-10-0.4593
    tokens, mask = ast.encode(waveform_16k)              # float32 [T] -> [96, 768], bool [96]

Both take a hub id or a local `save_pretrained` folder and expose `.spec` (the `FeatureSpec` their features carry).
Importing this package does not import torch or transformers; loading a model does.
"""

from mgsv.encoders.ast import DEFAULT_AST, AstMusicEncoder, MusicTokens
from mgsv.encoders.clip import DEFAULT_CLIP, ClipFrameEncoder

__all__ = ["DEFAULT_AST", "DEFAULT_CLIP", "AstMusicEncoder", "ClipFrameEncoder", "MusicTokens"]
