"""`mgsv extract --engine ray` on a local Ray instance (2 CPUs): same features as the serial engine, re-runs skip
what is done, and lost workers or a failed job never lose or duplicate an item."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from grounding_factory import TinySetup, make_tiny_setup
from media_factory import write_test_video

from mgsv.cli import main
from mgsv.extract.pipeline import EncoderOptions, extract_features
from mgsv.extract.ray_engine import PARTS_DIR, RayJobError
from mgsv.features.store import FeatureStore

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")


@pytest.fixture(scope="module")
def ray_session() -> None:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    # The encoder loaders below live in this test module, which Ray workers cannot import: send them by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> TinySetup:
    return make_tiny_setup(tmp_path_factory.mktemp("ray-models"))


@pytest.fixture(scope="module")
def music(debian_music: dict[str, Path]) -> list[Path]:
    wesnoth = debian_music["wesnoth"]
    # hr-savino-ocean only decodes through the libsndfile fallback; silence.ogg is refused (digital silence).
    return [wesnoth / "victory.ogg", wesnoth / "defeat.ogg", wesnoth / "sad.ogg", wesnoth / "silence.ogg",
            debian_music["hyperrogue"] / "hr-savino-ocean.ogg"]  # fmt: skip


def options(setup: TinySetup) -> EncoderOptions:
    return EncoderOptions(clip=str(setup.clip_dir), ast=str(setup.ast_dir), dtype="fp32", batch_size=32)


def assert_each_item_once(store_dir: Path, expected: set[str]) -> None:
    store = FeatureStore(store_dir)
    ids = store.modality("music").ids
    assert sorted(ids) == sorted(expected)  # every file, none twice
    assert store.verify()["music"] == len(expected)
    assert not list((store_dir / PARTS_DIR / "music").glob("*"))  # every part merged and removed


def test_ray_engine_matches_the_serial_engine(
    ray_session: None, setup: TinySetup, music: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    for number, seconds in enumerate((3.0, 5.0)):
        write_test_video(videos / f"11372218834{number}.mp4", seconds=seconds, fps=5, seed=number)
    args = ["extract", "--videos", str(videos), *[a for m in music for a in ("--music", str(m))], "--clip",
            str(setup.clip_dir), "--ast", str(setup.ast_dir), "--dtype", "fp32", "--json"]  # fmt: skip
    reports = {}
    for engine in ("serial", "ray"):
        with pytest.raises(SystemExit) as exit_info:
            main([*args, "--store", str(tmp_path / engine), "--engine", engine])
        assert exit_info.value.code == 1  # silence.ogg
        reports[engine] = json.loads(capsys.readouterr().out)
    for modality in ("video", "music"):
        serial, distributed = reports["serial"]["modalities"][modality], reports["ray"]["modalities"][modality]
        assert distributed == serial
    assert [f["path"] for f in reports["ray"]["modalities"]["music"]["failures"]] == [str(music[3])]
    stores = {engine: FeatureStore(tmp_path / engine) for engine in ("serial", "ray")}
    for modality in ("video", "music"):
        serial, distributed = stores["serial"].modality(modality), stores["ray"].modality(modality)
        assert sorted(distributed.ids) == sorted(serial.ids)
        for item in serial.ids:
            np.testing.assert_array_equal(distributed.get(item)[0].numpy(), serial.get(item)[0].numpy())
            np.testing.assert_array_equal(distributed.get(item)[1].numpy(), serial.get(item)[1].numpy())



@dataclass(frozen=True)
class KillOnce:
    """An AST loader whose encoder kills its own worker process the first time it meets `victim`."""

    options: EncoderOptions
    marker: str
    victim: str

    def __call__(self) -> object:
        return _Killing(self.options.load_ast(), self.marker, self.victim)


class _Killing:
    def __init__(self, encoder: object, marker: str, victim: str) -> None:
        self.encoder, self.marker, self.victim = encoder, Path(marker), victim
        self.spec = encoder.spec

    def encode(self, samples: np.ndarray, sample_rate: int, source: str) -> object:
        if Path(source).stem == self.victim and not self.marker.exists():
            self.marker.touch()
            os._exit(1)  # a lost worker: no exception, no clean-up
        return self.encoder.encode(samples, sample_rate=sample_rate, source=source)


def test_a_killed_worker_loses_and_duplicates_nothing(
    ray_session: None, setup: TinySetup, music: list[Path], tmp_path: Path
) -> None:
    marker = tmp_path / "killed"
    loader = KillOnce(options(setup), str(marker), victim="defeat")
    report = extract_features(tmp_path / "store", music=music[:3], encoders=options(setup), engine="ray",
                              encoder_loaders={"music": loader}, flush_every=2)  # fmt: skip
    assert marker.exists()  # the worker did die
    assert report.ok and report.modalities["music"].encoded == 3
    assert_each_item_once(tmp_path / "store", {"victory", "defeat", "sad"})


@dataclass(frozen=True)
class FailOn:
    """An AST loader whose encoder raises a (non-input) error on `victim`: the job fails."""

    options: EncoderOptions
    victim: str

    def __call__(self) -> object:
        return _Failing(self.options.load_ast(), self.victim)


class _Failing:
    def __init__(self, encoder: object, victim: str) -> None:
        self.encoder, self.victim = encoder, victim
        self.spec = encoder.spec

    def encode(self, samples: np.ndarray, sample_rate: int, source: str) -> object:
        if Path(source).stem == self.victim:
            raise RuntimeError("simulated device failure")
        return self.encoder.encode(samples, sample_rate=sample_rate, source=source)


def test_a_failed_job_keeps_its_work_and_a_rerun_finishes(
    ray_session: None, setup: TinySetup, music: list[Path], tmp_path: Path
) -> None:
    good = [music[0], music[2], music[4]]
    with pytest.raises(RayJobError, match="run the same command again"):
        extract_features(tmp_path / "store", music=good, encoders=options(setup), engine="ray",
                         encoder_loaders={"music": FailOn(options(setup), "hr-savino-ocean")}, flush_every=1)  # fmt: skip
    stored = set(FeatureStore(tmp_path / "store").modality("music").ids)
    assert "hr-savino-ocean" not in stored
    report = extract_features(tmp_path / "store", music=good, encoders=options(setup), engine="ray", flush_every=1)
    assert report.ok and report.modalities["music"].encoded == 3 - len(stored)  # nothing encoded twice
    assert report.modalities["music"].already_stored == len(stored)  # a re-run skips what is stored
    assert_each_item_once(tmp_path / "store", {"victory", "sad", "hr-savino-ocean"})
