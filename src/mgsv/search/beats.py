"""Snap a music moment to a beat, so that the cut into the track lands on the music's pulse.

Beats come from librosa's beat tracker (`librosa.beat.beat_track`, dynamic programming over an onset envelope),
run once on the whole track (its first `MAX_BEAT_SECONDS`): `whole_track_beats`. Snapping (`--snap beats`) and the
web page's timeline (`GET /v1/tracks/{id}/beats`, cached in the library by `mgsv.search.track_media`) both use
these beats, so a moment snapped by the grounder starts on a beat the page shows. A process keeps the beats of the
last `MEMO_TRACKS` files it analysed (keyed by path, size and modification time). librosa is an optional
dependency (the `beats` extra) and is imported only when beats are asked for. Its first call in a process compiles
numba code: a few seconds with a warm numba cache, tens of seconds the very first time after installation.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from types import ModuleType

import numpy as np

from mgsv.errors import InputError, MissingExtraError, require_extra  # noqa: F401  (MissingExtraError: callers catch it)

BEAT_SAMPLE_RATE = 22050  # librosa's default analysis rate
CONTEXT_S = 8.0  # snapping considers the beats within this many seconds of the moment's start
MAX_BEAT_SECONDS = 600.0  # tracks are analysed over their first 10 min (librosa holds their spectrogram: ~200 MB)
MEMO_TRACKS = 32

_memo: OrderedDict[tuple[str, int, int], np.ndarray] = OrderedDict()
_memo_lock = threading.Lock()


def require_librosa() -> ModuleType:
    """Import librosa, or explain which extra installs it."""
    return require_extra("librosa", "beats", "snapping to beats")  # type: ignore[return-value]


def analyse_beats(path: str | os.PathLike[str]) -> np.ndarray:
    """Beat times (seconds, ascending, float64) of the track's first `MAX_BEAT_SECONDS`; empty if it has no pulse.

    Raises `MissingExtraError` without librosa and `mgsv.errors.InputError` if the file cannot be decoded.
    """
    from mgsv.media.decode import is_silent, read_audio

    librosa = require_librosa()
    samples = read_audio(path, sample_rate=BEAT_SAMPLE_RATE, max_seconds=MAX_BEAT_SECONDS)
    if len(samples) < BEAT_SAMPLE_RATE or is_silent(samples):  # under a second, or nothing to hear: no pulse
        return np.zeros(0)
    _, beats = librosa.beat.beat_track(y=samples, sr=BEAT_SAMPLE_RATE, units="time")
    return np.asarray(beats, dtype=np.float64)


def whole_track_beats(path: str | os.PathLike[str]) -> np.ndarray:
    """`analyse_beats(path)`, remembered for the last `MEMO_TRACKS` files (a read-only array)."""
    from mgsv.media.probe import check_readable_file

    checked = check_readable_file(path)
    try:
        stat = checked.stat()
    except OSError as exc:  # removed since the check
        raise InputError(checked, f"cannot read it ({exc.strerror or exc})") from exc
    key = (os.path.realpath(checked), stat.st_size, stat.st_mtime_ns)
    with _memo_lock:
        if key in _memo:
            _memo.move_to_end(key)
            return _memo[key]
    beats = analyse_beats(path)  # outside the lock: another track's analysis need not wait for this one
    beats.setflags(write=False)
    with _memo_lock:
        _memo[key] = beats
        while len(_memo) > MEMO_TRACKS:
            _memo.popitem(last=False)
    return beats


def beat_times(path: str | os.PathLike[str], around_s: float, context_s: float = CONTEXT_S) -> np.ndarray:
    """The track's beat times (`whole_track_beats`) within `context_s` of `around_s`; empty if none are found."""
    beats = whole_track_beats(path)
    offset = max(0.0, float(around_s) - context_s)
    return beats[(beats >= offset) & (beats <= offset + 2 * context_s)]


def snap_to_beat(start: float, end: float, beats: np.ndarray, track_seconds: float) -> tuple[float, float] | None:
    """The moment moved (same length) so it starts on the beat nearest `start` and stays in [0, track_seconds].

    Beats that would push the moment past the track's end are not considered; None if no beat qualifies.
    """
    length = float(end) - float(start)
    beats = np.asarray(beats, dtype=np.float64)
    usable = beats[(beats >= 0) & (beats + length <= track_seconds + 1e-6)]
    if len(usable) == 0:
        return None
    beat = float(usable[np.argmin(np.abs(usable - start))])
    return beat, min(beat + length, track_seconds)
