"""Feature specs: which encoder and preprocessing made a modality's token features.

A spec travels with every feature store and checkpoint. Two specs are compatible only if every field is equal, so
features extracted with another encoder, frame rate, window stride or preprocessing choice can never be mixed
silently into training or inference. The defaults below describe the official MGSV-EC extraction (CLIP ViT-B/32
frames at 1 fps taken as the official extractor took them, AST windows every 2.5 s over 240 s of the first audio
channel resampled by torchaudio's sinc filter); the official `.pt` import and our own extractors both record
exactly these. docs/encoders.md lists every recorded choice and its measured effect.

Version 2 added the choices that change features but were not recorded before: the audio channel, the resampler,
which frame stands for each second, how frames are decoded and reduced, and the JPEG round trip. A version-1 spec
therefore never equals a version-2 one; `check_compatible` explains how to re-make such features.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mgsv.defaults import (
    DEFAULT_AST_ID,
    DEFAULT_CLIP_ID,
    MUSIC_HORIZON_S,
    OFFICIAL_CHANNEL,
    OFFICIAL_FRAME_TIMES,
    OFFICIAL_RESAMPLER,
)
from mgsv.errors import InputError, SpecMismatchError

MODALITIES = ("video", "music")

_ABSENT = object()

# 2: the spec records the audio channel, the resampler, the frame times, frame decoding and the JPEG round trip.
SPEC_VERSION = 2

# The recorded preprocessing choices: (params key, the official MGSV-EC value, the values we offer).
RESAMPLERS = ("sinc", "soxr")  # torchaudio's windowed-sinc `resample` (official); soxr HQ
FRAME_TIMES = ("cv2", "shown")  # cv2's frame s * int(fps) (official extractor); the frame shown at second s
CHOICE_KEYS = {"music": ("channel", "resampler"), "video": ("frame_times", "jpeg_quality")}

# Fields in the order they are shown and hashed.
_FIELDS = ("modality", "encoder", "dim", "max_tokens", "params", "version")


def _canonical_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON round trip with sorted keys: the form that is stored, compared and hashed."""
    try:
        text = json.dumps(dict(params), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"feature spec params must be JSON values (no NaN/inf): {exc}") from exc
    return json.loads(text)


@dataclass(frozen=True)
class FeatureSpec:
    """What made a modality's features: encoder id, token size, preprocessing parameters and a version."""

    modality: str
    encoder: str
    dim: int
    max_tokens: int
    params: dict[str, Any] = field(default_factory=dict)
    version: int = 1
    # How to re-make features of this spec, for error messages (e.g. "re-index the library X"); never stored.
    remedy: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {self.modality!r}")
        if not isinstance(self.encoder, str) or not self.encoder:
            raise ValueError(f"encoder must be a non-empty string, got {self.encoder!r}")
        for name in ("dim", "max_tokens", "version"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        # Frozen dataclass: normalise params once so equality and hashing see the stored form.
        object.__setattr__(self, "params", _canonical_params(self.params))

    def __hash__(self) -> int:
        return hash(self.fingerprint())

    def to_dict(self) -> dict[str, Any]:
        """The spec as a JSON-able dict (the form stored in manifests and checkpoints)."""
        return {name: getattr(self, name) for name in _FIELDS}

    @classmethod
    def from_dict(cls, data: Any, where: str = "feature spec") -> FeatureSpec:
        """Rebuild a spec from `to_dict` output; `where` names the file in the error if it is malformed."""
        if not isinstance(data, Mapping):
            raise InputError(where, f"feature spec must be an object, got {type(data).__name__}")
        missing = [name for name in _FIELDS if name not in data]
        unknown = sorted(set(data) - set(_FIELDS))
        if missing or unknown:
            parts = []
            if missing:
                parts.append(f"missing field(s) {', '.join(missing)}")
            if unknown:
                parts.append(f"unknown field(s) {', '.join(unknown)}")
            raise InputError(where, f"malformed feature spec: {'; '.join(parts)}")
        if not isinstance(data["params"], Mapping):
            raise InputError(where, "malformed feature spec: params must be an object")
        try:
            return cls(**{name: data[name] for name in _FIELDS})
        except ValueError as exc:
            raise InputError(where, f"malformed feature spec: {exc}") from exc

    def fingerprint(self) -> str:
        """A short stable hash of every field: equal fingerprints mean interchangeable features."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]

    def differences(self, other: FeatureSpec) -> list[str]:
        """Human-readable `field: ours != theirs` lines (params compared key by key)."""
        lines = []
        for name in _FIELDS:
            ours, theirs = getattr(self, name), getattr(other, name)
            if name == "params":
                for key in sorted(set(ours) | set(theirs)):
                    if ours.get(key, _ABSENT) != theirs.get(key, _ABSENT):
                        a, b = (repr(p[key]) if key in p else "(absent)" for p in (ours, theirs))
                        lines.append(f"params.{key}: {a} != {b}")
            elif ours != theirs:
                lines.append(f"{name}: {ours!r} != {theirs!r}")
        return lines

    def with_remedy(self, remedy: str) -> FeatureSpec:
        """This spec, carrying how to re-make its features (shown by `check_compatible`; not stored or compared)."""
        return dataclasses.replace(self, remedy=remedy)

    def check_compatible(self, other: FeatureSpec, what: str = "features") -> None:
        """Raise `SpecMismatchError` listing the differing fields if `other` is not this spec.

        The message also says which recorded preprocessing choice differs and how to re-make the features.
        """
        diffs = self.differences(other)
        if diffs:
            shown = "\n  ".join(diffs)
            advice = "\n".join(mismatch_advice(self, other))
            raise SpecMismatchError(
                f"{what}: feature spec mismatch for {self.modality} "
                f"(expected {self.fingerprint()}, got {other.fingerprint()}):\n  {shown}" + (f"\n{advice}" if advice else "")
            )


# CLIP's image normalisation constants (OpenAI CLIP, also in CLIPImageProcessor).
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]



def check_choice(name: str, value: Any) -> Any:
    """Validate one recorded preprocessing choice (raises ValueError naming the allowed values)."""
    if name == "channel":
        if value == "mean" or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
            return value
        raise ValueError(f"channel must be 0 (official), another channel index, or 'mean', got {value!r}")
    if name == "resampler" and value in RESAMPLERS:
        return value
    if name == "frame_times" and value in FRAME_TIMES:
        return value
    if name == "jpeg_quality":
        if value is None or (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 100):
            return value
        raise ValueError(f"jpeg_quality must be None (no JPEG round trip) or 1..100, got {value!r}")
    allowed = {"resampler": RESAMPLERS, "frame_times": FRAME_TIMES}.get(name)
    if allowed is None:
        raise ValueError(f"unknown preprocessing choice {name!r}")
    raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")


def video_spec(
    frame_times: str = OFFICIAL_FRAME_TIMES, jpeg_quality: int | None = None, image_size: int = 224
) -> FeatureSpec:
    """The CLIP video spec for the recorded choices; the defaults are the official extraction's (`VIDEO_SPEC`)."""
    return FeatureSpec(
        modality="video",
        encoder=DEFAULT_CLIP_ID,
        dim=512,
        max_tokens=50,
        params={
            "fps": 1,
            "frame": "whole seconds from 0",
            "frame_times": check_choice("frame_times", frame_times),
            "frame_decode": "FFmpeg rgb24 of the stored pixels, rotated upright; bicubic resize from the full frame",
            "jpeg_quality": check_choice("jpeg_quality", jpeg_quality),
            "resize": f"{image_size} bicubic short side",
            "crop": f"{image_size} centre",
            "mean": CLIP_MEAN,
            "std": CLIP_STD,
            "token": "image_embeds",
        },
        version=SPEC_VERSION,
    )


VIDEO_SPEC = video_spec()


def music_spec(stride_s: float = 2.5, channel: int | str = OFFICIAL_CHANNEL, resampler: str = OFFICIAL_RESAMPLER) -> FeatureSpec:
    """The AST music spec for a window stride and the audio choices; the paper's stride is 2.5 s (96 windows over
    240 s), the official channel 0 and torchaudio's sinc resampler."""
    stride_s = float(stride_s)  # 5 and 5.0 must give one fingerprint
    windows = MUSIC_HORIZON_S / stride_s if stride_s > 0 else math.inf
    if not (math.isfinite(windows) and windows == int(windows)):
        raise ValueError(f"stride_s must divide {MUSIC_HORIZON_S:g} s into whole windows, got {stride_s!r}")
    return FeatureSpec(
        modality="music",
        encoder=DEFAULT_AST_ID,
        dim=768,
        max_tokens=int(windows),
        params={
            "sample_rate": 16000,
            "channel": check_choice("channel", channel),
            "resampler": check_choice("resampler", resampler),
            "window_s": 10,
            "stride_s": stride_s,
            "horizon_s": 240,
            "num_mel_bins": 128,
            "target_frames": 1024,
            "fbank": "kaldi htk_compat hanning 25ms/10ms no dither no energy",
            "norm_mean": -4.2677393,
            "norm_std": 4.5689974,
            "token": "mean of CLS and distillation tokens",
            "mask": "window centre <= track duration",
        },
        version=SPEC_VERSION,
    )


MUSIC_SPEC = music_spec(2.5)

DEFAULT_SPECS: dict[str, FeatureSpec] = {"video": VIDEO_SPEC, "music": MUSIC_SPEC}


def recorded_choices(spec: FeatureSpec) -> dict[str, Any]:
    """The preprocessing choices a spec records (`channel`/`resampler` or `frame_times`/`jpeg_quality`).

    A spec that predates them (version 1) has none: its features cannot be re-made the same way, so callers that
    decode for a spec refuse it (see `mismatch_advice`).
    """
    keys = CHOICE_KEYS[spec.modality]
    if spec.version < SPEC_VERSION or not all(k in spec.params for k in keys):
        raise SpecMismatchError(
            f"{spec.remedy or 'these features'}: feature spec version {spec.version} does not record how the "
            f"{spec.modality} was decoded ({', '.join(keys)})\n" + "\n".join(_legacy_lines(spec))
        )
    return {k: spec.params[k] for k in keys}


def decode_options(spec: FeatureSpec) -> dict[str, Any]:
    """The decoder's keyword arguments that give media as a spec records them: `channel` and `resampler` for
    `read_audio`; `frame_times`, `jpeg_quality` and `max_short_side` (the model's input size) for
    `read_video_frames`. A spec of version 1 records none: `recorded_choices` refuses it."""
    options = recorded_choices(spec)
    if spec.modality == "video":
        options["max_short_side"] = int(str(spec.params.get("resize", "224")).split()[0])
    return options


def mismatch_advice(expected: FeatureSpec, got: FeatureSpec) -> list[str]:
    """Lines explaining a spec mismatch: which recorded choice differs, and how to re-make the features."""
    old = [s for s in (expected, got) if s.version < SPEC_VERSION]
    if old:  # the side of the old spec is the one to re-make
        return [*_legacy_lines(old[0]), old[0].remedy or _GENERIC_REMEDY]
    lines = []
    for key in CHOICE_KEYS.get(expected.modality, ()):
        ours, theirs = expected.params.get(key, _ABSENT), got.params.get(key, _ABSENT)
        if ours != theirs and _ABSENT not in (ours, theirs):
            lines.append(f"The features were made with {key}={theirs!r} where {key}={ours!r} is expected: "
                         f"re-make them with {key}={ours!r} (docs/encoders.md lists the choices).")
    if lines:
        lines += [s.remedy for s in (expected, got) if s.remedy] or [_GENERIC_REMEDY]
    return lines


def _legacy_lines(spec: FeatureSpec) -> list[str]:
    what = {
        "music": "music was decoded from the mean of all channels (not the first channel) and resampled with soxr "
                 "(not torchaudio's sinc filter)",
        "video": "frames were taken at their display aspect and pre-scaled to 720 px by FFmpeg before CLIP's resize",
    }[spec.modality]
    return [
        f"A spec of version {spec.version} was recorded before mgsv recorded the preprocessing choices (spec "
        f"version {SPEC_VERSION}); features mgsv extracted then differ from the official extraction ({what}), so "
        "they cannot be mixed with features of today's spec."
    ]


_GENERIC_REMEDY = (
    "To re-make them: a music library: `mgsv library reindex --library LIBRARY`; a feature store made by "
    "`mgsv extract`: extract the media again into a new store; features imported with `mgsv data import`: import "
    "them again into a new store; a checkpoint converted from the official release: `mgsv convert ... --force`; "
    "a checkpoint mgsv trained: train it again on features of the spec it needs."
)
