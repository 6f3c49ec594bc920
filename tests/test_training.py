"""The trainer: official schedule, checkpoints and logs, resume, refusal to overwrite, bad settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mgsv.cli import main
from mgsv.data.synthetic import SyntheticConfig, write_synthetic_dataset
from mgsv.errors import MgsvError, OutputExistsError
from mgsv.models.checkpoint import load_checkpoint
from mgsv.models.registry import get_preset
from mgsv.training.overrides import parse_set_items
from mgsv.training.recipe import recipe_for
from mgsv.training.schedule import warmup_cosine, warmup_cosine_factor
from mgsv.training.trainer import Trainer, TrainSettings

TINY_MODEL = {"dim": 32, "detr_ffn_dim": 64, "enhance_ffn_dim": 64, "decoder_layers": 2}
TINY_RECIPE = {"epochs": 3, "batch_size": 16, "min_epochs": 1, "patience": 5, "eval_batch_size": 64}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = SyntheticConfig(num_tracks=16, num_train_videos=48, val_size=12, test_size=12, seed=1)
    return write_synthetic_dataset(tmp_path_factory.mktemp("train") / "syn", config)


def settings(data: Path, out: Path, **changes: object) -> TrainSettings:
    base = {"preset": "made", "data_dir": data, "out_dir": out, "model_overrides": dict(TINY_MODEL),
                "recipe_overrides": dict(TINY_RECIPE), "progress": False}
    base.update(changes)
    return TrainSettings(**base)


def test_warmup_cosine_is_the_official_schedule() -> None:
    assert warmup_cosine_factor(0, 4, 100) == 0.0  # the first iteration runs at lr 0
    assert warmup_cosine_factor(2, 4, 100) == 0.5
    assert warmup_cosine_factor(4, 4, 100) == 1.0
    assert warmup_cosine_factor(52, 4, 100) == pytest.approx(0.5)
    assert warmup_cosine_factor(100, 4, 100) == pytest.approx(0.0)
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([param], lr=3e-4)
    scheduler = warmup_cosine(optimizer, total_steps=9600, warmup_rate=0.02)  # the official run: 192 warmup steps
    lrs = []
    for _ in range(193):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == 0.0 and lrs[96] == pytest.approx(1.5e-4) and lrs[192] == pytest.approx(3e-4)


def test_a_run_writes_checkpoints_logs_and_curves(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    trainer = Trainer(settings(data, out))
    state = trainer.fit()
    assert state.epoch == 3 and state.step == 3 * (48 // 16)
    for name in ("last", "best_r1", "best_miou", "best_mor1_iou05", "best_mor1_iou07"):
        _model, info = load_checkpoint(out / "checkpoints" / name)
        assert info.preset == "made" and info.config.dim == 32
        assert info.feature_specs["video"]["encoder"] == "mgsv/synthetic-planted"
    log_lines = (out / "log.csv").read_text().splitlines()
    assert len(log_lines) == 4 and "val_mIoU" in log_lines[0] and "train_L_total" in log_lines[0]
    assert (out / "curves.png").stat().st_size > 1000
    run = json.loads((out / "run.json").read_text())
    assert run["preset"] == "made" and run["recipe"]["epochs"] == 3
    # The frozen positional query never moves; trained weights do.
    torch.manual_seed(recipe_for("made").seed)
    initial = get_preset("made").build_model(**TINY_MODEL)
    trained, _ = load_checkpoint(out / "checkpoints" / "last")
    assert not torch.equal(trained.enhance["video"].proj.weight, initial.enhance["video"].proj.weight)
    assert torch.equal(trained.query_pos, initial.query_pos)


def test_resume_continues_where_it_stopped(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    Trainer(settings(data, out, recipe_overrides={**TINY_RECIPE, "epochs": 3})).fit()
    straight = load_checkpoint(out / "checkpoints" / "last")[0].state_dict()

    out2 = tmp_path / "run2"
    Trainer(settings(data, out2)).fit(epochs=1)  # the same run, stopped after its first epoch
    resumed = Trainer(settings(data, out2, resume=True))
    assert resumed.state.epoch == 1
    resumed.fit()
    assert resumed.state.epoch == 3
    again = load_checkpoint(out2 / "checkpoints" / "last")[0].state_dict()
    for key in straight:
        torch.testing.assert_close(again[key], straight[key], rtol=1e-5, atol=1e-6)


def test_existing_run_folder_is_never_overwritten(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(OutputExistsError, match="`resume`"):
        Trainer(settings(data, out))
    assert (out / "precious.txt").read_text() == "keep me"
    with pytest.raises(MgsvError, match="nothing to resume"):
        Trainer(settings(data, tmp_path / "new", resume=True))


def test_plot_every_draws_curves_every_nth_epoch_and_at_the_end(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mgsv.training.trainer as trainer_module

    drawn: list[int] = []
    monkeypatch.setattr(trainer_module, "plot_curves", lambda history, path: drawn.append(history[-1]["epoch"]))
    Trainer(settings(data, tmp_path / "every2", plot_every=2)).fit()
    assert drawn == [2, 3]  # epoch 2, then the run's last epoch
    drawn.clear()
    trainer = Trainer(settings(data, tmp_path / "end", plot_every=0))
    trainer.fit(epochs=1)
    assert drawn == [1]  # only where fit() stopped
    drawn.clear()
    Trainer(settings(data, tmp_path / "each")).fit()
    assert drawn == [1, 2, 3]  # the default: every epoch
    with pytest.raises(MgsvError, match="plot_every must be an integer >= 0"):
        Trainer(settings(data, tmp_path / "bad", plot_every=-1))


def test_resume_refuses_another_config(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    Trainer(settings(data, out, recipe_overrides={**TINY_RECIPE, "epochs": 1})).fit()
    with pytest.raises(MgsvError, match="cannot resume: the run was made with other model_config"):
        Trainer(settings(data, out, resume=True, model_overrides={**TINY_MODEL, "dim": 64}))


def test_overrides_are_typed_and_checked() -> None:
    preset = get_preset("made")
    model, recipe = parse_set_items(preset, ["dim=64", "model.enhance=false", "train.epochs=5",
                                                   "train.lr={\"enhancement\": 1e-4, \"matching\": 1e-4, "
                                                   "\"detection\": 1e-4}"])
    assert model == {"dim": 64, "enhance": False}
    assert recipe["epochs"] == 5 and recipe["lr"]["matching"] == 1e-4
    with pytest.raises(MgsvError, match="unknown MaDeConfig key 'dimm'"):
        parse_set_items(preset, ["dimm=3"])
    with pytest.raises(MgsvError, match="unknown training setting 'epoch'"):
        parse_set_items(preset, ["train.epoch=3"])
    with pytest.raises(MgsvError, match="expected KEY=VALUE"):
        parse_set_items(preset, ["dim"])


def test_train_fraction_and_small_train_split(data: Path, tmp_path: Path) -> None:
    trainer = Trainer(settings(data, tmp_path / "quarter", train_fraction=0.5))
    assert len(trainer.train_data) == 24 and trainer.steps_per_epoch == 1
    assert set(trainer.train_data.video_ids) < set(Trainer(settings(data, tmp_path / "all")).train_data.video_ids)
    with pytest.raises(MgsvError, match="fewer than one batch"):
        Trainer(settings(data, tmp_path / "big", recipe_overrides={**TINY_RECIPE, "batch_size": 512}))


def test_cli_train_then_eval(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    args = ["train", "--preset", "made", "--data", str(data), "--out", str(out), "--no-progress",
            "--precision", "bf16"]
    args += [f"--set={k}={v}" for k, v in TINY_MODEL.items()]
    args += [f"--set=train.{k}={v}" for k, v in {**TINY_RECIPE, "epochs": 1}.items()]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code in (0, None)
    assert "mgsv eval" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", str(out), "--split", "test", "--top-k", "5", "--json"])
    assert exit_info.value.code in (0, None)
    printed = json.loads(capsys.readouterr().out)
    assert 0 <= printed["metrics"]["mIoU"] <= 1 and "R@1" in printed["metrics"]
    folder = out / "eval-test-best_mor1_iou07"
    assert {p.name for p in folder.iterdir()} == {"predictions.jsonl", "metrics.json", "report.html", "report.png"}
    # The predictions file scores to the same metrics with `mgsv score`.
    with pytest.raises(SystemExit):
        main(["score", "--annotations", str(data / "test_data.csv"), "--predictions",
              str(folder / "predictions.jsonl"), "--json"])
    scored = json.loads(capsys.readouterr().out)["metrics"]
    for name in ("mIoU", "R@1", "R@5", "MeanR", "MoR@1 (IoU>0.7)"):
        assert scored[name] == pytest.approx(printed["metrics"][name])
    # Running it again refuses to overwrite the outputs.
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", str(out), "--split", "test", "--top-k", "5"])
    assert exit_info.value.code == 1
    assert "--force" in capsys.readouterr().err
