"""Defaults every layer shares: encoder ids, the music horizon, and the limits on what a video may be.

One torch-free module, so that the command line and the server can show these in `--help` and in the OpenAPI
schema without loading a model, and so that each value is written once (docs/official-code.md says where the
paper's numbers come from).
"""

from __future__ import annotations

# The encoders of the paper's pipeline, as Hugging Face ids (a local folder works wherever an id does).
DEFAULT_CLIP_ID = "openai/clip-vit-base-patch32"
DEFAULT_AST_ID = "MIT/ast-finetuned-audioset-10-10-0.4593"

# The model's fixed music horizon: every track is windowed over its first 240 s, and moments are predicted as a
# (centre, width) normalised by it (docs/official-code.md, "Music features").
MUSIC_HORIZON_S = 240.0

# MaDe reads at most 50 video frames, one per second (docs/official-code.md, "Video features").
MAX_VIDEO_FRAMES = 50

# Beyond 8192 x 8192 pixels (8K UHD is 7680 x 4320) a video header is more likely hostile or broken than real, and
# decoding one frame of it would take hundreds of MB.
MAX_VIDEO_PIXELS = 8192 * 8192

# The official extraction's preprocessing choices (docs/official-code.md, "Music features" and "Video features"):
# the first audio channel, torchaudio's windowed-sinc resampler, and cv2's frame s * int(fps) for second s.
OFFICIAL_CHANNEL = 0
OFFICIAL_RESAMPLER = "sinc"
OFFICIAL_FRAME_TIMES = "cv2"
