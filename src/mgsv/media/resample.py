"""Band-limited resampling with a Hann-windowed sinc, as `torchaudio.functional.resample` computes it.

The official MGSV-EC music features were made with torchaudio's `resample` at its defaults (docs/official-code.md): a sinc
low-pass at 0.99 of the lower Nyquist frequency, cut after 6 zero crossings and shaped by a squared-cosine (Hann)
window, applied as one strided convolution per output phase. torchaudio does not import beside our torch, so the
same arithmetic is written here in torch, in float32 like torchaudio's (which builds the kernel in the waveform's
dtype); `tests/fixtures/encoder-parity/resample.safetensors` holds values torchaudio 0.13.1 (the official pin) and
2.9.1 computed, and docs/encoders.md the agreement. soxr, the other resampler `mgsv.media.decode` offers, is a
different filter: it gives other samples, so the choice is recorded in the music feature spec.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

LOWPASS_ZERO_CROSSINGS = 6  # torchaudio's lowpass_filter_width default
ROLLOFF = 0.99  # torchaudio's rolloff default: the cut-off as a fraction of the lower Nyquist frequency


def reduced_rates(orig_rate: int, new_rate: int) -> tuple[int, int]:
    """Both rates divided by their greatest common divisor (one kernel phase per reduced output sample)."""
    if orig_rate <= 0 or new_rate <= 0 or int(orig_rate) != orig_rate or int(new_rate) != new_rate:
        raise ValueError(f"sample rates must be positive integers, got {orig_rate} and {new_rate}")
    divisor = math.gcd(int(orig_rate), int(new_rate))
    return int(orig_rate) // divisor, int(new_rate) // divisor


def margin_samples(orig_rate: int, new_rate: int) -> int:
    """Input samples past an output sample that still weigh on it (the kernel's one-sided reach, in input samples)."""
    orig, new = reduced_rates(orig_rate, new_rate)
    return math.ceil(LOWPASS_ZERO_CROSSINGS * orig / (min(orig, new) * ROLLOFF)) + orig


@functools.lru_cache(maxsize=8)
def sinc_kernel(orig: int, new: int) -> tuple[torch.Tensor, int]:
    """The float32 kernel [new, 1, 2 * width + orig] for reduced rates, and its half-width `width` in input samples.

    Output sample j of each block of `new` reads input samples around j * orig / new: phase j's filter is the sinc
    centred there, evaluated at every input offset of the block's window.
    """
    import torch

    cutoff = min(orig, new) * ROLLOFF
    width = math.ceil(LOWPASS_ZERO_CROSSINGS * orig / cutoff)
    offsets = torch.arange(-width, width + orig, dtype=torch.float32)[None, None] / orig
    phases = torch.arange(0, -new, -1, dtype=torch.float32)[:, None, None] / new
    x = (phases + offsets) * cutoff  # distance to the phase's centre, in zero crossings of the low-pass sinc
    x = x.clamp(-LOWPASS_ZERO_CROSSINGS, LOWPASS_ZERO_CROSSINGS)
    window = torch.cos(x * math.pi / LOWPASS_ZERO_CROSSINGS / 2) ** 2
    x = x * math.pi
    sinc = torch.where(x == 0, torch.ones_like(x), torch.sin(x) / x)
    kernel = sinc * (window * (cutoff / orig))
    return kernel, width


def sinc_resample(samples: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Resample float32 audio [channels, n] (or [n]) from `orig_rate` to `new_rate` Hz: ceil(n * new / orig) samples.

    The signal is taken as zero outside [0, n), as torchaudio does, so the first and last few milliseconds are
    those of a signal that starts and stops there.
    """
    import torch

    if orig_rate == new_rate:
        return np.ascontiguousarray(samples, dtype=np.float32)
    orig, new = reduced_rates(orig_rate, new_rate)
    kernel, width = sinc_kernel(orig, new)
    wave = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
    flat = wave.reshape(-1, wave.shape[-1])
    length = flat.shape[-1]
    padded = torch.nn.functional.pad(flat[:, None], (width, width + orig))
    with torch.inference_mode():
        phases = torch.nn.functional.conv1d(padded, kernel, stride=orig)  # [channels, new, blocks]
    out = phases.transpose(1, 2).reshape(flat.shape[0], -1)[:, : math.ceil(new * length / orig)]
    return out.reshape(*wave.shape[:-1], -1).numpy()
