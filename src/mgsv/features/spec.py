"""Feature specs: which encoder and preprocessing made a modality's token features.

A spec travels with every feature store and checkpoint. Two specs are compatible only if every field is equal, so
features extracted with another encoder, frame rate or window stride can never be mixed silently into training or
inference. The defaults below describe the paper's pipeline (CLIP ViT-B/32 frames at 1 fps, AST windows every
2.5 s over 240 s); the official `.pt` import and our own extractors both record exactly these.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mgsv.defaults import DEFAULT_AST_ID, DEFAULT_CLIP_ID, MUSIC_HORIZON_S
from mgsv.errors import InputError, SpecMismatchError

MODALITIES = ("video", "music")

_ABSENT = object()

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

    def check_compatible(self, other: FeatureSpec, what: str = "features") -> None:
        """Raise `SpecMismatchError` listing the differing fields if `other` is not this spec."""
        diffs = self.differences(other)
        if diffs:
            shown = "\n  ".join(diffs)
            raise SpecMismatchError(
                f"{what}: feature spec mismatch for {self.modality} "
                f"(expected {self.fingerprint()}, got {other.fingerprint()}):\n  {shown}"
            )


# CLIP's image normalisation constants (OpenAI CLIP, also in CLIPImageProcessor).
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


VIDEO_SPEC = FeatureSpec(
    modality="video",
    encoder=DEFAULT_CLIP_ID,
    dim=512,
    max_tokens=50,
    params={
        "fps": 1,
        "frame": "whole seconds from 0",
        "resize": "224 bicubic short side",
        "crop": "224 centre",
        "mean": CLIP_MEAN,
        "std": CLIP_STD,
        "token": "image_embeds",
    },
)


def music_spec(stride_s: float = 2.5) -> FeatureSpec:
    """The AST music spec for a window stride; the paper's default is 2.5 s (96 windows over 240 s)."""
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
    )


MUSIC_SPEC = music_spec(2.5)

DEFAULT_SPECS: dict[str, FeatureSpec] = {"video": VIDEO_SPEC, "music": MUSIC_SPEC}
