"""Library search at scale: the on-disk track index, candidate stages, filters, memory refusal, crash leftovers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from grounding_factory import TinySetup, make_tiny_setup

from mgsv.cli import main
from mgsv.errors import InputError
from mgsv.models.checkpoint import load_checkpoint
from mgsv.search import GroundOptions, SearchOptions, TrackFilter, index_files, track_index
from mgsv.search.candidates import open_candidates
from mgsv.search.grounder import Grounder
from mgsv.search.library import MusicLibrary
from mgsv.search.ranker import exact_scores
from mgsv.search.track_index import IndexMemoryError, TrackIndex

LICENCES = ("CC0", "CC BY 3.0", "GPL-2+")
GENRES = ("ambient", "rock", "jazz")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> TinySetup:
    return make_tiny_setup(tmp_path_factory.mktemp("scale-models"))


def tagged_library(folder: Path, setup: TinySetup, count: int, seed: int = 0) -> MusicLibrary:
    """`count` tracks of random tokens (12-96 windows) with rotating licences and genres."""
    library = MusicLibrary.create(folder, setup.music_spec)
    rng = np.random.default_rng(seed)
    spec = setup.music_spec
    with library.writer(commit_every=count) as writer:
        for number in range(count):
            duration = float(rng.uniform(30.0, 239.0))
            windows = int(duration // 2.5) + 1
            writer.add_tokens(
                rng.standard_normal((spec.max_tokens, spec.dim)).astype(np.float32),
                np.arange(spec.max_tokens) < windows,
                path=folder.parent / f"track-{number}.ogg",
                content_hash=f"{seed:04d}{number:060d}",
                duration=duration,
                tags={"license": LICENCES[number % 3], "genre": GENRES[number % 3 if number % 2 else (number + 1) % 3]},
            )
    return library


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory, setup: TinySetup) -> MusicLibrary:
    return tagged_library(tmp_path_factory.mktemp("scale-lib") / "lib", setup, 60)


@pytest.fixture(scope="module")
def model(setup: TinySetup) -> torch.nn.Module:
    return load_checkpoint(setup.checkpoint)[0].eval()


def video_features(seed: int, frames: int = 12) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((frames, 16)).astype(np.float32)


def test_index_rows_read_back_what_was_encoded(library: MusicLibrary, model: torch.nn.Module) -> None:
    encoded = library.encoded(model)
    index = encoded.index
    tracks = library.tracks()
    rows = index.rows_of(np.array([t.content_hash for t in tracks], dtype="S64"))
    assert (rows >= 0).all() and len(set(rows.tolist())) == len(tracks)
    with torch.inference_mode():
        feats, mask = library.features().batch([t.content_hash for t in tracks])
        music = model.encode_music(feats, mask)
    stored = model.index_encodings(index.entries(rows))
    width = music.mask.shape[1]  # the longest track's windows; the index pads to its bucket length
    assert torch.equal(stored.mask[:, :width], music.mask) and not stored.mask[:, width:].any()
    # s~ comes back from float16 standardised tokens: equal up to float16 rounding of ~1e-3 relative.
    torch.testing.assert_close(stored.tokens[:, :width], music.tokens, rtol=0, atol=5e-3)
    torch.testing.assert_close(stored.embedding, music.embedding, rtol=0, atol=1e-6)  # float32 as encoded
    # Blocks of any size, rows in any order: the tokens stored on disk, each run of neighbouring rows read at once.
    def on_disk(row: int) -> np.ndarray:
        segment, length, slot = index.segment_of[row], index.lengths[row], index.slots[row]
        return np.load(index.segments[segment].folder / f"tokens-{length:03d}.npy")[slot]

    shuffled = np.random.default_rng(0).permutation(rows)
    reads: list[int] = []
    original = index_files.RowFile.read

    def counting(self, slots, out):
        reads.append(len(self.runs(slots)))
        return original(self, slots, out)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(index_files.RowFile, "read", counting)
        for chunk in (5, 128):
            reads.clear()
            seen = np.zeros(len(shuffled), dtype=bool)
            for positions, tokens, block_mask in index.blocks(shuffled, chunk=chunk):
                assert tokens.dtype == torch.float16 and tokens.shape[1] == index.lengths[shuffled[positions[0]]]
                for position, block, valid in zip(positions, tokens.numpy(), block_mask, strict=True):
                    np.testing.assert_array_equal(block, on_disk(shuffled[position]))
                    assert int(valid.sum()) == int(music.mask[rows.tolist().index(shuffled[position])].sum())
                seen[positions] = True
            assert seen.all()
    assert sum(reads) == len(set(index.lengths.tolist()))  # every track of a bucket in one read


def test_two_stage_search_is_exact_on_its_candidates(library: MusicLibrary, model: torch.nn.Module) -> None:
    encoded = library.encoded(model)
    with torch.inference_mode():
        video = model.encode_video(torch.from_numpy(video_features(1))[None], torch.ones(1, 12, dtype=torch.bool))
    query = video.embedding[0].numpy()
    everything = np.arange(len(encoded.index))
    scores = exact_scores(model, video, encoded.index, everything)
    s0 = encoded.index.embedding_rows(everything) @ query
    for k in (5, 20, 60, 1000):
        rows = encoded.candidates.search(query, k, None)
        assert len(rows) == min(k, 60) and (np.diff(rows) > 0).all()
        # The candidates are the top k by S0 and their scores are the exhaustive ones.
        assert set(rows.tolist()) == set(np.argsort(-s0, kind="stable")[:k].tolist())
        np.testing.assert_allclose(exact_scores(model, video, encoded.index, rows), scores[rows], rtol=1e-6, atol=1e-6)
    # With a filter every candidate is eligible; fewer eligible rows than k: all of them, no scan.
    eligible = encoded.catalog.eligible(TrackFilter(min_duration=150.0))
    rows = encoded.candidates.search(query, 5, eligible)
    assert len(rows) == 5 and eligible[rows].all()
    assert set(encoded.candidates.search(query, 1000, eligible).tolist()) == set(np.flatnonzero(eligible).tolist())


@pytest.mark.parametrize("kind", ["faiss", "lance"])
def test_other_candidate_stages_agree_with_the_exact_scan(
    library: MusicLibrary, model: torch.nn.Module, kind: str
) -> None:
    pytest.importorskip({"faiss": "faiss", "lance": "lancedb"}[kind])
    encoded = library.encoded(model)
    # One inverted list for FAISS: its scan is then exhaustive, so results must match exactly.
    stage = open_candidates(encoded.index, kind, "IVF1,Flat" if kind == "faiss" else None)
    exact = open_candidates(encoded.index, "exact")
    for seed in range(3):
        with torch.inference_mode():
            query = model.encode_video(torch.from_numpy(video_features(seed))[None],
                                       torch.ones(1, 12, dtype=torch.bool)).embedding[0].numpy()  # fmt: skip
        assert stage.search(query, 7, None).tolist() == exact.search(query, 7, None).tolist()
        eligible = encoded.catalog.eligible(TrackFilter(licences=("cc0",)))
        found = stage.search(query, 7, eligible)
        assert found.tolist() == exact.search(query, 7, eligible).tolist() and eligible[found].all()


def test_filters(library: MusicLibrary, model: torch.nn.Module, setup: TinySetup) -> None:
    grounder = Grounder.from_checkpoint(setup.checkpoint, library, clip=None, search=SearchOptions(candidates=8))
    tracks = {t.id: t for t in library.tracks()}
    feats = video_features(2)
    conditions = [
        TrackFilter(min_duration=200.0),
        TrackFilter(licences=("cc by 3.0", "GPL-2+")),
        TrackFilter.parse(tags=["genre=Ambient"]),
        TrackFilter.parse(120.0, ["CC0"], ["genre=rock"]),
    ]
    for condition in conditions:
        moments = grounder.ground_features(feats, 12.0, GroundOptions(top=5, filters=condition)).moments
        assert moments, condition
        for moment in moments:
            track = tracks[moment.track_id]
            assert track.duration >= (condition.min_duration or 0)
            assert not condition.licences or track.licence.lower() in {x.lower() for x in condition.licences}
            assert all(track.tags[key].lower() == value.lower() for key, value in condition.tags)
    # The best eligible tracks, whatever K: a filtered search equals the exhaustive search restricted by hand.
    exhaustive = Grounder.from_checkpoint(setup.checkpoint, library, clip=None,
                                          search=SearchOptions(candidates=10_000))
    everything = exhaustive.ground_features(feats, 12.0, GroundOptions(top=60)).moments
    wanted = [m.track_id for m in everything if tracks[m.track_id].licence == "CC0"][:3]
    filtered = exhaustive.ground_features(
        feats, 12.0, GroundOptions(top=3, filters=TrackFilter(licences=("CC0",)))
    ).moments
    assert [m.track_id for m in filtered] == wanted
    with pytest.raises(InputError, match="no track of the library matches the filters .*tag genre='polka'"):
        grounder.ground_features(feats, 12.0, GroundOptions(filters=TrackFilter.parse(tags=["genre=polka"])))
    with pytest.raises(InputError, match="expected KEY=VALUE"):
        TrackFilter.parse(tags=["genre"])


def test_ground_command_search_options(
    library: MusicLibrary, setup: TinySetup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from media_factory import write_test_video

    video = write_test_video(tmp_path / "q.mp4", seconds=6, fps=2, audio=False)
    base = ["ground", str(video), "--library", str(library.root), "--checkpoint", str(setup.checkpoint),
            "--clip", str(setup.clip_dir), "--dtype", "fp32", "--json", "--top", "4"]  # fmt: skip
    results = {}
    for name, extra in {
        "default": [],
        "ram": ["--index-memory", "ram"],
        "small-k": ["--candidates", "10"],
        "filtered": ["--licence", "CC0", "--tag", "genre=rock", "--min-duration", "60"],
    }.items():
        with pytest.raises(SystemExit) as exit_info:
            main(base + extra)
        out = capsys.readouterr().out
        assert exit_info.value.code in (0, None), out
        results[name] = json.loads(out)["results"][0]["moments"]
    assert results["ram"] == results["default"]
    assert len(results["small-k"]) == 4
    tracks = {t.id: t for t in library.tracks()}
    for moment in results["filtered"]:
        track = tracks[moment["track_id"]]
        assert track.licence == "CC0" and track.tags["genre"] == "rock" and track.duration >= 60


def test_a_configuration_that_does_not_fit_is_refused(
    library: MusicLibrary, model: torch.nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = library.encoded(model).index
    monkeypatch.setattr(track_index, "available_memory", lambda: 9_000)
    with pytest.raises(IndexMemoryError) as refused:
        TrackIndex(index.root, memory="ram")
    message = str(refused.value)
    assert "this track index of 60 tracks needs" in message and "tokens and moments" in message
    assert "but only 9.0 kB is available" in message and "`index_memory` disk" in message
    monkeypatch.setattr(track_index, "available_memory", lambda: 4_000)  # h0 in float16: 60 x 32 x 2 bytes
    with pytest.raises(IndexMemoryError, match="exact candidate stage over 60 tracks needs 3.8 kB .* `index` faiss"):
        open_candidates(index, "exact")
    monkeypatch.setattr(track_index, "available_memory", lambda: None)  # unknown: nothing is refused
    TrackIndex(index.root, memory="ram").close()


def test_an_interrupted_update_leaves_the_index_usable(
    tmp_path: Path, setup: TinySetup, model: torch.nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    library = tagged_library(tmp_path / "lib", setup, 12, seed=4)
    first = library.encoded(model)
    root, generation = first.index.root, first.index.generation
    more = tagged_library(tmp_path / "more", setup, 3, seed=5)
    with library.writer() as writer:
        for track in more.tracks():
            tokens, mask = more.features().get(track.content_hash)
            writer.add_tokens(tokens.numpy(), mask.numpy(), path=track.path, content_hash=track.content_hash,
                              duration=track.duration)  # fmt: skip

    def crash(self, positions, arrays):
        raise KeyboardInterrupt  # as if the process were interrupted while encoding

    monkeypatch.setattr(track_index.SegmentWriter, "put", crash)
    with pytest.raises(KeyboardInterrupt):
        MusicLibrary(library.root).encoded(model)
    assert TrackIndex(root).generation == generation and not list(root.glob(".tmp-*"))
    # A killed process leaves an unfinished folder and maybe a segment no manifest names: the next update
    # removes both and the index then holds every track.
    (root / ".tmp-seg-killed").mkdir()
    (root / "seg-000099").mkdir()
    monkeypatch.undo()
    updated = MusicLibrary(library.root).encoded(model)
    assert updated.catalog.count == 15 and updated.index.generation == generation + 1
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["seg-000000", "seg-000001"]
