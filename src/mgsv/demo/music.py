"""Music for the demo: real tracks from Debian's game-music packages when installed, generated tracks otherwise."""

from __future__ import annotations

import itertools
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
# Where to look instead (only there): folders separated by os.pathsep; an empty folder forces generated music.
MUSIC_ROOT_VARIABLE = "MGSV_DEMO_MUSIC_ROOT"
# Too short to hold the demo's moments, or digital silence.
SKIP = {"silence.ogg", "defeat.ogg", "defeat2.ogg", "victory.ogg", "victory2.ogg", "elf-land.ogg"}


def find_debian_music(roots: list[Path] | None = None, limit: int = 12) -> list[Path]:
    """Up to `limit` tracks from the Debian music packages under the first of `roots` that has any.

    By default the roots are the folders in MGSV_DEMO_MUSIC_ROOT (os.pathsep-separated) when it is set, and only
    those (an empty folder there means: use generated music); otherwise ./.media, then /.
    """
    if roots is None:
        configured = os.environ.get(MUSIC_ROOT_VARIABLE)
        if configured is not None:
            roots = [Path(p) for p in configured.split(os.pathsep) if p]
        else:
            roots = [Path.cwd() / ".media", Path("/")]
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


def excerpt_tracks(paths: list[Path], folder: Path, seconds: float = 60.0, skip: float = 20.0) -> list[Path]:
    """Write a `seconds`-long FLAC excerpt of each track (from `skip` s in, earlier if the track is short).

    The excerpts keep the tracks' names, rates and tags (title, artist, album, copyright, licence), with 0.5 s fades at the cuts.
    Short tracks keep the demo fast (encoding, rendering and training all scale with the music's length) and make
    its moments easier to find; a track shorter than `seconds` is kept whole.
    """
    import soundfile

    from mgsv.media.decode import read_audio_channels
    from mgsv.media.probe import probe

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for path in paths:
        info = probe(path)
        rate = info.audio.sample_rate if info.audio else 44100
        start = max(0.0, min(skip, (info.duration or 0.0) - seconds))
        audio = read_audio_channels(path, sample_rate=rate, max_seconds=seconds, offset=start)  # [2, n]
        fade = min(int(0.5 * rate), audio.shape[1] // 2)
        ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
        audio[:, :fade] *= ramp
        audio[:, audio.shape[1] - fade :] *= ramp[::-1]
        target = folder / f"{path.stem}.flac"
        with soundfile.SoundFile(target, "w", samplerate=rate, channels=2, format="FLAC") as handle:
            for tag in ("title", "artist", "album", "copyright", "license"):
                value = info.tags.get(tag) or info.tags.get(tag.upper())
                if value:
                    setattr(handle, tag, value)
            handle.comment = f"{start:.0f}-{start + audio.shape[1] / rate:.0f} s of {path.name}"
            handle.write(audio.T)
        out.append(target)
    return out


def synthesize_tracks(folder: Path, count: int = 10, sample_rate: int = 22050, seed: int = 0) -> list[Path]:
    """Write `count` generated tracks (45-75 s, FLAC): each its own tempo and key, with distinct sections.

    A section is a chord progression played as an arpeggio with its own timbre and loudness, over a kick drum at
    the track's tempo, so different moments of a track sound (and look, as spectrograms) different.
    """
    import soundfile

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        rng = np.random.default_rng([seed, index])
        duration = float(rng.uniform(45, 75))
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
    for begin, end in itertools.pairwise(bounds):
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
