"""Check that the Hugging Face encoders we load compute what the official weight files compute, token by token.

    report = verify_encoders(EncoderPair(official=Path("ViT-B-32.pt"), candidate="openai/clip-vit-base-patch32"),
                             EncoderPair(official=Path("audioset_0.4593.pth"), candidate=DEFAULT_AST))

For each modality the **reference** is the official weight file (`mgsv.encoders.official_weights`) in the official
arithmetic (LayerNorm epsilon of OpenAI CLIP / timm's DeiT, fp32), and the **candidate** is the encoder as
`mgsv extract` loads it (a hub id or folder, at the dtype asked). Both read the same media through the same
preprocessing, which `tests/test_encoder_parity.py` shows equal to the official one, so the per-token agreement
measures the weights and the model code alone.

The media are generated here (`probe_music`, `probe_frames`: deterministic, so every run and machine sees the
same), plus any music or video files the caller names, decoded as the candidate's feature spec records (the
candidate and the reference always read the same samples and frames).

`compare_tokens` and `ItemAgreement` are the per-item measure; the check against the released MGSV-EC features
(`mgsv.evaluation.release_check`: the raw test media re-extracted and compared with `MGSV_feature.zip`) reports
its items the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mgsv.errors import InputError

if TYPE_CHECKING:
    from mgsv.encoders.ast import AstMusicEncoder
    from mgsv.encoders.clip import ClipFrameEncoder

PROBE_RATE = 44100  # the generated music is stereo at 44.1 kHz, so that decoding choices (channel, resampler) matter
PROBE_SECONDS = 25.0
PROBE_FRAMES = 8


@dataclass(frozen=True)
class EncoderPair:
    """An official weight file and the encoder (hub id or folder) that should compute the same tokens."""

    official: Path
    candidate: str
    encoder_id: str | None = None  # the id the candidate's features record, for a local copy of a hub model


@dataclass
class ItemAgreement:
    """Agreement of one item's tokens: per-token cosine (min, mean) and the largest absolute difference."""

    modality: str
    item: str
    tokens: int
    cosine_min: float
    cosine_mean: float
    max_abs_diff: float
    scale: float  # the largest absolute value of the reference tokens, to read max_abs_diff against

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class VerifyReport:
    """Per-item agreement of each verified modality, and whether every token reached `min_cosine`."""

    min_cosine: float
    items: list[ItemAgreement] = field(default_factory=list)
    sources: dict[str, dict[str, str]] = field(default_factory=dict)

    def summary(self, modality: str) -> ItemAgreement | None:
        """All items of a modality pooled: the smallest cosine, the token-weighted mean, the largest difference."""
        rows = [r for r in self.items if r.modality == modality]
        if not rows:
            return None
        tokens = sum(r.tokens for r in rows)
        return ItemAgreement(
            modality, "all", tokens, min(r.cosine_min for r in rows),
            sum(r.cosine_mean * r.tokens for r in rows) / tokens, max(r.max_abs_diff for r in rows),
            max(r.scale for r in rows),
        )

    @property
    def ok(self) -> bool:
        return bool(self.items) and all(r.cosine_min >= self.min_cosine for r in self.items)

    def to_dict(self) -> dict[str, Any]:
        modalities = sorted({r.modality for r in self.items})
        return {
            "ok": self.ok,
            "min_cosine": self.min_cosine,
            "summary": {m: self.summary(m).to_dict() for m in modalities},  # type: ignore[union-attr]
            "items": [r.to_dict() for r in self.items],
            "sources": self.sources,
        }


def compare_tokens(modality: str, item: str, ours: np.ndarray, reference: np.ndarray, mask: np.ndarray | None = None
                   ) -> ItemAgreement:
    """Per-token agreement of `ours` with `reference` ([tokens, dim]), over the positions `mask` marks valid."""
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    if ours.shape != reference.shape:
        raise InputError(item, f"token shapes differ: {list(ours.shape)} vs the reference's {list(reference.shape)}")
    if mask is not None:
        ours, reference = ours[np.asarray(mask, bool)], reference[np.asarray(mask, bool)]
    if not len(ours):
        raise InputError(item, "no valid tokens to compare")
    norms = np.linalg.norm(ours, axis=1) * np.linalg.norm(reference, axis=1)
    cosine = np.where(norms > 0, (ours * reference).sum(1) / np.where(norms > 0, norms, 1), 0.0)
    return ItemAgreement(modality, item, len(ours), float(cosine.min()), float(cosine.mean()),
                         float(np.abs(ours - reference).max()), float(np.abs(reference).max()))


def probe_music(seconds: float = PROBE_SECONDS, rate: int = PROBE_RATE, seed: int = 15) -> np.ndarray:
    """Deterministic stereo test music [2, n]: a chord progression, a bass line, noise hits and different
    left/right parts (so the choice of channel shows), peaking below 1."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    left, right = np.zeros_like(t), np.zeros_like(t)
    beat = 0.5
    for k in range(int(seconds / beat)):
        start, stop = int(k * beat * rate), int((k + 1) * beat * rate)
        local = t[start:stop] - t[start]
        envelope = np.exp(-local * 3.0)
        root = 110.0 * 2 ** (rng.integers(0, 12) / 12)
        for harmonic, gain in ((1, 0.2), (2, 0.1), (3, 0.06), (5, 0.03)):
            left[start:stop] += gain * envelope * np.sin(2 * np.pi * root * harmonic * local)
        right[start:stop] += 0.15 * envelope * np.sin(2 * np.pi * root * 1.5 * local)  # a fifth above, right only
        if k % 2 == 0:  # a noise hit on every other beat, both sides
            hit = rng.standard_normal(stop - start) * np.exp(-local * 30.0) * 0.3
            left[start:stop] += hit
            right[start:stop] += hit
    return (np.stack([left, right]) * 0.9 / max(np.abs(left).max(), np.abs(right).max())).astype(np.float32)


def probe_frames(count: int = PROBE_FRAMES, size: tuple[int, int] = (640, 360), seed: int = 15) -> np.ndarray:
    """Deterministic test frames uint8 [count, height, width, 3]: gradients, moving shapes and texture."""
    rng = np.random.default_rng(seed)
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = []
    for k in range(count):
        base = np.stack([x / width * 255, y / height * 255, np.full_like(x, 128 + 12 * k)], axis=2)
        cx, cy = width * (0.2 + 0.6 * k / max(1, count - 1)), height * (0.5 + 0.3 * math.sin(k))
        disc = (x - cx) ** 2 + (y - cy) ** 2 < (height / 5) ** 2
        base[disc] = rng.uniform(0, 255, 3)
        base += rng.normal(0, 12, (height, width, 1))
        frames.append(np.clip(base, 0, 255).astype(np.uint8))
    return np.stack(frames)


def verify_encoders(
    clip: EncoderPair | None = None,
    ast: EncoderPair | None = None,
    media: Sequence[Path] = (),
    device: str = "cpu",
    dtype: str = "float32",
    min_cosine: float = 0.9999,
) -> VerifyReport:
    """Compare each candidate encoder with its official weight file on the probe media and `media` files."""
    if clip is None and ast is None:
        raise InputError("verify", "nothing to verify: give the CLIP and/or the AST pair")
    report = VerifyReport(min_cosine=min_cosine)
    videos, music = _split_media(media)
    if clip is not None:
        reference, candidate = _clip_pair(clip, device, dtype)
        report.sources["video"] = _source(clip, candidate.encoder_id)
        inputs = [("probe frames", probe_frames())] + [(str(p), _frames(p, candidate)) for p in videos]
        for name, frames in inputs:
            report.items.append(compare_tokens("video", name, candidate.encode(frames), reference.encode(frames)))
    if ast is not None:
        reference, candidate = _ast_pair(ast, device, dtype)
        report.sources["music"] = _source(ast, candidate.encoder_id)
        inputs = [("probe music", _probe_waveform())] + [(str(p), _waveform(p, candidate)) for p in music]
        for name, wave in inputs:
            ours, ref = candidate.encode(wave, source=name), reference.encode(wave, source=name)
            report.items.append(compare_tokens("music", name, ours.tokens, ref.tokens, ref.mask))
    return report


def _source(pair: EncoderPair, encoder_id: str) -> dict[str, str]:
    return {"official": str(pair.official), "candidate": pair.candidate, "encoder_id": encoder_id}


def _clip_pair(pair: EncoderPair, device: str, dtype: str) -> tuple[ClipFrameEncoder, ClipFrameEncoder]:
    import torch

    from mgsv.devices import resolve_device
    from mgsv.encoders.clip import ClipFrameEncoder
    from mgsv.encoders.official_weights import openai_clip_vision, read_state_dict

    candidate = ClipFrameEncoder.from_pretrained(pair.candidate, device=device, dtype=dtype, encoder_id=pair.encoder_id)
    model = openai_clip_vision(read_state_dict(pair.official), where=str(pair.official))
    torch_device = resolve_device(device)
    reference = ClipFrameEncoder(model.to(torch_device, torch.float32), "official", torch_device, batch_size=16)
    if reference.dim != candidate.dim or reference.image_size != candidate.image_size:
        raise InputError(pair.candidate, f"is not the model of {pair.official}: {candidate.dim}-d at "
                         f"{candidate.image_size} px against {reference.dim}-d at {reference.image_size} px")
    return reference, candidate


def _ast_pair(pair: EncoderPair, device: str, dtype: str) -> tuple[AstMusicEncoder, AstMusicEncoder]:
    import torch

    from mgsv.devices import resolve_device
    from mgsv.encoders.ast import AstMusicEncoder
    from mgsv.encoders.official_weights import ast_from_official, read_state_dict

    candidate = AstMusicEncoder.from_pretrained(pair.candidate, device=device, dtype=dtype, encoder_id=pair.encoder_id)
    heads = int(candidate.model.config.num_attention_heads)  # the official file does not record it
    model = ast_from_official(read_state_dict(pair.official), where=str(pair.official), num_heads=heads)
    torch_device = resolve_device(device)
    reference = AstMusicEncoder(model.to(torch_device, torch.float32), "official", torch_device, batch_size=4,
                                stride_s=candidate.stride_s)
    if reference.dim != candidate.dim:
        raise InputError(pair.candidate, f"is not the model of {pair.official}: {candidate.dim}-d tokens "
                         f"against {reference.dim}-d")
    return reference, candidate


def _split_media(paths: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    from mgsv.media.probe import probe

    videos, music = [], []
    for path in paths:
        info = probe(path)
        if info.has_video:
            videos.append(Path(path))
        elif info.has_audio:
            music.append(Path(path))
        else:
            raise InputError(path, "has neither video nor audio")
    return videos, music


def _frames(path: Path, encoder: ClipFrameEncoder) -> np.ndarray:
    from mgsv.media.decode import read_video_frames

    return read_video_frames(path, **encoder.decode_options).frames  # type: ignore[arg-type]


def _waveform(path: Path, encoder: AstMusicEncoder) -> np.ndarray:
    from mgsv.encoders.ast import SAMPLE_RATE
    from mgsv.features.spec import MUSIC_HORIZON_S
    from mgsv.media.decode import read_audio

    return read_audio(path, sample_rate=SAMPLE_RATE, max_seconds=MUSIC_HORIZON_S, **encoder.decode_options)  # type: ignore[arg-type]


def _probe_waveform() -> np.ndarray:
    """The probe music as the official pipeline hears it: the first channel, sinc-resampled to 16 kHz."""
    from mgsv.encoders.ast import SAMPLE_RATE
    from mgsv.media.resample import sinc_resample

    return sinc_resample(probe_music()[0], PROBE_RATE, SAMPLE_RATE)
