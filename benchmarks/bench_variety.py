"""How different the alternatives ("more from this track") and the diverse list are, on the demo's library.

Grounds the demo's held-out query videos (their CLIP features, from the demo's dataset folder) against the demo's
library with its trained model, as `mgsv ground` does:

- alternatives: `--alternatives 3` for every listed track; per alternative, its IoU with the track's first moment
  and with every earlier moment of the track. And whether they help: for the videos whose planted track is listed,
  how often its first moment hits the planted moment (IoU >= 0.5) and how often the first or an alternative does.
  Reported with and without `fit_duration`.
- recovery: whether an alternative finds the planted moment when the first moment missed it. For each video, a
  decoy moment of the video's length as far from the planted one as the track allows stands in for a wrong first
  moment: `more_moments(video, planted track, avoid=[decoy], count=1)` should land on the planted moment.
- masking (the design not taken): each listed track's moment masked in the track's stored encodings (windows
  whose centre lies in it set invalid) and detection run again; how often the new prediction's centre still lies
  inside the masked moment.
- diversity: the top 5 with and without `diverse`; the mean and max pairwise cosine of the listed tracks' embeddings
  (the track index's h0) and how many listed pairs share an artist or album, averaged over the videos; also with a
  lower `diverse_cosine`, so that the embedding half of the rule has something to do in a library this small.

    mgsv demo --out /tmp/mgsv-demo
    nice .venv/bin/python benchmarks/bench_variety.py /tmp/mgsv-demo [--split val,test] [--json]

A quality benchmark: its numbers are rates and cosines, not speeds. Each part is also timed (`seconds`), with the
matrix-product peaks of this process printed and put in the JSON; no useful FLOPs are counted for these parts (many
small detections of the demo's small model, whose count depends on how many alternatives each track yields:
`gflop: not counted`, no floor). bench_ground.py counts the FLOPs of a grounding query.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from _peak import Peaks, load_average

from mgsv.features.store import FeatureStore
from mgsv.search import GroundOptions, MusicLibrary
from mgsv.search.alternatives import iou
from mgsv.search.diversity import group_keys
from mgsv.search.grounder import Grounder, GroundingResult


@dataclass
class Query:
    video_id: str
    feats: np.ndarray  # CLIP frame features [frames, dim]
    seconds: float
    truth: tuple[str, float, float]  # the planted (track, start, end)


def queries(demo: Path, splits: list[str]) -> list[Query]:
    table = FeatureStore(demo / "data" / "features").modality("video")
    rows = pd.concat([pd.read_csv(demo / "data" / f"{split}_data.csv", dtype={"video_id": str}) for split in splits])
    found = []
    for row in rows.itertuples():
        tokens, mask = table.get(row.video_id)
        feats = np.asarray(tokens, dtype=np.float32)[np.asarray(mask, dtype=bool)]
        found.append(Query(row.video_id, feats, float(row.video_end),
                           (str(row.music_id), float(row.music_start), float(row.music_end))))
    return found


def alternatives_report(grounder: Grounder, videos: list[Query], fit: bool) -> dict[str, Any]:
    first_ious, earlier_ious, per_track, hits_first, hits_any, listed_truth = [], [], [], 0, 0, 0
    for query in videos:
        options = GroundOptions(top=5, fit_duration=fit, alternatives=3)
        result = grounder.ground_features(query.feats, query.seconds, options, source=query.video_id)
        for moment in result.moments:
            per_track.append(len(moment.alternatives))
            earlier = [moment.span]
            for other in moment.alternatives:
                first_ious.append(iou(other.span, moment.span))
                earlier_ious.append(max(iou(other.span, span) for span in earlier))
                earlier.append(other.span)
            track, start, end = query.truth
            if moment.track_id == track:
                listed_truth += 1
                hits_first += iou(moment.span, (start, end)) >= 0.5
                hits_any += max(iou(span, (start, end)) for span in earlier) >= 0.5
    values = np.array(first_ious)
    return {
        "fit_duration": fit,
        "tracks": len(per_track),
        "alternatives": len(values),
        "alternatives_per_track": round(float(np.mean(per_track)), 2),
        "tracks_with_3": int(np.sum(np.array(per_track) == 3)),
        "iou_with_first_below_0.3": round(float(np.mean(values < 0.3)), 3) if len(values) else None,
        "iou_with_first_mean": round(float(values.mean()), 3) if len(values) else None,
        "iou_with_first_max": round(float(values.max()), 3) if len(values) else None,
        "iou_with_any_earlier_max": round(float(max(earlier_ious)), 3) if earlier_ious else None,
        "planted_track_listed": listed_truth,
        "planted_moment_hit_by_first": hits_first,
        "planted_moment_hit_by_first_or_alternative": hits_any,
    }


def recovery_report(grounder: Grounder, videos: list[Query], fit: bool) -> dict[str, Any]:
    hits, tried, ious = 0, 0, []
    for query in videos:
        track_id, start, end = query.truth
        track = grounder.library.track(track_id)
        room_before, room_after = start, track.used_seconds - end
        length = query.seconds
        if max(room_before, room_after) < length:
            continue  # no decoy fits beside the planted moment
        decoy = (0.0, length) if room_before >= room_after else (track.used_seconds - length, track.used_seconds)
        video = grounder.encode_features(query.feats, query.seconds, source=query.video_id)
        found = grounder.more_moments(video, track_id, [decoy], GroundOptions(fit_duration=fit), count=1)
        tried += 1
        if found:
            ious.append(iou(found[0].span, (start, end)))
            hits += ious[-1] >= 0.5
    return {"fit_duration": fit, "videos": tried, "planted_moment_hit": hits,
            "iou_with_planted_mean": round(float(np.mean(ious)), 3) if ious else None}


def masked_report(grounder: Grounder, videos: list[Query], fit: bool) -> dict[str, Any]:
    import torch

    from mgsv.search import ranker

    encoded = grounder.prepare()
    stride = float(grounder.music_spec.params["stride_s"])
    inside = total = 0
    for query in videos:
        video = grounder.encode_features(query.feats, query.seconds, source=query.video_id)
        for moment in grounder.ground_encoded(video, GroundOptions(top=5, fit_duration=fit)).moments:
            track = grounder.library.track(moment.track_id)
            rows = encoded.index.rows_of(np.array([track.content_hash], dtype="S64"))
            entries = encoded.index.entries(rows)
            centres = torch.arange(entries["mask"].shape[1]) * stride
            entries["mask"] = entries["mask"] & ~((centres >= moment.start_s) & (centres <= moment.end_s))
            if not entries["mask"].any():
                continue
            music = grounder.model.index_encodings(entries)
            _, centre = ranker.detect_moments(grounder.model, video.encoding, music, np.arange(1))
            total += 1
            inside += bool(moment.start_s <= float(centre[0]) <= moment.end_s)
    return {"fit_duration": fit, "masked_detections": total, "centre_inside_the_masked_moment": inside}


def listed(grounder: Grounder, result: GroundingResult) -> tuple[float, float, int]:
    """Mean and max pairwise cosine of the listed tracks' h0, and how many pairs share an artist or album."""
    encoded = grounder.prepare()
    tracks = [grounder.library.track(m.track_id) for m in result.moments]
    rows = encoded.index.rows_of(np.array([t.content_hash for t in tracks], dtype="S64"))
    embeddings = encoded.index.embedding_rows(rows)
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    pairs = list(itertools.combinations(range(len(tracks)), 2))
    cosines = [float(unit[i] @ unit[j]) for i, j in pairs]
    shared = sum(bool(group_keys(tracks[i]) & group_keys(tracks[j])) for i, j in pairs)
    return float(np.mean(cosines)), float(np.max(cosines)), shared


def diversity_report(grounder: Grounder, videos: list[Query]) -> dict[str, Any]:
    settings = {"plain": {}, "diverse": {"diverse": True}, "diverse_cosine_0.5": {"diverse": True,
                                                                                  "diverse_cosine": 0.5}}
    report = {}
    for name, extra in settings.items():
        stats = np.array([listed(grounder, grounder.ground_features(q.feats, q.seconds, GroundOptions(top=5, **extra),
                                                                    source=q.video_id))
                          for q in videos])  # fmt: skip
        report[name] = {"mean_pairwise_cosine": round(float(stats[:, 0].mean()), 3),
                        "max_pairwise_cosine": round(float(stats[:, 1].mean()), 3),
                        "pairs_sharing_artist_or_album": round(float(stats[:, 2].mean()), 2)}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("demo", type=Path, help="a folder made by `mgsv demo --out`")
    parser.add_argument("--split", default="val,test", help="dataset splits whose videos to ground (comma list)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    peaks = Peaks.measure()
    demo = args.demo
    videos = queries(demo, args.split.split(","))
    grounder = Grounder(*_model(demo), MusicLibrary(demo / "library"))
    embeddings = grounder.prepare().index.all_embeddings()
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    pairs = (unit @ unit.T)[np.triu_indices(len(unit), 1)]
    seconds: dict[str, float] = {}

    def timed(name: str, work: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        result = work()
        seconds[name] = round(time.perf_counter() - started, 3)
        return result

    report = {
        "videos": len(videos),
        "tracks": len(grounder.library),
        "library_pairwise_cosine": {"median": round(float(np.median(pairs)), 3), "max": round(float(pairs.max()), 3)},
        "alternatives": timed("alternatives", lambda: [alternatives_report(grounder, videos, fit)
                                                        for fit in (True, False)]),
        "recovery": timed("recovery", lambda: [recovery_report(grounder, videos, fit) for fit in (True, False)]),
        "masking": timed("masking", lambda: [masked_report(grounder, videos, fit) for fit in (True, False)]),
        "top5": timed("top5", lambda: diversity_report(grounder, videos)),
    }
    peaks = peaks.best(Peaks.measure())
    report["seconds"] = seconds
    report["gflop"] = "not counted (see the module docstring)"
    report["peaks"] = peaks.to_dict()
    report["load"] = load_average()
    if args.json:
        print(json.dumps(report))
        return
    print(f"{peaks.describe()} (best of before / after); load {report['load']}")
    print("seconds per part (gflop: not counted, no floor): " + ", ".join(f"{k} {v}" for k, v in seconds.items()))
    print(f"{report['videos']} videos, {report['tracks']} tracks; pairwise cosine of the library's tracks: "
          f"median {report['library_pairwise_cosine']['median']}, max {report['library_pairwise_cosine']['max']}")
    for part in report["alternatives"]:
        print("alternatives:", ", ".join(f"{k} {v}" for k, v in part.items()))
    for part in report["recovery"]:
        print("recovery:", ", ".join(f"{k} {v}" for k, v in part.items()))
    for part in report["masking"]:
        print("masking (not used):", ", ".join(f"{k} {v}" for k, v in part.items()))
    for name, part in report["top5"].items():
        print(f"top 5 {name}:", ", ".join(f"{k} {v}" for k, v in part.items()))


def _model(demo: Path) -> tuple[Any, dict]:
    from mgsv.models.checkpoint import load_checkpoint
    from mgsv.search.grounder import checkpoint_specs

    checkpoint = demo / "run" / "checkpoints" / "last"
    model, info = load_checkpoint(checkpoint)
    return model, checkpoint_specs(info.feature_specs, str(checkpoint))


if __name__ == "__main__":
    main()
