"""Frozen AST music encoder: one 768-d token per 10 s window, windows centred every 2.5 s over a 240 s horizon.

This reproduces the official raw-audio pipeline (docs/official-code.md, "Music features"):

0. (decoding, `mgsv.media.tracks.decode_track` with the encoder's `decode_options`) the first channel, resampled
   to 16 kHz with torchaudio's windowed sinc (`mgsv.media.resample`); `channel="mean"` and `resampler="soxr"` are
   recorded alternatives;
1. the 16 kHz waveform is zero-padded or truncated to 240 s; its real length is the track duration;
2. window i has centre c = i * stride and spans [max(0, c - 5), min(240, c + 5)] s (the first and last are shorter);
3. each window's Kaldi fbank (128 mel bins, 25 ms Hann frames every 10 ms, pre-emphasis 0.97, DC removal, power
   spectrum, log floored at float32 eps) is zero-padded or cut to 1024 frames, then normalised with
   (fbank + 4.2677393) / (4.5689974 * 2);
4. AST's token for the window is the mean of the CLS and distillation tokens after the final LayerNorm;
5. a window is valid when its centre is <= the track duration; invalid windows are not encoded and stay zero.

The fbank is written here with torch because the official code used `torchaudio.compliance.kaldi.fbank`, and
torchaudio does not import beside our torch; Kaldi itself (and `kaldi-native-fbank`) refuse 128 mel bins on a
512-point FFT because the lowest filters contain no FFT bin, while torchaudio keeps them as all-zero filters (their
log energy is the floor). docs/encoders.md records the checks against torchaudio's code, kaldi-native-fbank and
transformers' `ASTFeatureExtractor`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from mgsv.defaults import DEFAULT_AST_ID, MUSIC_HORIZON_S
from mgsv.errors import InputError
from mgsv.features.spec import (
    OFFICIAL_CHANNEL,
    OFFICIAL_RESAMPLER,
    FeatureSpec,
    decode_options,
    music_spec,
)

if TYPE_CHECKING:
    import torch

DEFAULT_AST = DEFAULT_AST_ID

SAMPLE_RATE = 16000
WINDOW_S = 10.0
FRAME_LENGTH = 400  # 25 ms at 16 kHz
FRAME_SHIFT = 160  # 10 ms at 16 kHz
FFT_SIZE = 512  # Kaldi rounds the 400-sample frame up to a power of two
PREEMPHASIS = 0.97
LOW_FREQ_HZ = 20.0
NUM_MEL_BINS = 128
TARGET_FRAMES = 1024
# AST's AudioSet statistics of the fbank (official normalisation divides by 2 * std).
NORM_MEAN = -4.2677393
NORM_STD = 4.5689974
# A float waveform peaking above this is almost surely integer PCM scale (e.g. int16 values cast to float).
MAX_PEAK = 16.0

KNOWN_AST_CONFIGS = {
    DEFAULT_AST: {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "patch_size": 16,
        "frequency_stride": 10,
        "time_stride": 10,
        "max_length": TARGET_FRAMES,
        "num_mel_bins": NUM_MEL_BINS,
    }
}
_AST_MODEL_TYPES = ("audio-spectrogram-transformer",)


class MusicTokens(NamedTuple):
    """AST tokens of one track: `tokens` float32 [windows, dim] (zero where masked) and `mask` bool [windows]."""

    tokens: np.ndarray
    mask: np.ndarray


@dataclass(frozen=True)
class WindowLayout:
    """Window centres (s), sample ranges [start, end) over the padded horizon, and validity of every window."""

    centres: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    mask: np.ndarray


def window_layout(duration_s: float, stride_s: float = 2.5, horizon_s: float = MUSIC_HORIZON_S) -> WindowLayout:
    """The official windows: centres arange(0, horizon, stride), span [c-5, c+5] clipped, valid if c <= duration."""
    centres = np.arange(0.0, horizon_s, stride_s)
    start_s = np.maximum(0.0, centres - WINDOW_S / 2)
    end_s = np.minimum(horizon_s, centres + WINDOW_S / 2)
    # int() truncation as in the official code (exact for the official strides, which are multiples of 0.5 s).
    starts = (SAMPLE_RATE * start_s).astype(np.int64)
    ends = (SAMPLE_RATE * end_s).astype(np.int64)
    return WindowLayout(centres=centres, starts=starts, ends=ends, mask=centres <= duration_s)


def _mel_scale(freq_hz: np.ndarray | float) -> np.ndarray:
    return 1127.0 * np.log1p(np.asarray(freq_hz, dtype=np.float64) / 700.0)


@functools.lru_cache(maxsize=4)
def mel_banks(num_mel_bins: int = NUM_MEL_BINS) -> np.ndarray:
    """Kaldi's triangular mel filters [num_mel_bins, FFT_SIZE // 2 + 1] (20 Hz..Nyquist, triangles in mel space)."""
    num_fft_bins = FFT_SIZE // 2
    mel_low, mel_high = _mel_scale(LOW_FREQ_HZ), _mel_scale(SAMPLE_RATE / 2)
    delta = (mel_high - mel_low) / (num_mel_bins + 1)
    left = mel_low + delta * np.arange(num_mel_bins)[:, None]
    centre, right = left + delta, left + 2 * delta
    mel = _mel_scale(SAMPLE_RATE / FFT_SIZE * np.arange(num_fft_bins))[None, :]
    banks = np.maximum(0.0, np.minimum((mel - left) / (centre - left), (right - mel) / (right - centre)))
    # Kaldi leaves the Nyquist bin out of every filter.
    return np.pad(banks, ((0, 0), (0, 1))).astype(np.float32)


@functools.lru_cache(maxsize=1)
def _hann_window() -> np.ndarray:
    # Kaldi's "hanning": symmetric, 0.5 - 0.5 cos(2 pi n / (N - 1)).
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(FRAME_LENGTH) / (FRAME_LENGTH - 1))).astype(np.float32)


_DEVICE_COPIES: dict[tuple[Any, torch.device], torch.Tensor] = {}


def _on_device(make: Callable[[], np.ndarray], device: torch.device) -> torch.Tensor:
    """`make()` as a tensor on `device`, copied there once (on a GPU a copy per window would cost more than its FFT);
    on the CPU it shares the cached array's memory as before."""
    import torch

    key = (make.args if isinstance(make, functools.partial) else make, device)
    if key not in _DEVICE_COPIES:
        _DEVICE_COPIES[key] = torch.from_numpy(make()).to(device)
    return _DEVICE_COPIES[key]


def kaldi_fbank(waveform: torch.Tensor, num_mel_bins: int = NUM_MEL_BINS) -> torch.Tensor:
    """Log mel fbank [frames, bins] of a 16 kHz waveform with the official Kaldi options (snip_edges, no dither)."""
    import torch

    wave = waveform.to(torch.float32)
    if wave.numel() < FRAME_LENGTH:
        return wave.new_zeros((0, num_mel_bins))
    frames = wave.unfold(0, FRAME_LENGTH, FRAME_SHIFT)
    frames = frames - frames.mean(dim=1, keepdim=True)
    # Per-frame pre-emphasis; the first sample uses itself as predecessor (Kaldi's convention).
    previous = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
    frames = (frames - PREEMPHASIS * previous) * _on_device(_hann_window, wave.device)
    power = torch.fft.rfft(frames, n=FFT_SIZE).abs().pow(2)
    energies = power @ _on_device(functools.partial(mel_banks, num_mel_bins), wave.device).T
    return energies.clamp_min(torch.finfo(torch.float32).eps).log()


def window_inputs(waveform: torch.Tensor, starts: np.ndarray, ends: np.ndarray) -> torch.Tensor:
    """AST inputs [len(starts), 1024, 128] of windows of a horizon-padded waveform: fbank, pad/cut, normalise.

    Windows overlap (10 s every 2.5 s: each frame belongs to four windows), so when every window starts on the
    10 ms frame grid of the first one, as the official layouts do, the fbank of their whole span is computed once
    and each window takes its frames from it: frame j of a window is the span's frame (start - first) / 160 + j,
    the same samples and the same per-frame arithmetic, so the result is that of windowing first (snip_edges drops
    the frames that would cross a window's end). Any other layout computes each window on its own.
    """
    import torch

    out = torch.zeros((len(starts), TARGET_FRAMES, NUM_MEL_BINS), dtype=torch.float32, device=waveform.device)
    if len(starts) == 0:
        return out
    first = int(np.min(starts))
    shared = bool(np.all((np.asarray(starts) - first) % FRAME_SHIFT == 0))
    span = kaldi_fbank(waveform[first : int(np.max(ends))]) if shared else None
    for row, (start, end) in enumerate(zip(starts, ends)):
        if span is None:
            fbank = kaldi_fbank(waveform[int(start) : int(end)])
        else:
            count = (int(end) - int(start) - FRAME_LENGTH) // FRAME_SHIFT + 1 if end - start >= FRAME_LENGTH else 0
            offset = (int(start) - first) // FRAME_SHIFT
            fbank = span[offset : offset + count]
        fbank = fbank[:TARGET_FRAMES]
        out[row, : len(fbank)] = fbank
    # The zero padding is normalised too, as in the official code.
    return (out - NORM_MEAN) / (NORM_STD * 2)


def check_waveform(waveform: object, source: str, sample_rate: int) -> np.ndarray:
    """Validate a decoded mono waveform (float, finite, non-empty, 16 kHz, [-1, 1] scale) -> float32 [T]."""
    if sample_rate != SAMPLE_RATE:
        raise InputError(source, f"AST needs {SAMPLE_RATE} Hz audio, got {sample_rate} Hz: resample when decoding")
    if not isinstance(waveform, np.ndarray):
        raise InputError(source, f"waveform must be a numpy array, got {type(waveform).__name__}")
    if waveform.ndim != 1:
        raise InputError(source, f"waveform must be mono with shape [samples], got shape {list(waveform.shape)}")
    if not np.issubdtype(waveform.dtype, np.floating):
        raise InputError(source, f"waveform must hold float samples in [-1, 1], got dtype {waveform.dtype}")
    if waveform.size == 0:
        raise InputError(source, "empty waveform: no audio to encode")
    wave = np.ascontiguousarray(waveform, dtype=np.float32)
    if not np.isfinite(wave).all():
        raise InputError(source, "waveform contains NaN or infinite samples")
    peak = float(np.abs(wave).max())
    if peak > MAX_PEAK:
        raise InputError(source, f"waveform peaks at {peak:g}: expected float samples in [-1, 1], not integer PCM")
    return wave


class AstMusicEncoder:
    """A frozen AST: a 16 kHz mono waveform -> `MusicTokens` (one token per window over the 240 s horizon)."""

    def __init__(
        self,
        model: torch.nn.Module,
        encoder_id: str,
        device: torch.device,
        batch_size: int,
        stride_s: float,
        compile: bool = False,
        channel: int | str = OFFICIAL_CHANNEL,
        resampler: str = OFFICIAL_RESAMPLER,
    ) -> None:
        from mgsv.encoders.loading import compile_for_inference

        if batch_size < 1:
            raise InputError("batch_size", f"must be at least 1, got {batch_size}")
        self.spec_template = _music_spec_or_error(stride_s, channel, resampler)
        self.channel = channel
        self.resampler = resampler
        self.model = model
        self.compiled = bool(compile)
        self._forward = compile_for_inference(model) if compile else model
        self.encoder_id = encoder_id
        self.device = device
        self.dtype = next(model.parameters()).dtype
        self.batch_size = int(batch_size)
        self.stride_s = float(stride_s)
        self.dim = int(model.config.hidden_size)
        config = model.config
        if (config.max_length, config.num_mel_bins) != (TARGET_FRAMES, NUM_MEL_BINS):
            raise InputError(
                encoder_id,
                f"AST input must be {TARGET_FRAMES} frames x {NUM_MEL_BINS} mel bins (the official preprocessing), "
                f"this model takes {config.max_length} x {config.num_mel_bins}",
            )

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str] = DEFAULT_AST,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str = "auto",
        batch_size: int = 4,
        stride_s: float = 2.5,
        encoder_id: str | None = None,
        compile: bool = False,
        channel: int | str = OFFICIAL_CHANNEL,
        resampler: str = OFFICIAL_RESAMPLER,
    ) -> AstMusicEncoder:
        """Load from a hub id or a save_pretrained folder (ASTModel or ASTForAudioClassification); see loading.py.

        `compile=True` runs the model through `torch.compile` (faster bulk extraction after a one-off compile of
        tens of seconds; batches are padded to `batch_size`). `channel` (0 or "mean") and `resampler` ("sinc" or
        "soxr") say how music must be decoded for this encoder; the spec records them (official: 0, "sinc").
        """
        from transformers import ASTModel

        from mgsv.devices import resolve_device
        from mgsv.encoders.loading import load_frozen, resolve_dtype, resolve_source

        _music_spec_or_error(stride_s, channel, resampler)
        source = resolve_source(name_or_path, encoder_id)
        torch_device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, torch_device)
        model = load_frozen(ASTModel, source, _AST_MODEL_TYPES, torch_device, torch_dtype, KNOWN_AST_CONFIGS)
        return cls(
            model, source.encoder_id, torch_device, batch_size, stride_s, compile=compile, channel=channel,
            resampler=resampler,
        )

    @property
    def spec(self) -> FeatureSpec:
        """The music feature spec of these tokens; equals `MUSIC_SPEC` for the official AST at stride 2.5 s."""
        return dataclasses.replace(self.spec_template, encoder=self.encoder_id, dim=self.dim)

    @property
    def decode_options(self) -> dict[str, int | str]:
        """How music must be decoded for these tokens: `read_audio`'s `channel` and `resampler`."""
        return decode_options(self.spec)

    def encode(
        self, waveform: np.ndarray, sample_rate: int = SAMPLE_RATE, offset_s: float = 0.0, source: str = "waveform"
    ) -> MusicTokens:
        """Encode a 16 kHz mono float waveform; `offset_s` starts the 240 s horizon later (for longer tracks)."""
        import torch

        from mgsv.encoders.loading import pad_batch

        wave = check_waveform(waveform, source, sample_rate)
        wave = _from_offset(wave, offset_s, source)
        horizon = int(MUSIC_HORIZON_S * SAMPLE_RATE)
        duration_s = len(wave) / SAMPLE_RATE
        # The fbank runs where the model does: on a GPU the waveform goes over once, not every window's features.
        padded = torch.zeros(horizon, dtype=torch.float32, device=self.device)
        kept = min(len(wave), horizon)
        padded[:kept] = torch.from_numpy(wave[:kept]).to(self.device)

        layout = window_layout(duration_s, self.stride_s)
        valid = np.flatnonzero(layout.mask)
        tokens = np.zeros((len(layout.centres), self.dim), dtype=np.float32)
        with torch.inference_mode():
            # All windows' fbanks at once (~0.5 MB each, 50 MB at most): they share frames (see window_inputs).
            all_inputs = window_inputs(padded, layout.starts[valid], layout.ends[valid])
            for first in range(0, len(valid), self.batch_size):
                rows = valid[first : first + self.batch_size]
                inputs = all_inputs[first : first + self.batch_size].to(device=self.device, dtype=self.dtype)
                if self.compiled:
                    inputs = pad_batch(inputs, self.batch_size)
                hidden = self._forward(input_values=inputs).last_hidden_state[: len(rows)]
                # Mean of the CLS and distillation tokens, taken in float32.
                token = (hidden[:, 0].float() + hidden[:, 1].float()) / 2
                tokens[rows] = token.cpu().numpy()
        return MusicTokens(tokens=tokens, mask=layout.mask.copy())


def _music_spec_or_error(
    stride_s: float, channel: int | str = OFFICIAL_CHANNEL, resampler: str = OFFICIAL_RESAMPLER
) -> FeatureSpec:
    try:
        spec = music_spec(stride_s)
    except ValueError as exc:
        raise InputError("stride_s", str(exc)) from exc
    try:
        spec = music_spec(stride_s, channel, resampler)
    except ValueError as exc:
        raise InputError("channel" if "channel" in str(exc) else "resampler", str(exc)) from exc
    # Windows must start on whole samples for the official int() arithmetic to be exact.
    if not math.isclose(stride_s * 2, round(stride_s * 2)):
        raise InputError("stride_s", f"must be a multiple of 0.5 s (official strides: 2.5, 5, 7.5, 10), got {stride_s}")
    return spec


def _from_offset(wave: np.ndarray, offset_s: float, source: str) -> np.ndarray:
    duration_s = len(wave) / SAMPLE_RATE
    if not (math.isfinite(offset_s) and 0.0 <= offset_s < duration_s):
        raise InputError(source, f"offset_s must be in [0, {duration_s:g}) s (the track length), got {offset_s}")
    return wave[round(offset_s * SAMPLE_RATE) :]
