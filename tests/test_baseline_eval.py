"""Training and evaluating baselines end to end: capabilities, model selection, the composite ranker + grounder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mgsv.cli import main
from mgsv.data.dataset import PairDataset
from mgsv.data.synthetic import SyntheticConfig, write_synthetic_dataset
from mgsv.evaluation.protocol import MSG_METRICS, V2MR_METRICS, EvalOptions, evaluate
from mgsv.models.baselines.composite import CompositeModel
from mgsv.models.contract import CapabilityError
from mgsv.models.registry import get_preset

TINY = ["--set=dim=32", "--set=ffn_dim=64", "--set=heads=4", "--set=train.epochs=1", "--set=train.batch_size=16",
        "--set=train.min_epochs=1", "--set=train.eval_batch_size=64"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = SyntheticConfig(num_tracks=16, num_train_videos=48, val_size=12, test_size=12, seed=2)
    return write_synthetic_dataset(tmp_path_factory.mktemp("baseline-eval") / "syn", config)


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    return exit_info.value.code or 0, captured.out, captured.err


@pytest.fixture(scope="module")
def runs(data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A grounding-only run (moment-detr) and a retrieval-only run (mvpt+), one tiny epoch each."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for preset in ("moment-detr", "mvpt+"):
        out[preset] = root / preset
        with pytest.raises(SystemExit) as exit_info:
            main(["train", "--preset", preset, "--data", str(data), "--out", str(out[preset]), "--no-progress", *TINY])
        assert exit_info.value.code in (0, None)
    return out


def test_models_are_selected_by_the_metrics_they_produce(runs: dict[str, Path]) -> None:
    grounding = {p.name for p in (runs["moment-detr"] / "checkpoints").iterdir()}
    assert grounding == {"best_miou", "last"}
    retrieval = {p.name for p in (runs["mvpt+"] / "checkpoints").iterdir()}
    assert retrieval == {"best_r1", "last"}
    log = (runs["mvpt+"] / "log.csv").read_text().splitlines()[0].split(",")
    assert "val_R@1" in log and "val_mIoU" not in log


def test_grounding_only_eval_reports_smg_and_says_what_is_not_computed(
        runs: dict[str, Path], data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["eval", str(runs["moment-detr"]), "--json"], capsys)
    assert code == 0
    printed = json.loads(out)
    assert 0 <= printed["metrics"]["mIoU"] <= 1
    assert not set(printed["metrics"]) & {*V2MR_METRICS, *MSG_METRICS}
    assert "grounding only" in printed["not_computed"]["R@1"]
    folder = Path(printed["out"])
    assert folder.name == "eval-test-best_miou"
    lines = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
    assert len(lines) == 12 and all("smg" in line and "ranking" not in line and "gt_rank" not in line
                                    for line in lines)
    assert "not computed" in (folder / "report.html").read_text()
    code, out, _ = run_cli(["score", "--annotations", str(data / "test_data.csv"), "--predictions",
                            str(folder / "predictions.jsonl"), "--json"], capsys)
    assert json.loads(out)["metrics"]["mIoU"] == pytest.approx(printed["metrics"]["mIoU"])
    # Human-readable output names the missing metrics instead of printing a table of n/a.
    code, out, _ = run_cli(["eval", str(runs["moment-detr"]), "--force"], capsys)
    assert code == 0 and "all of V2MR" in out and "grounding only" in out


def test_asking_a_grounding_only_model_for_msg_is_refused_plainly(
        runs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["eval", str(runs["moment-detr"]), "--top-k", "5", "--out", "unused"], capsys)
    assert code == 1
    message = " ".join(err.split())
    assert "grounding-only" in message and "cannot rank tracks" in message and "--ranker" in message
    assert "Traceback" not in err
    code, _, err = run_cli(["eval", str(runs["mvpt+"]), "--top-k", "5", "--out", "unused"], capsys)
    assert code == 1 and "retrieval-only" in " ".join(err.split())


def test_top_k_validation_of_a_grounding_only_model_is_refused_before_training(
        data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["train", "--preset", "qd-detr+", "--data", str(data), "--out", str(tmp_path / "r"),
                            "--eval-top-k", "5", *TINY], capsys)
    assert code == 1 and "cannot rank tracks" in " ".join(err.split())
    assert not (tmp_path / "r").exists()


def test_retrieval_only_eval_reports_v2mr(runs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["eval", str(runs["mvpt+"]), "--json"], capsys)
    assert code == 0
    printed = json.loads(out)
    assert "R@1" in printed["metrics"] and "mIoU" not in printed["metrics"]
    assert "retrieval only" in printed["not_computed"]["mIoU"]
    lines = [json.loads(line) for line in (Path(printed["out"]) / "predictions.jsonl").read_text().splitlines()]
    assert all("smg" not in line and 1 <= line["gt_rank"] <= 12 for line in lines)


def test_composite_ranker_and_grounder_give_every_metric(runs: dict[str, Path], capsys: pytest.CaptureFixture[str],
                                                         tmp_path: Path) -> None:
    out_dir = tmp_path / "composite"
    code, out, _ = run_cli(["eval", "--ranker", str(runs["mvpt+"]), "--grounder", str(runs["moment-detr"]),
                            "--top-k", "5", "--out", str(out_dir), "--json"], capsys)
    assert code == 0
    metrics = json.loads(out)["metrics"]
    for name in ("mIoU", "R@1", "MoR@1 (IoU>0.7)", "MoR@1 (IoU>0.7) [top-5 detection]"):
        assert name in metrics
    details = json.loads((out_dir / "metrics.json").read_text())
    assert details["preset"] == "mvpt+/moment-detr" and "ranker" in details and "grounder" in details
    lines = [json.loads(line) for line in (out_dir / "predictions.jsonl").read_text().splitlines()]
    assert all(len(line["ranking"]) == 5 and "smg" in line for line in lines)
    # The roles cannot be swapped, and half a composite is refused.
    code, _, err = run_cli(["eval", "--ranker", str(runs["moment-detr"]), "--grounder", str(runs["mvpt+"]),
                            "--out", str(tmp_path / "x")], capsys)
    assert code == 1 and "cannot rank tracks" in " ".join(err.split())
    code, _, err = run_cli(["eval", "--ranker", str(runs["mvpt+"])], capsys)
    assert code == 1 and "both --ranker and --grounder" in err


def test_unknown_preset_on_the_command_line(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["train", "--preset", "uvcom-plus", "--data", str(data), "--out", str(tmp_path / "r")],
                           capsys)
    assert code == 1 and "valid presets" in err and "uvcom+" in err and not (tmp_path / "r").exists()


def test_models_params_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["models", "--params", "--json"], capsys)
    rows = {row["name"]: row for row in json.loads(out)["parameters"]}
    assert code == 0 and rows["moment-detr"]["ours"] == 4_285_444 and rows["moment-detr"]["paper_m"] == 4.3
    assert "mvpt+/uvcom+" in rows and rows["uvcom"]["omitted_modules"]
    code, out, _ = run_cli(["models", "--params"], capsys)
    assert "Table 4" in out and "conquer" in out


def test_conquer_ranks_and_grounds_in_the_protocol(data: Path) -> None:
    model = get_preset("conquer").build_model(dim=32, ffn_dim=64, heads=4, conv_channels=8)
    dataset = PairDataset.from_folder(data, "val")
    result = evaluate(model, dataset, EvalOptions(top_k=3, batch_size=8))
    assert {"mIoU", "R@1", "MoR@1 (IoU>0.7)", "MoR@1 (IoU>0.7) [top-3 detection]"} <= set(result.metrics)
    assert not result.not_computed and result.top_moments.shape == (12, 3, 2)


def test_composite_needs_the_right_halves() -> None:
    ranker = get_preset("mvpt+").build_model(dim=32, ffn_dim=64, heads=4)
    grounder = get_preset("uvcom+").build_model(dim=32, ffn_dim=64, heads=4)
    assert CompositeModel(ranker, grounder).name == "mvpt+/uvcom+"
    with pytest.raises(CapabilityError, match="cannot rank"):
        CompositeModel(grounder, grounder)
    with pytest.raises(CapabilityError, match="cannot detect"):
        CompositeModel(ranker, ranker)
