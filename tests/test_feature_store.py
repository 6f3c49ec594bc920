"""The packed feature store: round trips, padding, appends, crash safety, validation and bad stores."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mgsv.errors import InputError, OutputExistsError, ProblemsError
from mgsv.features.spec import FeatureSpec
from mgsv.features.store import DuplicateIdError, FeatureStore, StoreBusyError, UnknownIdsError

VIDEO = FeatureSpec("video", "test/video-encoder", 16, 10, params={"fps": 1})
MUSIC = FeatureSpec("music", "test/music-encoder", 24, 12, params={"stride_s": 2.5})


def item(seed: int, length: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic tokens (float32, exactly representable in float16) and an all-valid mask."""
    rng = np.random.default_rng(seed)
    tokens = rng.standard_normal((length, dim)).astype(np.float16).astype(np.float32)
    return tokens, np.ones(length, dtype=np.float32)


@pytest.fixture()
def store(tmp_path: Path) -> FeatureStore:
    return FeatureStore.create(tmp_path / "features", {"video": VIDEO, "music": MUSIC})


def test_create_writes_manifest_with_specs(store: FeatureStore) -> None:
    manifest = json.loads(store.manifest_path.read_text())
    assert manifest["format"] == "mgsv-feature-store" and manifest["format_version"] == 1
    assert manifest["modalities"]["music"] == {"spec": MUSIC.to_dict(), "shards": []}
    reopened = FeatureStore(store.root)
    assert reopened.specs == {"video": VIDEO, "music": MUSIC}
    assert len(reopened.modality("video")) == 0
    assert reopened.verify() == {"music": 0, "video": 0}


def test_round_trip_values_and_non_prefix_mask(store: FeatureStore) -> None:
    a_tokens, _ = item(1, 7, 16)
    a_mask = np.array([1, 0, 1, 1, 0, 1, 0], dtype=np.float32)  # holes, and trailing padding at position 6
    b_tokens, b_mask = item(2, 3, 16)
    store.append("video", ["a", "b"], [torch.from_numpy(a_tokens), b_tokens], [torch.from_numpy(a_mask), b_mask])

    table = store.modality("video")
    assert table.ids == ["a", "b"] and len(table) == 2 and "a" in table and "z" not in table
    tokens, mask = table.get("a")
    assert tokens.dtype == torch.float32 and mask.dtype == torch.bool
    assert tokens.shape == (6, 16)  # stored up to the last valid position
    assert mask.tolist() == [True, False, True, True, False, True]
    expected = a_tokens[:6].copy()
    expected[[1, 4]] = 0  # masked positions are stored as zeros, as the official loader zeroes them
    assert torch.equal(tokens, torch.from_numpy(expected))
    tokens, mask = table.get("b")
    assert torch.equal(tokens, torch.from_numpy(b_tokens)) and mask.all()
    assert table.lengths(["b", "a"]).tolist() == [3, 6]


def test_float16_rounding_is_the_only_change(store: FeatureStore) -> None:
    tokens = np.random.default_rng(0).standard_normal((5, 24)).astype(np.float32) * 100
    store.append("music", ["m"], [tokens], [np.ones(5, dtype=bool)])
    got, _ = store.modality("music").get("m")
    assert torch.equal(got, torch.from_numpy(tokens.astype(np.float16).astype(np.float32)))
    assert np.allclose(got.numpy(), tokens, rtol=1e-3, atol=0)


def test_batch_pads_with_zeros_and_repeats_ids(store: FeatureStore) -> None:
    items = {f"v{i}": item(i, n, 16) for i, n in enumerate([3, 10, 1, 6])}
    store.append("video", list(items), [t for t, _ in items.values()], [m for _, m in items.values()])
    table = store.modality("video")
    ids = ["v3", "v0", "v3", "v2"]
    feats, mask = table.batch(ids)
    assert feats.shape == (4, 6, 16) and mask.shape == (4, 6) and feats.dtype == torch.float32
    assert mask.sum(1).tolist() == [6, 3, 6, 1]
    for row, item_id in enumerate(ids):
        tokens = torch.from_numpy(items[item_id][0])
        n = len(tokens)
        assert torch.equal(feats[row, :n], tokens)
        assert not feats[row, n:].any() and not mask[row, n:].any()

    feats, mask = table.batch(ids, pad_to=10, dtype=torch.bfloat16)
    assert feats.shape == (4, 10, 16) and feats.dtype == torch.bfloat16
    assert torch.equal(feats[1, :3], torch.from_numpy(items["v0"][0]).bfloat16())
    half, _ = table.batch(ids, dtype=torch.float16)
    assert half.dtype == torch.float16 and torch.equal(half.float(), table.batch(ids)[0])
    with pytest.raises(InputError, match=r"id 'v3' has 6 tokens, more than pad_to=5"):
        table.batch(ids, pad_to=5)
    feats, mask = table.batch([])
    assert feats.shape == (0, 0, 16) and mask.shape == (0, 0)


def test_unknown_ids_are_listed_once(store: FeatureStore) -> None:
    tokens, mask = item(0, 2, 16)
    store.append("video", ["known"], [tokens], [mask])
    table = store.modality("video")
    missing = [f"x{i}" for i in range(8)]
    with pytest.raises(UnknownIdsError) as info:
        table.batch(["known", *missing])
    assert info.value.missing == missing
    assert str(info.value) == f"{store.root / 'video'}: 8 unknown id(s): 'x0', 'x1', 'x2', 'x3', 'x4' (and 3 more)"
    with pytest.raises(UnknownIdsError, match="1 unknown id"):
        table.get("nope")


def test_appends_across_sessions_and_shards_match_load_into_memory(store: FeatureStore) -> None:
    expected = {}
    for session in range(3):
        with store.writer("music", flush_every=4) as w:
            for k in range(5):
                item_id = f"4+s{session}k{k}"  # music ids contain '+'
                tokens, mask = item(10 * session + k, 1 + (3 * k + session) % 12, 24)
                w.add(item_id, tokens, mask)
                expected[item_id] = tokens
    manifest = json.loads(store.manifest_path.read_text())
    assert [s["items"] for s in manifest["modalities"]["music"]["shards"]] == [4, 1, 4, 1, 4, 1]
    table = store.modality("music")
    assert table.ids == list(expected)
    ids = list(expected)[::-1] + ["4+s1k2"]
    mapped = table.batch(ids)
    in_ram = store.modality("music").load_into_memory()
    assert in_ram.in_memory
    assert all(torch.equal(a, b) for a, b in zip(mapped, in_ram.batch(ids)))
    for row, item_id in enumerate(ids):
        n = len(expected[item_id])
        assert torch.equal(mapped[0][row, :n], torch.from_numpy(expected[item_id]))
    assert store.verify(deep=True)["music"] == 15

    store.compact("music")
    manifest = json.loads(store.manifest_path.read_text())
    assert [s["items"] for s in manifest["modalities"]["music"]["shards"]] == [15]
    assert sorted(p.name for p in (store.root / "music").iterdir()) == [
        "shard-000006.index.json",
        "shard-000006.mask.npy",
        "shard-000006.tokens.npy",
    ]
    assert all(torch.equal(a, b) for a, b in zip(mapped, store.modality("music").batch(ids)))


def test_exception_in_writer_publishes_nothing_partial(store: FeatureStore) -> None:
    tokens, mask = item(0, 4, 16)
    with pytest.raises(RuntimeError, match="boom"), store.writer("video", flush_every=3) as w:
        for k in range(5):
            w.add(f"v{k}", tokens, mask)
        raise RuntimeError("boom")
    table = store.modality("video")
    assert table.ids == ["v0", "v1", "v2"]  # the flushed shard stays; the two buffered items are dropped
    assert store.verify() == {"music": 0, "video": 3}
    assert not [p for p in (store.root / "video").iterdir() if p.name.startswith(".tmp-")]
    with store.writer("video") as w:  # a re-run skips what is present and adds the rest
        todo = [f"v{k}" for k in range(5) if f"v{k}" not in w]
        for item_id in todo:
            w.add(item_id, tokens, mask)
    assert todo == ["v3", "v4"] and len(store.modality("video")) == 5


def test_duplicate_ids_are_refused(store: FeatureStore) -> None:
    tokens, mask = item(0, 4, 16)
    store.append("video", ["a"], [tokens], [mask])
    with pytest.raises(DuplicateIdError, match=r"id 'a' is already stored"):
        store.append("video", ["a"], [tokens], [mask])
    with pytest.raises(DuplicateIdError, match=r"id 'b' is already stored"):
        store.append("video", ["b", "b"], [tokens, tokens], [mask, mask])
    assert store.modality("video").ids == ["a"]
    store.append("music", ["a"], [item(0, 4, 24)[0]], [mask])  # modalities have separate id spaces


@pytest.mark.parametrize(
    ("tokens", "mask", "problem"),
    [
        (np.zeros((4, 15)), np.ones(4), r"tokens have shape \[4, 15\], expected \[L, 16\] with 1 <= L <= 10"),
        (np.zeros((11, 16)), np.ones(11), r"tokens have shape \[11, 16\]"),
        (np.zeros((0, 16)), np.ones(0), r"tokens have shape \[0, 16\]"),
        (np.zeros(16), np.ones(1), r"tokens have shape \[16\]"),
        (np.zeros((4, 16), dtype=np.int64), np.ones(4), "expected floating point"),
        (np.zeros((4, 16)), np.ones(5), r"mask has shape \[5\], expected \[4\]"),
        (np.zeros((4, 16)), np.array([1, 0.5, 1, 1]), "mask values must be 0 or 1"),
        (np.zeros((4, 16)), np.zeros(4), "mask has no valid position"),
        (np.full((4, 16), np.nan), np.ones(4), "NaN or infinite"),
        (np.full((4, 16), 1e6), np.ones(4), "does not fit float16"),
    ],
)
def test_bad_items_are_refused_with_the_id(
    store: FeatureStore, tokens: np.ndarray, mask: np.ndarray, problem: str
) -> None:
    with pytest.raises(InputError, match=problem) as info:
        store.append("video", ["clip-7"], [tokens], [mask])
    assert "video id 'clip-7'" in str(info.value)
    assert len(store.modality("video")) == 0


def test_masked_non_finite_values_are_allowed(store: FeatureStore) -> None:
    # Padding rows of official features hold garbage; only valid positions must be finite.
    tokens = np.ones((3, 16))
    tokens[1] = np.nan
    store.append("video", ["a"], [tokens], [np.array([1, 0, 1])])
    got, _ = store.modality("video").get("a")
    assert not got[1].any() and got[0].eq(1).all()


@pytest.mark.parametrize("bad_id", ["", " x", 7, "a\nb"])
def test_bad_ids_are_refused(store: FeatureStore, bad_id: object) -> None:
    tokens, mask = item(0, 2, 16)
    with pytest.raises(InputError, match="ids must be non-empty strings"):
        store.append("video", [bad_id], [tokens], [mask])  # type: ignore[list-item]


def test_one_writer_per_modality(store: FeatureStore) -> None:
    with store.writer("video"):
        with pytest.raises(StoreBusyError, match="another process is writing 'video'"), store.writer("video"):
            pass
        with store.writer("music"):  # another modality is fine
            pass


def test_open_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="the folder does not exist"):
        FeatureStore(tmp_path / "nowhere")
    (tmp_path / "plain").mkdir()
    with pytest.raises(InputError, match=r"not a feature store \(no manifest.json\)"):
        FeatureStore(tmp_path / "plain")
    (tmp_path / "plain" / "manifest.json").write_text("{not json")
    with pytest.raises(InputError, match="cannot read the feature store manifest"):
        FeatureStore(tmp_path / "plain")
    (tmp_path / "plain" / "manifest.json").write_text('{"format": "something-else"}')
    with pytest.raises(InputError, match="not a feature store manifest"):
        FeatureStore(tmp_path / "plain")

    store = FeatureStore.create(tmp_path / "newer", {"video": VIDEO})
    manifest = json.loads(store.manifest_path.read_text())
    manifest["format_version"] = 2
    store.manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(InputError, match=r"written by a newer mgsv \(feature store manifest format_version 2; this mgsv reads up to 1\)"):
        FeatureStore(store.root)
    manifest["format_version"] = 1
    manifest["modalities"]["video"]["spec"]["dim"] = "wide"
    store.manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(InputError, match=r"modality 'video'.*dim must be a positive integer"):
        FeatureStore(store.root)

    with pytest.raises(OutputExistsError, match="a feature store already exists"):
        FeatureStore.create(tmp_path / "newer", {"video": VIDEO})
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file.txt").write_text("x")
    with pytest.raises(OutputExistsError, match="not an empty folder"):
        FeatureStore.create(tmp_path / "busy", {"video": VIDEO})
    video_only = FeatureStore.create(tmp_path / "video-only", {"video": VIDEO})
    with pytest.raises(InputError, match=r"no modality 'music' in this store \(it has: video\)"):
        video_only.modality("music")


def test_verify_reports_damage(store: FeatureStore) -> None:
    tokens, mask = item(0, 4, 16)
    store.append("video", ["a", "b"], [tokens, tokens], [mask, mask])
    store.append("video", ["c"], [tokens], [mask])
    folder = store.root / "video"
    with open(folder / "shard-000000.tokens.npy", "r+b") as f:
        f.truncate(200)
    (folder / "shard-000001.mask.npy").unlink()
    with pytest.raises(ProblemsError) as info:
        store.verify()
    message = str(info.value)
    assert "3 problem(s)" in message
    assert "video/shard-000000.tokens.npy: 200 bytes, manifest says" in message
    assert "video/shard-000000: unreadable" in message
    assert "video/shard-000001: missing file(s) mask.npy" in message


# Child process for the crash tests: writes items forever (or until told to crash), one shard per item.
CHILD = textwrap.dedent(
    """
    import sys, os, signal
    import numpy as np
    from mgsv.features import store as store_module
    from mgsv.features.store import FeatureStore

    root, mode = sys.argv[1], sys.argv[2]
    store = FeatureStore(root)
    if mode == "before-manifest":
        # Die the moment the shard files are renamed in but before the manifest names them.
        def die(path, data):
            os.kill(os.getpid(), signal.SIGKILL)
        store_module.write_json_atomic = die
    with store.writer("music", flush_every=2) as w:
        k = 0
        while True:
            rng = np.random.default_rng(k)
            length = 1 + k % 12
            w.add(f"m{k}", rng.standard_normal((length, 24)).astype(np.float32), np.ones(length))
            if w.pending == 0:
                print(k + 1, flush=True)
            k += 1
    """
)


def _expected(k: int) -> np.ndarray:
    length = 1 + k % 12
    return np.random.default_rng(k).standard_normal((length, 24)).astype(np.float32).astype(np.float16)


def _run_child(root: Path, mode: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(root), mode], stdout=subprocess.PIPE, text=True)


def test_sigkill_mid_write_leaves_a_consistent_store(store: FeatureStore) -> None:
    store.append("music", ["before"], [np.ones((2, 24))], [np.ones(2)])
    child = _run_child(store.root, "loop")
    assert child.stdout is not None
    published = 0
    while published < 40:  # let it publish ~20 shards, then kill it wherever it is
        line = child.stdout.readline()
        assert line, "the writer process stopped early"
        published = int(line)
    time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL

    counts = store.verify(deep=True)
    table = store.modality("music")
    assert counts["music"] == len(table) >= 41 and table.ids[0] == "before"
    n = len(table) - 1
    assert table.ids[1:] == [f"m{k}" for k in range(n)]  # whole shards only, in order
    for k in (0, n // 2, n - 1):
        tokens, _ = table.get(f"m{k}")
        assert torch.equal(tokens, torch.from_numpy(_expected(k).astype(np.float32)))
    store.cleanup()
    assert not [p for p in (store.root / "music").iterdir() if p.name.startswith(".tmp-")]
    store.append("music", ["after"], [np.ones((2, 24))], [np.ones(2)])  # the lock died with the process
    assert store.verify()["music"] == n + 2


def test_sigkill_between_shard_rename_and_manifest(store: FeatureStore) -> None:
    child = _run_child(store.root, "before-manifest")
    child.wait(timeout=120)
    assert child.returncode == -signal.SIGKILL
    folder = store.root / "music"
    assert sorted(p.name for p in folder.iterdir()) == [
        "shard-000000.index.json",
        "shard-000000.mask.npy",
        "shard-000000.tokens.npy",
    ]
    assert len(store.modality("music")) == 0 and store.verify()["music"] == 0  # the orphan is not published

    removed = store.cleanup()
    assert sorted(p.name for p in removed) == [
        "shard-000000.index.json",
        "shard-000000.mask.npy",
        "shard-000000.tokens.npy",
    ]
    store.append("music", ["m0"], [np.ones((2, 24))], [np.ones(2)])
    assert [s["name"] for s in json.loads(store.manifest_path.read_text())["modalities"]["music"]["shards"]] == [
        "shard-000000"
    ]
    assert store.modality("music").ids == ["m0"]
