"""A diverse top k: near-duplicate tracks do not fill the list (maximal marginal relevance, MMR).

Plain grounding lists the k tracks of highest p_s; a library with several versions of one song, or many tracks of
one artist or album, can fill the whole list with them. With `diverse`, the k are picked greedily from the best
`pool_size(k)` tracks: each pick is the track of highest

    p_s - PENALTY * max over the tracks already picked of redundancy(track, picked)

where redundancy is 1 for the same artist or the same album (tags, case-insensitive, when both tracks have one), and
otherwise grows linearly from 0 at a cosine of `cosine` (`GroundOptions.diverse_cosine`) to 1 at a cosine of 1
between the tracks' embeddings (the index form's h0, `TrackIndex.embedding_rows`: what the model itself compares
videos with; no model internals). PENALTY spans the whole range of p_s ([-2, 2]), so a full duplicate comes after
every track that duplicates nothing; among duplicates the order is still by p_s.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mgsv.search.catalog import Track

PENALTY = 4.0  # the width of p_s's range: a redundancy of 1 outweighs any difference in relevance
DEFAULT_COSINE = 0.9  # embeddings closer than this start to count as the same music
POOL_FACTOR, MIN_POOL = 4, 20  # MMR picks from the best max(4 k, 20) tracks by p_s


def pool_size(k: int) -> int:
    """How many of the best tracks the diverse top k are picked from."""
    return max(POOL_FACTOR * k, MIN_POOL)


def group_keys(track: Track) -> frozenset[str]:
    """The tags that make two tracks the same music for diversity: artist and album, normalised."""
    keys = set()
    for name, value in (("artist", track.artist), ("album", track.album)):
        text = (value or "").strip().casefold()
        if text:
            keys.add(f"{name}:{text}")
    return frozenset(keys)


def redundancy(embeddings: np.ndarray, keys: Sequence[frozenset[str]], cosine: float) -> np.ndarray:
    """Pairwise redundancy [n, n] in [0, 1] (see the module docstring); the diagonal is 1."""
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    similarity = unit @ unit.T
    graded = np.clip((similarity - cosine) / max(1.0 - cosine, 1e-6), 0.0, 1.0)
    shared = np.array([[bool(a & b) for b in keys] for a in keys], dtype=bool).reshape(len(keys), len(keys))
    out = np.where(shared, 1.0, graded)
    np.fill_diagonal(out, 1.0)
    return out


def diverse_order(scores: np.ndarray, embeddings: np.ndarray, keys: Sequence[frozenset[str]], k: int,
                  cosine: float = DEFAULT_COSINE) -> np.ndarray:
    """Positions of the k tracks MMR picks among `scores` [n] (best first); ties keep the given order."""
    scores = np.asarray(scores, dtype=np.float64)
    k = min(k, len(scores))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    pairwise = redundancy(np.asarray(embeddings, dtype=np.float64), keys, cosine)
    worst = np.zeros(len(scores))  # each track's highest redundancy with a track already picked
    free = np.ones(len(scores), dtype=bool)
    picked = []
    for _ in range(k):
        value = np.where(free, scores - PENALTY * worst, -np.inf)
        best = int(np.argmax(value))  # the first of equal values: ties keep the given order
        picked.append(best)
        free[best] = False
        worst = np.maximum(worst, pairwise[best])
    return np.array(picked, dtype=np.int64)
