"""Frozen CLIP frame encoder: one projected image embedding per video frame, as the official MGSV-EC features.

The official features are OpenAI CLIP's `encode_image` of each 1 fps frame (docs/official-code.md, "Video features"): the projected CLS embedding,
not L2-normalised. `CLIPVisionModelWithProjection(...).image_embeds` is the same computation in transformers
(`AutoModel` would silently drop the projection, DESIGN §10).

Preprocessing follows the original CLIP transform exactly: bicubic resize of the short side to 224 (PIL), centre
crop 224 (torchvision's rounding of the offset), /255, normalise with CLIP's mean/std. It is written here with PIL
rather than taken from `CLIPImageProcessorPil` because that processor puts the crop offset at floor((h-224)/2)
where torchvision (used by CLIP) rounds half to even, shifting some crops by one pixel; torchvision itself cannot
be installed beside our torch. Frames come from `mgsv.media.decode.read_video_frames` with the encoder's
`decode_options`: which frame stands for each second (`frame_times`), an optional JPEG round trip of the full
frame (`jpeg_quality`, as the official frames were .jpg files), and the bicubic reduction to the short side this
model takes, done by the decoder from the full frame (so the resize here leaves decoded frames as they are).
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING

import numpy as np

from mgsv.defaults import DEFAULT_CLIP_ID
from mgsv.errors import InputError
from mgsv.features.spec import CLIP_MEAN, CLIP_STD, OFFICIAL_FRAME_TIMES, FeatureSpec, decode_options, video_spec
from mgsv.media.decode import reduced_size

if TYPE_CHECKING:
    import torch

DEFAULT_CLIP = DEFAULT_CLIP_ID

# The published architecture of each encoder id we know, checked when a folder claims that id.
KNOWN_CLIP_CONFIGS = {
    DEFAULT_CLIP: {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "patch_size": 32,
        "image_size": 224,
        "projection_dim": 512,
    }
}
_CLIP_MODEL_TYPES = ("clip", "clip_vision_model")
# Frames at or above this size are refused: no real video frame is this large, and PIL would need gigabytes.
MAX_FRAME_SIDE = 16384


def crop_box(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """The (left, top, right, bottom) centre crop of torchvision's `CenterCrop(size)` (offsets rounded half-even)."""
    left = round((width - size) / 2.0)
    top = round((height - size) / 2.0)
    return left, top, left + size, top + size


def resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) after torchvision's `Resize(size)`: the short side becomes `size`, the long side truncated."""
    return reduced_size(width, height, size)


def preprocess_frames(frames: np.ndarray, size: int = 224) -> np.ndarray:
    """CLIP's transform of uint8 RGB frames [N, H, W, 3] -> float32 [N, 3, size, size] (checked by `check_frames`)."""
    from PIL import Image

    mean = np.asarray(CLIP_MEAN, dtype=np.float32)[:, None, None]
    std = np.asarray(CLIP_STD, dtype=np.float32)[:, None, None]
    out = np.empty((len(frames), 3, size, size), dtype=np.float32)
    height, width = frames.shape[1:3]
    new_w, new_h = resized_size(width, height, size)
    box = crop_box(new_w, new_h, size)
    for i, frame in enumerate(frames):
        image = Image.fromarray(frame).resize((new_w, new_h), Image.Resampling.BICUBIC).crop(box)
        pixels = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / np.float32(255.0)
        out[i] = (pixels - mean) / std
    return out


def check_frames(frames: object, source: str) -> np.ndarray:
    """Validate decoded frames (uint8 RGB [N, H, W, 3], N >= 1) and return them as a C-contiguous array."""
    if not isinstance(frames, np.ndarray):
        raise InputError(source, f"frames must be a numpy array, got {type(frames).__name__}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise InputError(source, f"frames must have shape [N, H, W, 3] (RGB), got {list(frames.shape)}")
    if frames.dtype != np.uint8:
        raise InputError(source, f"frames must be uint8 RGB, got dtype {frames.dtype}")
    n, height, width = frames.shape[:3]
    if n == 0:
        raise InputError(source, "no frames to encode")
    if height == 0 or width == 0 or max(height, width) > MAX_FRAME_SIDE:
        raise InputError(source, f"frame size {width}x{height} is outside 1..{MAX_FRAME_SIDE} pixels")
    return np.ascontiguousarray(frames)


class ClipFrameEncoder:
    """A frozen CLIP vision tower with its projection: uint8 frames -> float32 [N, projection_dim] embeddings."""

    def __init__(
        self,
        model: torch.nn.Module,
        encoder_id: str,
        device: torch.device,
        batch_size: int,
        compile: bool = False,
        frame_times: str = OFFICIAL_FRAME_TIMES,
        jpeg_quality: int | None = None,
    ) -> None:

        from mgsv.encoders.loading import compile_for_inference

        if batch_size < 1:
            raise InputError("batch_size", f"must be at least 1, got {batch_size}")
        _video_spec_or_error(frame_times, jpeg_quality)
        self.frame_times = frame_times
        self.jpeg_quality = jpeg_quality
        self.model = model
        self.compiled = bool(compile)
        self._forward = compile_for_inference(model) if compile else model
        self.encoder_id = encoder_id
        self.device = device
        self.dtype: torch.dtype = next(model.parameters()).dtype
        self.batch_size = int(batch_size)
        self.image_size = int(model.config.image_size)
        self.dim = int(model.config.projection_dim)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str] = DEFAULT_CLIP,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str = "auto",
        batch_size: int = 32,
        encoder_id: str | None = None,
        compile: bool = False,
        frame_times: str = OFFICIAL_FRAME_TIMES,
        jpeg_quality: int | None = None,
    ) -> ClipFrameEncoder:
        """Load from a hub id or a save_pretrained folder (full CLIP or vision-only); see `mgsv.encoders.loading`.

        `compile=True` runs the model through `torch.compile` (faster bulk extraction after a one-off compile of
        tens of seconds; batches are padded to `batch_size`). `frame_times` ("cv2", official, or "shown") and
        `jpeg_quality` (None, or the quality of a JPEG round trip) say how frames must be decoded for this
        encoder; the spec records them.
        """
        _video_spec_or_error(frame_times, jpeg_quality)
        from transformers import CLIPVisionModelWithProjection

        from mgsv.devices import resolve_device
        from mgsv.encoders.loading import load_frozen, resolve_dtype, resolve_source

        source = resolve_source(name_or_path, encoder_id)
        torch_device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, torch_device)
        model = load_frozen(
            CLIPVisionModelWithProjection, source, _CLIP_MODEL_TYPES, torch_device, torch_dtype, KNOWN_CLIP_CONFIGS
        )
        return cls(
            model, source.encoder_id, torch_device, batch_size, compile=compile, frame_times=frame_times,
            jpeg_quality=jpeg_quality,
        )

    @property
    def spec(self) -> FeatureSpec:
        """The video feature spec of these embeddings; equals `VIDEO_SPEC` for the official CLIP ViT-B/32."""
        template = video_spec(self.frame_times, self.jpeg_quality, self.image_size)
        return dataclasses.replace(template, encoder=self.encoder_id, dim=self.dim)

    @property
    def decode_options(self) -> dict[str, object]:
        """How frames must be decoded for these embeddings: `read_video_frames`' keyword arguments."""
        return decode_options(self.spec)

    def encode(self, frames: np.ndarray, source: str = "frames") -> np.ndarray:
        """Embed uint8 RGB frames [N, H, W, 3] -> float32 [N, dim] (CLIP `encode_image`, not L2-normalised)."""
        import torch

        from mgsv.encoders.loading import pad_batch

        frames = check_frames(frames, source)
        out = np.empty((len(frames), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(frames), self.batch_size):
                batch = frames[start : start + self.batch_size]
                pixels = torch.from_numpy(preprocess_frames(batch, self.image_size))
                pixels = pixels.to(device=self.device, dtype=self.dtype)
                if self.compiled:
                    pixels = pad_batch(pixels, self.batch_size)
                embeds = self._forward(pixel_values=pixels).image_embeds[: len(batch)]
                out[start : start + len(batch)] = embeds.float().cpu().numpy()
        return out


def _video_spec_or_error(frame_times: str, jpeg_quality: int | None) -> FeatureSpec:
    try:
        return video_spec(frame_times, jpeg_quality)
    except ValueError as exc:
        raise InputError("frame_times" if "frame_times" in str(exc) else "jpeg_quality", str(exc)) from exc
