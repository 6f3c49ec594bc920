"""More from a track (`alternatives`, `Grounder.more_moments`) and the diverse list (`diverse`), in the grounding
service and `mgsv ground`: the alternatives never touch the moments they avoid, come from detection on the track's
free parts, stop when a track has no room; MMR keeps planted duplicate tracks from filling the list."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from grounding_factory import SharedLibrary, TinySetup, make_tiny_setup, shared_real_library
from media_factory import write_test_video

from mgsv.cli import main
from mgsv.errors import InputError, OptionError
from mgsv.features.store import UnknownIdsError
from mgsv.inference.spans import cw_to_seconds
from mgsv.search import GroundOptions
from mgsv.search.alternatives import free_parts, iou, part_windows, place_in_part
from mgsv.search.diversity import DEFAULT_COSINE, diverse_order, group_keys, redundancy
from mgsv.search.grounder import GroundedMoment, Grounder
from mgsv.search.library import MusicLibrary

VIDEO_S = 10.0


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, debian_music: dict[str, Path]) -> SharedLibrary:
    return shared_real_library(tmp_path_factory, debian_music)


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_test_video(tmp_path_factory.mktemp("variety") / "query.mp4", seconds=VIDEO_S, fps=5, tone_hz=330)


@pytest.fixture(scope="module")
def grounder(shared: SharedLibrary) -> Grounder:
    return Grounder.from_checkpoint(shared.setup.checkpoint, MusicLibrary(shared.library), clip=shared.setup.clip_dir,
                                    dtype="fp32")  # fmt: skip


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


# ------------------------------------------------------------------------------------------ the parts of a track


def test_free_parts_windows_and_placement() -> None:
    assert free_parts(60.0, [(20.0, 30.0)], 10.0) == [(0.0, 20.0), (30.0, 60.0)]
    assert free_parts(60.0, [(20.0, 30.0), (25.0, 52.0)], 10.0) == [(0.0, 20.0)]  # overlapping moments merge
    assert free_parts(60.0, [(5.0, 15.0), (50.0, 60.0)], 10.0) == [(15.0, 50.0)]  # parts shorter than 10 s go
    assert free_parts(12.0, [(1.0, 11.0)], 10.0) == []  # a track too short for another moment
    # Window i is centred at 2.5 i s: the part 30-60 s holds windows 12-24 (valid ones only).
    assert part_windows((30.0, 60.0), 2.5, 96) == (12, 25)
    assert part_windows((30.1, 60.0), 2.5, 20) == (13, 20)
    assert part_windows((31.0, 32.0), 2.5, 96) == (13, 13)  # no window centre inside
    # Exactly the video's length, around the prediction, inside the part; or clipped to it.
    assert place_in_part((30.0, 60.0), 20.0, 40.0, 10.0) == (30.0, 40.0)
    assert place_in_part((30.0, 60.0), 50.0, 70.0, 10.0) == (50.0, 60.0)
    assert place_in_part((30.0, 60.0), 25.0, 45.0, None) == (30.0, 45.0)
    assert iou((0, 10), (5, 15)) == pytest.approx(1 / 3) and iou((0, 1), (2, 3)) == 0


# ------------------------------------------------------------------------------------------ alternatives


def check_alternatives(moment: GroundedMoment, video_s: float, fit: bool, wanted: int = 3) -> None:
    """Every alternative lies in the track, overlaps no earlier moment of it, and a track stops early only when no
    part as long as the video is left."""
    shown = [moment.span]
    for number, other in enumerate(moment.alternatives, start=1):
        assert other.alternative == number and other.track_id == moment.track_id and other.rank == moment.rank
        assert other.score == pytest.approx(moment.score, abs=1e-6) and other.alternatives == ()
        assert 0 <= other.start_s < other.end_s <= min(other.track_duration, 240.0) + 1e-6
        if fit:
            assert other.duration == pytest.approx(video_s, abs=1e-6)
        assert all(iou(other.span, earlier) == 0 for earlier in shown), (other.span, shown)
        shown.append(other.span)
    if len(moment.alternatives) < wanted:
        used = min(moment.track_duration, 240.0)
        parts = free_parts(used, shown, video_s)
        windows = math.floor(used / 2.5) + 1
        assert all(part_windows(part, 2.5, windows)[0] == part_windows(part, 2.5, windows)[1] for part in parts)


@pytest.mark.parametrize("fit", [True, False])
def test_alternatives_avoid_every_earlier_moment(grounder: Grounder, video: Path, fit: bool) -> None:
    result = grounder.ground(video, GroundOptions(top=8, fit_duration=fit, alternatives=3))
    plain = grounder.ground(video, GroundOptions(top=8, fit_duration=fit))
    assert [m.span for m in result.moments] == [m.span for m in plain.moments]  # the first moments are unchanged
    counts = [len(m.alternatives) for m in result.moments]
    assert max(counts) >= 1
    if fit:  # moments of 10 s in tracks of 5-78 s; unfitted ones (a random model's widths) may fill a track
        assert max(counts) == 3 and sum(counts) > 8
    for moment in result.moments:
        check_alternatives(moment, result.duration, fit)
    first = next(i for i, count in enumerate(counts) if count)  # the first track with another moment
    data = result.to_dict()["moments"][first]
    assert [a["alternative"] for a in data["alternatives"]] == list(range(1, counts[first] + 1))
    assert data["alternatives"][0]["alternatives"] == [] and data["alternative"] == 0


def test_an_alternative_is_detection_on_the_free_part_of_highest_relevance(grounder: Grounder, video: Path) -> None:
    """Recomputed by hand: encode each free part's windows as a track of their own, pick the part of highest p_s,
    detect there, shift by the part's first window, place in the part."""
    encoded = grounder.encode(video)
    track = max(grounder.library.tracks(), key=lambda t: t.duration)
    avoid = [(30.0, 45.0)]
    (found,) = grounder.more_moments(encoded, track.id, avoid, GroundOptions(), count=1)
    feats, mask = grounder.library.features().batch([track.content_hash])
    windows = int(mask[0].sum())
    parts = free_parts(track.used_seconds, avoid, encoded.duration)
    spans = [part_windows(part, 2.5, windows) for part in parts]
    model = grounder.model
    with torch.inference_mode():
        relevance = []
        for first, stop in spans:
            music = model.encode_music(feats[:, first:stop], mask[:, first:stop])
            relevance.append(float(model.relevance(encoded.encoding, music)[0, 0]))
        best = int(np.argmax(relevance))
        first, stop = spans[best]
        music = model.encode_music(feats[:, first:stop], mask[:, first:stop])
        start, end = cw_to_seconds(model.detect(encoded.encoding, music).final_spans.numpy())[0]
    expected = place_in_part(parts[best], float(start) + 2.5 * first, float(end) + 2.5 * first, None)
    assert found.span == pytest.approx(expected, abs=1e-4)
    assert found.rank == 0 and found.alternative == 1


def test_more_moments_of_one_track(grounder: Grounder, video: Path) -> None:
    encoded = grounder.encode(video)
    result = grounder.ground_encoded(encoded, GroundOptions(top=3, fit_duration=True))
    moment = result.moments[0]
    more = grounder.more_moments(encoded, moment.track_id, [moment.span], GroundOptions(fit_duration=True))
    check_alternatives(replace(moment, rank=0, alternatives=tuple(more)), result.duration, True)
    # As `alternatives` in grounding gives them.
    again = grounder.ground_encoded(encoded, GroundOptions(top=3, fit_duration=True, alternatives=3)).moments[0]
    assert np.allclose([m.span for m in again.alternatives], [m.span for m in more], atol=1e-4)
    # Several moments to avoid, anywhere in the track: none is touched.
    longest = max(grounder.library.tracks(), key=lambda t: t.duration)
    avoid = [(0.0, 12.0), (20.0, 31.0), (50.0, 55.5)]
    found = grounder.more_moments(encoded, longest.id, avoid, GroundOptions(), count=3)
    assert found and all(iou(m.span, span) == 0 for m in found for span in avoid)


def test_a_track_too_short_for_another_moment(tmp_path: Path) -> None:
    setup = make_tiny_setup(tmp_path / "models")
    library = planted_library(tmp_path / "lib", setup, [(0, "short", 14.0), (1, "long", 200.0), (2, "tiny", 8.0)])
    grounder = Grounder.from_checkpoint(setup.checkpoint, library, clip=None)
    feats = np.random.default_rng(3).standard_normal((10, 16)).astype(np.float32)
    encoded = grounder.encode_features(feats, VIDEO_S)
    result = grounder.ground_encoded(encoded, GroundOptions(top=2, fit_duration=True, alternatives=3))
    by_id = {m.track_id: m for m in result.moments}
    assert by_id["short"].alternatives == ()  # 14 s: no 10 s part is left beside a 10 s moment
    assert len(by_id["long"].alternatives) == 3
    # Not fitting to the video: the short track's moment may be short, but no free part is as long as the video.
    loose = grounder.ground_encoded(encoded, GroundOptions(top=3, alternatives=3)).moments
    for moment in loose:
        check_alternatives(moment, VIDEO_S, False)
    assert next(m for m in loose if m.track_id == "tiny").alternatives == ()
    with pytest.raises(InputError, match="shorter than the video") as error:
        grounder.more_moments(encoded, "tiny", [(0.0, 5.0)], GroundOptions(fit_duration=True))
    assert error.value.where == "tiny"
    assert grounder.more_moments(encoded, "short", [(0.0, 14.0)], GroundOptions()) == []


def test_more_moments_refuses_bad_requests(grounder: Grounder, video: Path) -> None:
    encoded = grounder.encode(video)
    track = grounder.library.tracks()[0].id
    with pytest.raises(UnknownIdsError):
        grounder.more_moments(encoded, "no-such-track", [(0.0, 5.0)])
    for avoid in ([(5.0, 5.0)], [(-1.0, 2.0)], [(1.0, float("nan"))], [(1.0,)], ["ab"]):
        with pytest.raises(OptionError) as error:
            grounder.more_moments(encoded, track, avoid)
        assert error.value.field == "avoid"
    for count in (0, 4, True, 2.0):
        with pytest.raises(OptionError) as error:
            grounder.more_moments(encoded, track, [(0.0, 5.0)], count=count)
        assert error.value.field == "alternatives"


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"alternatives": 4}, "alternatives"),
        ({"alternatives": -1}, "alternatives"),
        ({"alternatives": True}, "alternatives"),
        ({"alternatives": 1.5}, "alternatives"),
        ({"diverse": "yes"}, "diverse"),
        ({"diverse_cosine": 1.0}, "diverse_cosine"),
        ({"diverse_cosine": -0.1}, "diverse_cosine"),
        ({"diverse_cosine": float("nan")}, "diverse_cosine"),
        ({"diverse_cosine": True}, "diverse_cosine"),
    ],
)
def test_option_errors_name_their_key(options: dict, key: str) -> None:
    with pytest.raises(OptionError) as error:
        GroundOptions(**options)
    assert error.value.field == key and str(error.value).startswith(f"`{key}`:")


def test_cli_alternatives_and_diverse(
    shared: SharedLibrary, video: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    setup = shared.setup
    base = ["ground", str(video), "--library", str(shared.library), "--checkpoint", str(setup.checkpoint), "--clip",
            str(setup.clip_dir), "--dtype", "fp32", "--top", "3"]  # fmt: skip
    code, out, _ = run_cli([*base, "--alternatives", "2", "--fit-duration", "--json"], capsys)
    assert code == 0
    moments = json.loads(out)["results"][0]["moments"]
    assert all(len(m["alternatives"]) <= 2 for m in moments) and any(m["alternatives"] for m in moments)
    for moment in moments:
        for other in moment["alternatives"]:
            assert iou((other["start_s"], other["end_s"]), (moment["start_s"], moment["end_s"])) == 0
            assert other["end_s"] - other["start_s"] == pytest.approx(VIDEO_S, abs=2e-3)
    code, out, _ = run_cli([*base, "--alternatives", "1"], capsys)
    assert code == 0 and "other moment 1" in out
    code, out, _ = run_cli([*base, "--diverse", "--diverse-cosine", "0.5", "--json"], capsys)
    assert code == 0 and len(json.loads(out)["results"][0]["moments"]) == 3
    code, _, err = run_cli([*base, "--diverse", "--diverse-cosine", "1.5"], capsys)
    assert code == 2 and "--diverse-cosine" in err and "1.5: must be between 0 and 1" in err  # refused as typed
    code, _, err = run_cli([*base, "--diverse", "--diverse-cosine", "1"], capsys)
    assert code == 1 and "--diverse-cosine: must be a cosine from 0 to below 1" in err  # the service's own check
    code, _, err = run_cli([*base, "--alternatives", "4"], capsys)
    assert code == 2 and "--alternatives" in err
    # The command line's default is the service's.
    import typer.main

    group = typer.main.get_command(__import__("mgsv.cli", fromlist=["app"]).app)
    (param,) = [p for p in group.commands["ground"].params if p.name == "diverse_cosine"]
    assert param.default == DEFAULT_COSINE


# ------------------------------------------------------------------------------------------ the diverse list


def planted_library(folder: Path, setup: TinySetup, tracks: list[tuple[int, str, float]],
                    tags: dict[str, dict[str, str]] | None = None) -> MusicLibrary:
    """A library of random-token tracks: (token seed, id, duration); tracks with the same seed have the same tokens
    (a planted duplicate: the same music under another file)."""
    spec = setup.music_spec
    library = MusicLibrary.create(folder, spec)
    with library.writer(commit_every=len(tracks)) as writer:
        for number, (seed, name, duration) in enumerate(tracks):
            windows = min(spec.max_tokens, int(duration // 2.5) + 1)
            tokens = np.random.default_rng(seed).standard_normal((spec.max_tokens, spec.dim)).astype(np.float32)
            writer.add_tokens(tokens, np.arange(spec.max_tokens) < windows, path=folder.parent / f"{name}.ogg",
                              content_hash=f"{number:064d}", duration=duration,
                              tags={"title": name, **(tags or {}).get(name, {})})  # fmt: skip
    return library


def test_diverse_order_is_mmr() -> None:
    embeddings = np.array([[1, 0, 0], [1, 0.01, 0], [0, 1, 0], [0, 0, 1], [0.6, 0.8, 0]], dtype=np.float64)
    keys = [frozenset(), frozenset(), frozenset({"artist:a"}), frozenset({"artist:a"}), frozenset()]
    scores = np.array([1.0, 0.99, 0.9, 0.8, 0.1])
    # 1 duplicates 0 (cosine ~1), 3 shares 2's artist: both come after every track that duplicates nothing.
    assert diverse_order(scores, embeddings, keys, 5).tolist() == [0, 2, 4, 1, 3]
    assert diverse_order(scores, embeddings, keys, 2).tolist() == [0, 2]
    pairwise = redundancy(embeddings, keys, 0.5)
    assert pairwise[0, 4] == pytest.approx((0.6 - 0.5) / 0.5) and pairwise[2, 3] == 1 and pairwise[0, 2] == 0
    assert diverse_order(scores, embeddings, [frozenset()] * 5, 3, cosine=0.5).tolist() == [0, 2, 3]
    assert group_keys(type("T", (), {"artist": " Doug ", "album": ""})()) == frozenset({"artist:doug"})


def test_diverse_keeps_planted_duplicates_from_filling_the_list(tmp_path: Path) -> None:
    setup = make_tiny_setup(tmp_path / "models")
    feats = np.random.default_rng(7).standard_normal((12, 16)).astype(np.float32)
    distinct = [(seed, f"track-{seed}", 60.0) for seed in range(10)]
    probe = Grounder.from_checkpoint(setup.checkpoint, planted_library(tmp_path / "probe", setup, distinct), clip=None)
    order = [m.track_id for m in probe.ground_features(feats, VIDEO_S, GroundOptions(top=10)).moments]
    best, second = (int(name.split("-")[1]) for name in order[:2])

    # Three copies of the best track (same tokens, other files) and one track sharing the second's artist.
    copies = [(best, f"copy-{n}", 60.0) for n in range(3)]
    tags = {f"track-{second}": {"artist": "Ann"}, "same-artist": {"artist": "ann"}}
    planted = planted_library(tmp_path / "planted", setup, [*distinct, *copies, (second, "same-artist", 60.0)], tags)
    grounder = Grounder.from_checkpoint(setup.checkpoint, planted, clip=None)
    plain = grounder.ground_features(feats, VIDEO_S, GroundOptions(top=5))
    plain_ids = [m.track_id for m in plain.moments]
    assert set(plain_ids[:4]) == {f"track-{best}", "copy-0", "copy-1", "copy-2"}  # duplicates fill the list

    # The tiny random model's embeddings of distinct random tracks are 0.89-0.98 apart (a trained model's spread
    # far more: 0.35 in the median on the demo's): only the planted copies (a cosine of 1) count as the same here.
    cosine = 0.995
    result = grounder.ground_features(feats, VIDEO_S, GroundOptions(top=5, diverse=True, diverse_cosine=cosine))
    ids = [m.track_id for m in result.moments]
    assert ids[0] == f"track-{best}" and not {"copy-0", "copy-1", "copy-2", "same-artist"} & set(ids)
    assert ids == [i for i in order if i in ids][:5]  # the distinct tracks, in their own order
    assert [m.rank for m in result.moments] == [1, 2, 3, 4, 5]
    assert any("`diverse`" in note and "copy-0" in note for note in result.notes)
    embeddings = grounder.prepare().index.embedding_rows(
        grounder.prepare().index.rows_of(np.array([planted.track(i).content_hash for i in ids], dtype="S64")))
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    assert (unit @ unit.T)[np.triu_indices(5, 1)].max() < cosine
    # At the default cosine these embeddings are all alike: the list is still 5 tracks, the best first.
    loose = grounder.ground_features(feats, VIDEO_S, GroundOptions(top=5, diverse=True)).moments
    assert len(loose) == 5 and loose[0].track_id == f"track-{best}"
    # A list with nothing but duplicates still lists them, best first.
    only = planted_library(tmp_path / "only", setup, [(best, f"dup-{n}", 60.0) for n in range(4)])
    dups = Grounder.from_checkpoint(setup.checkpoint, only, clip=None)
    assert len(dups.ground_features(feats, VIDEO_S, GroundOptions(top=3, diverse=True)).moments) == 3
