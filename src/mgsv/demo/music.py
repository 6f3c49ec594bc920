"""Music for the demo: real tracks from Debian's game-music packages when installed, generated tracks otherwise."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

# Where Debian installs the music packages (`apt-get install wesnoth-1.16-music singularity-music hyperrogue-music`),
# relative to a root: "/" for an installed system, or a folder they were unpacked into with `dpkg-deb -x`.
DEBIAN_MUSIC_DIRS = (
    "usr/share/games/wesnoth/1.16/data/core/music",
    "usr/share/games/singularity/music",
    "usr/share/hyperrogue/music",
)
# Too short to hold the demo's moments, or digital silence.
SKIP = {"silence.ogg", "defeat.ogg", "defeat2.ogg", "victory.ogg", "victory2.ogg", "elf-land.ogg"}


def find_debian_music(roots: list[Path] | None = None, limit: int = 12) -> list[Path]:
    """Up to `limit` tracks from the Debian music packages under any of `roots` (MGSV_DEMO_MUSIC_ROOT, ./.media, /)."""
    if roots is None:
        roots = [Path(p) for p in os.environ.get("MGSV_DEMO_MUSIC_ROOT", "").split(os.pathsep) if p]
        roots += [Path.cwd() / ".media", Path("/")]
    found: list[Path] = []
    for root in roots:
        for relative in DEBIAN_MUSIC_DIRS:
            folder = root / relative
            if folder.is_dir():
                found += sorted(p for p in folder.glob("*.ogg") if p.name not in SKIP and p.stat().st_size > 300_000)
        if found:
            break
    # A spread over the packages rather than the first package only.
    rng = np.random.default_rng(0)
    return [found[i] for i in sorted(rng.permutation(len(found))[:limit])] if found else []


def synthesize_tracks(folder: Path, count: int = 10, sample_rate: int = 22050, seed: int = 0) -> list[Path]:
    """Write `count` generated tracks (45-100 s, FLAC): each its own tempo and key, with distinct sections.

    A section is a chord progression played as an arpeggio with its own timbre and loudness, over a kick drum at
    the track's tempo, so different moments of a track sound (and look, as spectrograms) different.
    """
    import soundfile

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        rng = np.random.default_rng([seed, index])
        duration = float(rng.uniform(45, 100))
        tempo = float(rng.uniform(70, 150))
        root = 55.0 * 2 ** (float(rng.uniform(0, 48)) / 12)  # four octaves of registers
        audio = _track(rng, duration, tempo, root, sample_rate)
        path = folder / f"generated-{index + 1:02d}.flac"
        soundfile.write(path, audio, sample_rate)
        paths.append(path)
    return paths


def _track(rng: np.random.Generator, duration: float, tempo: float, root: float, rate: int) -> np.ndarray:
    t = np.arange(int(duration * rate)) / rate
    beat = 60.0 / tempo
    out = np.zeros_like(t)
    sections = np.sort(rng.uniform(0, duration, int(rng.integers(3, 6))))
    bounds = np.concatenate([[0.0], sections, [duration]])
    for begin, end in zip(bounds[:-1], bounds[1:]):
        span = (t >= begin) & (t < end)
        chords = rng.integers(0, 12, 4)
        harmonics = rng.uniform(0.0, 1.0, 8) ** 3  # timbre: from pure tones to bright, buzzy ones
        harmonics[0] = max(harmonics[0], 0.2)
        level = rng.uniform(0.2, 0.6)
        note_len = beat / float(rng.choice([1, 2, 4]))
        step = np.floor((t[span] - begin) / note_len).astype(int)
        chord = chords[(step // 8) % 4]
        degree = np.array([0, 4, 7, 12])[step % 4]
        freq = root * 2 ** ((chord + degree) / 12)
        phase = 2 * np.pi * freq * (t[span] - begin)
        envelope = np.exp(-((t[span] - begin) % note_len) * 6)
        tone = sum(h * np.sin((k + 1) * phase) for k, h in enumerate(harmonics))
        out[span] += level * envelope * tone / harmonics.sum()
    kick_phase = (t % beat) / beat
    out += 0.3 * np.sin(2 * np.pi * 55 * t) * np.exp(-kick_phase * 25)
    # Hi-hats of the track's own density and colour (broadband noise).
    hat_phase = (t % (beat / 2)) / (beat / 2)
    out += float(rng.uniform(0, 0.25)) * rng.standard_normal(len(t)) * np.exp(-hat_phase * 40)
    fade = np.minimum(1.0, np.minimum(t, duration - t) / 1.0)
    return (0.8 * out * fade / max(np.abs(out).max(), 1e-6)).astype(np.float32)
