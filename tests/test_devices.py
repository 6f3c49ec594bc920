"""`--device`: one meaning of auto / cpu / cuda / cuda:N on every command, a clear refusal of a GPU the machine lacks,
and device-agnostic hot paths, checked on a CPU-only machine.

A CPU run cannot show a tensor left on the wrong device (everything is on the CPU), so `DeviceAudit` watches the
paths a GPU run takes (a training epoch with its validation, an evaluation, grounding in a library with alternatives
and diversity, CLIP and AST encoding) and records every place in mgsv's own code that would break on a GPU or copy
through the host silently there: a tensor factory (`torch.zeros`, `arange`, `tensor`, ...) called without `device=`
(it lands on the CPU whatever the model's device) and a `.numpy()` whose line does not copy to the host first
(`.numpy()` of a CUDA tensor raises). Code that means the host says so with `device="cpu"`.
"""

from __future__ import annotations

import linecache
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from grounding_factory import make_synthetic_library, make_tiny_setup
from torch.overrides import TorchFunctionMode

import mgsv
from mgsv.cli import main
from mgsv.data.device_batches import device_batches, prefetched
from mgsv.data.synthetic import SyntheticConfig, write_synthetic_dataset
from mgsv.devices import DeviceUnavailableError, device_name, resolve_device
from mgsv.errors import OptionError
from mgsv.evaluation.protocol import EvalOptions
from mgsv.evaluation.runner import resolve_target, run_evaluation
from mgsv.search import GroundOptions
from mgsv.search.grounder import Grounder
from mgsv.training.trainer import Trainer, TrainSettings

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on machines without CUDA")
SRC = str(Path(mgsv.__file__).resolve().parent)
FACTORIES = {"zeros", "ones", "empty", "full", "arange", "linspace", "eye", "rand", "randn", "randint", "randperm",
             "tensor", "as_tensor", "empty_strided"}

TINY_MODEL = {"dim": 32, "detr_ffn_dim": 64, "enhance_ffn_dim": 64, "decoder_layers": 2}
TINY_RECIPE = {"epochs": 1, "batch_size": 16, "min_epochs": 1, "patience": 5, "eval_batch_size": 8}


# --- parsing --------------------------------------------------------------------------------------------------


def test_auto_is_cuda_when_torch_sees_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device_name("auto") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert device_name("auto") == "cuda"
    assert device_name("cuda:1") == "cuda:1"
    with pytest.raises(DeviceUnavailableError, match=r"`device` cuda:2: cuda:2 is not available on this machine "
                                                     r"\(this machine has 2 CUDA device\(s\): cuda:0 to cuda:1\)"):
        resolve_device("cuda:2")


@NO_CUDA
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_cuda_names_the_option_and_the_reason(device: str) -> None:
    with pytest.raises(DeviceUnavailableError) as info:
        resolve_device(device)
    message = str(info.value)
    assert message.startswith(f"`device` {device}: CUDA is not available on this machine (torch {torch.__version__}")
    reason = "is built without CUDA" if not torch.backends.cuda.is_built() else "finds no usable GPU"
    assert message.endswith(f"{reason})")


@pytest.mark.parametrize(("device", "problem"), [("tpu9", "not a torch device: 'tpu9'"),
                                                 ("meta", "unsupported device 'meta'"), ("", "not a torch device")])
def test_other_devices_are_refused_by_name(device: str, problem: str) -> None:
    with pytest.raises(OptionError, match=problem):
        resolve_device(device)


# --- every command refuses a GPU it does not have, before any work ---------------------------------------------


def command_lines(tmp: Path) -> dict[str, list[str]]:
    """Each command with arguments that would get it going; only `--device cuda` is wrong. Nothing here exists: a
    command that looked at a file before the device would fail with another message."""
    missing = str(tmp / "missing")
    return {
        "train": ["train", "--preset", "made", "--data", missing, "--out", str(tmp / "run")],
        "eval": ["eval", missing],
        "extract": ["extract", "--music", missing, "--store", str(tmp / "features")],
        "library add": ["library", "add", missing, "--library", str(tmp / "lib")],
        "library reindex": ["library", "reindex", "--library", str(tmp / "lib")],
        "ground": ["ground", missing, "--library", str(tmp / "lib"), "--checkpoint", missing],
        "serve": ["serve", "--library", str(tmp / "lib"), "--checkpoint", missing],
        "encoders verify": ["encoders", "verify", "--media", missing],
        "reproduce": ["reproduce", "--out", str(tmp / "paper"), "--plan-only"],
    }


@NO_CUDA
@pytest.mark.parametrize("name", list(command_lines(Path("."))))
def test_every_command_refuses_cuda_it_does_not_have(name: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([*command_lines(tmp_path)[name], "--device", "cuda"])
    assert info.value.code == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "error: --device cuda: CUDA is not available on this machine (torch" in err, err
    assert "Traceback" not in err
    assert not list(tmp_path.iterdir()), "nothing is written before the device is checked"


def test_auto_is_the_default_of_every_command_with_a_device() -> None:
    import typer.main

    from mgsv.cli import app

    defaults = {}

    def walk(command: Any, path: str) -> None:
        for param in getattr(command, "params", []):
            if param.name == "device":
                defaults[path.strip()] = param.default
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{path} {name}")

    walk(typer.main.get_command(app), "")
    assert set(command_lines(Path("."))) <= set(defaults)
    assert set(defaults.values()) == {"auto"}, defaults


# --- batches gathered ahead ------------------------------------------------------------------------------------


def test_prefetched_keeps_order_and_raises_where_the_item_fails() -> None:
    assert list(prefetched(range(7), lambda x: x * 10, ahead=2)) == [0, 10, 20, 30, 40, 50, 60]
    assert list(prefetched([], lambda x: x, ahead=2)) == []

    def broken(x: int) -> int:
        if x == 3:
            raise ValueError("item 3")
        return x

    stream = prefetched(range(6), broken, ahead=2)
    assert [next(stream), next(stream), next(stream)] == [0, 1, 2]
    with pytest.raises(ValueError, match="item 3"):
        next(stream)


def test_closing_prefetched_early_stops_reading() -> None:
    read = []

    def source():
        for i in range(100):
            read.append(i)
            yield i

    stream = prefetched(source(), lambda x: x, ahead=2)
    assert next(stream) == 0
    stream.close()
    assert len(read) <= 4  # the item in use, at most `ahead` gathered beyond it, and one being gathered


def test_cpu_batches_pass_through(tmp_path: Path) -> None:
    from mgsv.data.dataset import PairDataset

    data = write_synthetic_dataset(tmp_path / "syn", SyntheticConfig(num_tracks=4, num_train_videos=8, val_size=2,
                                                                      test_size=2, seed=1))
    dataset = PairDataset.from_folder(data, "train")
    expected = list(dataset.batches(4, epoch=0))
    got = list(device_batches(dataset.batches(4, epoch=0), "cpu"))
    assert [b.video_ids for b in got] == [b.video_ids for b in expected]
    assert all(torch.equal(a.frame_feats, b.frame_feats) for a, b in zip(got, expected, strict=True))


# --- device-agnostic hot paths ---------------------------------------------------------------------------------


class DeviceAudit(TorchFunctionMode):
    """Records, from mgsv's own code, tensor factories without `device=` and `.numpy()` not preceded by a host copy
    on its line (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.factories: set[str] = set()
        self.numpy: set[str] = set()
        self.calls = 0

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        frame = sys._getframe(1)
        where = frame.f_code.co_filename
        if where.startswith(SRC) and not building_a_module(frame):
            self.calls += 1
            name = getattr(func, "__name__", "")
            place = f"{Path(where).relative_to(SRC)}:{frame.f_lineno}"
            # as_tensor / tensor of a tensor keep its device; of numpy or a list they make a CPU tensor.
            keeps_device = name in ("tensor", "as_tensor") and args and isinstance(args[0], torch.Tensor)
            if name in FACTORIES and kwargs.get("device") is None and not keeps_device:
                self.factories.add(f"{place} torch.{name}")
            if name == "numpy":
                line = linecache.getline(where, frame.f_lineno)
                if ".cpu()" not in line.split(".numpy()")[0]:
                    self.numpy.add(f"{place}: {line.strip()}")
        return func(*args, **kwargs)


def building_a_module(frame: Any) -> bool:
    """True inside an nn.Module's __init__: what it creates becomes parameters and buffers that `.to(device)`
    moves with the module (a model is built on the CPU, loaded, then moved)."""
    while frame is not None:
        if frame.f_code.co_name in ("__init__", "reset_parameters") and isinstance(
                frame.f_locals.get("self"), torch.nn.Module):
            return True
        frame = frame.f_back
    return False


# `.numpy()` of tensors that are on the host by construction, whatever the model's device: (file, code) -> why.
HOST_NUMPY = {
    ("models/contract.py", "value.view(-1).view(torch.uint8).numpy()"): "value = tensor.detach().cpu() the line above",
    ("models/made.py", '"tokens": standard.half().numpy()'): "index_entries: tokens, mask = ....cpu() above",
    ("models/made.py", '"moments": torch.stack([mean, std], dim=-1).numpy()'): "computed from those host tokens",
    ("models/made.py", '"mask": mask.numpy()'): "index_entries: mask = music.mask.cpu() above",
    ("search/grounder.py", "for row in mask.numpy()]"): "the library's stored masks, read from the feature store",
    ("search/track_index.py", "tokens.numpy())"): "the host buffer blocks are read into (device=\"cpu\")",
}


def host_by_construction(entry: str) -> bool:
    """`entry` ("file:line: code") is one of HOST_NUMPY."""
    place, code = entry.split(": ", 1)
    return any(place.split(":")[0] == file and snippet in code for file, snippet in HOST_NUMPY)


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = SyntheticConfig(num_tracks=8, num_train_videos=32, val_size=8, test_size=8, seed=1)
    return write_synthetic_dataset(tmp_path_factory.mktemp("devices") / "syn", config)


def test_training_and_evaluation_give_every_tensor_a_device(dataset_dir: Path, tmp_path: Path) -> None:
    audit = DeviceAudit()
    settings = TrainSettings(preset="made", data_dir=dataset_dir, out_dir=tmp_path / "run", device="cpu",
                             model_overrides=dict(TINY_MODEL), recipe_overrides=dict(TINY_RECIPE), progress=False,
                             eval_top_k=3, precision="bf16")
    trainer = Trainer(settings)
    with audit:
        trainer.fit()
        target = resolve_target(tmp_path / "run", None, "last")
        run_evaluation(target, "test", EvalOptions(top_k=3, device="cpu", batch_size=4, detect_batch_size=8),
                       tmp_path / "eval")
    assert audit.calls > 1000, "the audit saw the paths run"
    assert not audit.factories, "\n".join(sorted(audit.factories))
    assert not [e for e in audit.numpy if not host_by_construction(e)], "\n".join(sorted(audit.numpy))


def test_grounding_and_encoding_give_every_tensor_a_device(tmp_path: Path) -> None:
    setup = make_tiny_setup(tmp_path / "tiny")
    library = make_synthetic_library(tmp_path / "lib", setup.music_spec, durations=[30, 60, 90, 120, 200, 300])
    audit = DeviceAudit()
    rng = np.random.default_rng(0)
    with audit:
        grounder = Grounder.from_checkpoint(setup.checkpoint, library, setup.clip_dir, dtype="float32", device="cpu",
                                            precision="bf16")
        frames = rng.standard_normal((12, setup.video_spec.dim)).astype(np.float32)
        result = grounder.ground_features(frames, 12.0, GroundOptions(top=3, alternatives=2, diverse=True))
        pixels = rng.integers(0, 256, (3, 48, 64, 3), dtype=np.uint8)
        setup.clip().encode(pixels)
        setup.ast().encode(rng.uniform(-0.5, 0.5, 16_000 * 12).astype(np.float32), sample_rate=16_000)
    assert result.moments and audit.calls > 200
    assert not audit.factories, "\n".join(sorted(audit.factories))
    assert not [e for e in audit.numpy if not host_by_construction(e)], "\n".join(sorted(audit.numpy))
