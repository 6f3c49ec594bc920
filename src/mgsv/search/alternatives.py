"""More moments of one track for a video ("more from this track"): the model asked again about the parts of the
track that no moment shown so far touches.

Each round, for every track: the free parts of the track are what is left of its first `used_seconds` once the
moments to avoid (the track's moment from grounding and the alternatives found so far) are cut out; only parts at
least as long as the video can host a moment (a render plays the music for the whole video). Each free part is
encoded by the model as a track of its own (its AST windows, from the library's feature store, shifted to start at
0: the model's `encode_music`), the video's relevance p_s to each part picks the best part, and detection on
(video, best part) gives the moment, shifted back into the track's seconds and placed inside the part. So an
alternative never overlaps a moment it avoids (beat snapping aside: it may move a start onto a nearby beat), and a
track with no part as long as the video has no other moment. Parts a round leaves alone are not encoded again.

Why not mask the windows of the moments to avoid in the stored encodings and detect again: MaDe's segment tokens
carry their window's position (the enhancement's sinusoidal encoding), and with its moment's windows masked the
model still points at that moment: on the demo's model, all 240 such detections (the top 5 of 24 videos, with and
without `fit_duration`) had their centre inside the masked moment (`benchmarks/bench_variety.py`, docs/grounding.md
"More from this track"). A part encoded on its own has no such memory.

Window i of the music spec is centred at i * stride seconds and valid when its centre is within the track
(`mgsv.encoders.ast`); a part's windows are those whose centre lies inside it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from mgsv.search.options import MAX_ALTERNATIVES
from mgsv.search.ranker import clip_to_track, fit_to_length

__all__ = ["MAX_ALTERNATIVES", "Span", "free_parts", "iou", "part_windows", "place_in_part"]

Span = tuple[float, float]


def free_parts(seconds: float, avoid: Sequence[Span], need: float) -> list[Span]:
    """The parts of [0, seconds] outside every avoided moment that are at least `need` seconds long, in order."""
    parts, at = [], 0.0
    for start, end in sorted(avoid):
        if start > at:
            parts.append((at, min(start, seconds)))
        at = max(at, end)
    if at < seconds:
        parts.append((at, seconds))
    return [(a, b) for a, b in parts if b - a >= max(need, 1e-6)]


def part_windows(part: Span, stride: float, windows: int) -> tuple[int, int]:
    """(first, stop): the windows (of `windows` valid ones) whose centre i * stride lies inside `part`."""
    first = math.ceil(part[0] / stride - 1e-9)
    stop = min(windows, math.floor(part[1] / stride + 1e-9) + 1)
    return first, max(first, stop)


def place_in_part(part: Span, start: float, end: float, length: float | None) -> Span:
    """A predicted moment (seconds of the track) placed inside `part`: exactly `length` long around its centre when
    given (`fit_duration`), else clipped to the part (`mgsv.search.ranker.clip_to_track`, the part as the track)."""
    low, high = part
    if length is not None:
        placed = fit_to_length((start + end) / 2 - low, length, high - low)
        assert placed is not None, "parts are at least as long as the video"
        return placed[0] + low, placed[1] + low
    clipped = clip_to_track(start - low, end - low, high - low)
    return clipped[0] + low, clipped[1] + low


def iou(a: Span, b: Span) -> float:
    """Temporal intersection over union of two (start, end) spans; 0 when both are empty."""
    overlap = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return overlap / union if union > 0 else 0.0
