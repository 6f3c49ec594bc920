"""`mgsv reproduce` end to end, offline: a planted-signal MGSV-EC served by a fake Hugging Face Hub on 127.0.0.1 in
the real repository's layout, fetched, imported, split, trained with a tiny budget, killed, resumed, evaluated, and
tabled beside the paper's numbers.

The fake repository mirrors xxayt/MGSV-EC as it is today (tests/test_fetch.py cites the card and listing it follows):
the CSVs at dataset/MGSV-EC/{train,val,test}_data.csv, the features as MGSV_feature.zip at the root holding the
official layout (vit_feature1/vit_feature|vit_mask, ast_feature2p5/ast_feature|ast_mask; float32 [50, 512] /
[96, 768] tensors saved with torch.save, docs/official-code.md).
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
from hub_factory import FakeHub
from test_fetch import CARD, CSV_DIR, REPO

from mgsv.data.synthetic import SyntheticConfig, write_synthetic_dataset
from mgsv.evaluation.paper import HARMONET, MADE_TABLE4, MADE_TABLE5
from mgsv.features.store import FeatureStore
from mgsv.reproduce.plan import PlanOptions, build_plan
from mgsv.reproduce.tables import COLUMNS

COMMIT = "89abcdef0123456789abcdef0123456789abcdef"
# A tiny budget: a small MaDe, few epochs of small batches (the plan and the tables are those of the real run).
BUDGET = ["--set", "train.epochs=5", "--set", "train.min_epochs=5", "--set", "train.batch_size=32",
          "--set", "train.eval_batch_size=16", "--set", "model.dim=32", "--set", "model.enhance_ffn_dim=64",
          "--set", "model.detr_ffn_dim=64", "--set", "model.decoder_layers=2", "--set", "model.contrastive_dim=32",
          "--set", "model.cross_fusion_head_dim=8"]


def official_zip(store_dir: Path) -> bytes:
    """The feature store's items in the official layout (padded to 50 frames / 96 windows, with masks), zipped."""
    store = FeatureStore(store_dir)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for modality, top, kind, length in (("video", "vit_feature1", "vit", 50), ("music", "ast_feature2p5", "ast", 96)):
            table = store.modality(modality)
            for item_id in table.ids:
                feats, mask = table.batch([item_id], pad_to=length)
                for sub, tensor in ((f"{kind}_feature", feats[0]), (f"{kind}_mask", mask[0].float())):
                    data = io.BytesIO()
                    torch.save(tensor.clone(), data)
                    info = zipfile.ZipInfo(f"Kuai_feature/{top}/{sub}/{item_id}.pt", date_time=(2025, 1, 1, 0, 0, 0))
                    archive.writestr(info, data.getvalue())
    return buffer.getvalue()


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The repository's files for a planted-signal set of 30 tracks (240 train, 24 val, 24 test videos)."""
    source = tmp_path_factory.mktemp("planted")
    config = SyntheticConfig(num_tracks=30, num_train_videos=240, val_size=24, test_size=24, seed=3)
    write_synthetic_dataset(source, config)
    files = {"README.md": CARD, "MGSV_feature.zip": official_zip(source / "features")}
    for split in ("train", "val", "test"):
        files[f"{CSV_DIR}/{split}_data.csv"] = (source / f"{split}_data.csv").read_bytes()
    return files


def reproduce(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "mgsv", "reproduce", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_reproduce_fetches_trains_survives_a_kill_and_tables_the_paper(planted: dict[str, bytes],
                                                                       tmp_path: Path) -> None:
    out = tmp_path / "repro"
    args = ["--out", str(out), "--table", "4", "--table", "5", "--splits", "2", "--device", "cpu",
            "--warmup-steps", "2", "--no-progress", *BUDGET]
    with FakeHub() as hub:
        hub.add_repo("dataset", REPO, planted, commit=COMMIT)
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf"),
               "HF_TOKEN_PATH": str(tmp_path / "no-token"), "OMP_NUM_THREADS": "1"}
        env.pop("HF_TOKEN", None)
        first = reproduce(args, env)
        # Kill -9 once the first run has saved its first epoch (of five).
        last = out / "runs" / "made-official-seed42" / "checkpoints" / "last" / "model.safetensors"
        deadline = time.monotonic() + 240
        while not last.is_file() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        output_before = first.communicate()[0]
        assert last.is_file(), output_before
    # The plan and the estimate came before any training.
    assert "plan: 3 training run(s), 3 test evaluation(s), tables 4, 5" in output_before, output_before
    assert "warm-up: made: 2 training steps and one validation pass on cpu" in output_before
    assert "estimate on cpu (fp32):" in output_before and "disk" in output_before
    assert "[1/3] training made (official split, seed 42): 5 epochs" in output_before
    assert not (out / "runs" / "made-official-seed42" / "finished.json").exists()
    saved = (out / "runs" / "made-official-seed42" / "log.csv").read_text().splitlines()
    assert 2 <= len(saved) <= 5  # header + the epochs saved before the kill

    # Offline now: the data was fetched and imported once, so the resumed command needs no hub.
    env["HF_HUB_OFFLINE"] = "1"
    second = reproduce(args, env)
    output = second.communicate(timeout=600)[0]
    assert second.returncode == 0, output
    assert "data: " in output and "already fetched and imported" in output
    assert f"[1/3] resuming made (official split, seed 42) after epoch {len(saved) - 1}/5" in output, output
    log = (out / "runs" / "made-official-seed42" / "log.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in log[1:]] == ["1", "2", "3", "4", "5"]  # no epoch lost or repeated
    for name in ("made-official-seed42", "made-split-1-seed42", "made-split-2-seed42"):
        assert json.loads((out / "runs" / name / "finished.json").read_text())["epochs"] == 5
    # The random splits are drawn as the paper's protocol with the official split's sizes, over the same store.
    for seed in (1, 2):
        split = out / "splits" / f"seed-{seed}"
        assert len((split / "test_data.csv").read_text().splitlines()) == 25
        assert (split / "features").resolve() == (out / "data" / "features").resolve()
    assert (out / "splits" / "seed-1" / "test_data.csv").read_text() != (out / "splits" / "seed-2" /
                                                                         "test_data.csv").read_text()

    results = json.loads((out / "results.json").read_text())
    assert results["status"]["runs_finished"] == 3 and results["status"]["evaluations_finished"] == 3
    table4 = results["tables"]["4"][0]
    metrics = json.loads((out / "evals" / "made-official-seed42" / "metrics.json").read_text())["metrics"]
    assert table4["ours"]["mIoU"]["mean"] == pytest.approx(metrics["mIoU"])
    assert table4["ours"]["MoR@100"]["mean"] == pytest.approx(metrics["MoR@100 (IoU>0.7)"])
    assert table4["paper"]["values"] == MADE_TABLE4.values
    table5 = results["tables"]["5"][0]
    split_metrics = [json.loads((out / "evals" / f"made-split-{s}-seed42" / "metrics.json").read_text())["metrics"]
                     for s in (1, 2)]
    assert table5["ours"]["R@1"]["mean"] == pytest.approx(sum(m["R@1"] for m in split_metrics) / 2)
    assert table5["ours"]["R@1"]["n"] == 2 and table5["ours"]["R@1"]["std"] is not None
    assert table5["paper"]["std"] == MADE_TABLE5.std

    markdown = (out / "results.md").read_text()
    assert "| system |  | " + " | ".join(COLUMNS) + " | finished |" in markdown
    assert f"| made | ours | {metrics['mIoU']:.3f} |" in markdown
    assert "| made | paper | 0.722 | 8.8 | n/a | n/a | 8.3 | n/a | n/a |" in markdown
    assert f"| made | difference | {metrics['mIoU'] - 0.722:+.3f} |" in markdown
    assert "| made | inside the paper's spread |" in markdown
    assert "| HarmoNet (ICASSP 2026) | reported, no public code | 0.735 | 10.7 | 19.5 |" in markdown
    assert "the official code runs it" in markdown
    assert "HarmoNet" in (out / "report.html").read_text() and HARMONET.values["mIoU"] == 0.735

    # A third call finds everything finished: nothing is trained again.
    third = subprocess.run([sys.executable, "-m", "mgsv", "reproduce", *args], env=env, text=True, check=False,
                           capture_output=True, timeout=300)
    assert third.returncode == 0, third.stdout + third.stderr
    assert third.stdout.count("finished earlier, skipped") == 3
    assert "warm-up" not in third.stdout


def test_plan_shares_runs_between_tables() -> None:
    plan = build_plan(PlanOptions(tables=("4", "6", "7", "fig5"), systems=("mvpt+/uvcom+", "qd-detr")))
    # MaDe as it is serves Table 4, Table 6's reference row and Table 7's six-layer row: one run.
    assert [r.label for r in plan.tables["7"]][-1] == "made 6 decoder layers"
    assert plan.tables["7"][-1].evals == plan.tables["4"][0].evals == plan.tables["6"][0].evals
    # The composite trains MVPt+ and UVCOM+ once and evaluates them together.
    rows = {row.label: row for row in plan.tables["4"]}
    assert list(rows) == ["made", "qd-detr", "mvpt+/uvcom+"]  # MaDe first, then the paper's order
    composite = plan.evals[rows["mvpt+/uvcom+"].evals[0]]
    assert composite.runs == ("mvpt+-official-seed42", "uvcom+-official-seed42")
    # Fig. 5 at fraction 1.0 reuses the full runs (qd-detr of Table 4).
    assert "qd-detr-official-seed42" in [e for row in plan.tables["fig5"] for e in row.evals]
    assert len(plan.runs) == len(set(plan.runs))


def test_cli_refuses_bad_options_by_name(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mgsv", "reproduce", "--out", str(tmp_path / "o"), *args],
                              capture_output=True, text=True, timeout=120, check=False)

    bad_table = run("--table", "9", "--data", str(tmp_path))
    assert bad_table.returncode != 0 and "9: choose from 4, 5, 6, 7, fig5" in bad_table.stdout + bad_table.stderr
    bad_system = run("--system", "nope", "--data", str(tmp_path))
    assert "unknown system(s) nope" in bad_system.stdout + bad_system.stderr
    no_data = run("--data", str(tmp_path / "missing"))
    assert no_data.returncode == 1 and "not a dataset folder" in no_data.stdout + no_data.stderr
    assert "Traceback" not in bad_table.stderr + bad_system.stderr + no_data.stderr
    (tmp_path / "a-file").write_text("kept")
    on_a_file = subprocess.run([sys.executable, "-m", "mgsv", "reproduce", "--out", str(tmp_path / "a-file"),
                                "--plan-only"], capture_output=True, text=True, timeout=120, check=False)
    assert on_a_file.returncode == 1 and "cannot create the output folder" in on_a_file.stderr
    assert "Traceback" not in on_a_file.stderr and (tmp_path / "a-file").read_text() == "kept"
    splits = run("--table", "5", "--splits", "1")
    assert splits.returncode == 2 and "--splits" in splits.stderr


@pytest.mark.parametrize("command", [["ground", "clip.mp4", "--library", "LIB"], ["serve", "--library", "LIB"]])
def test_no_checkpoint_says_how_to_get_one(command: list[str], tmp_path: Path) -> None:
    args = [str(tmp_path / a) if a in ("clip.mp4", "LIB") else a for a in command]
    done = subprocess.run([sys.executable, "-m", "mgsv", *args], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1
    message = done.stderr.strip().splitlines()
    assert len(message) == 2, done.stderr
    assert "--checkpoint" in message[0] and "hf:OWNER/NAME" in message[0]
    assert "mgsv reproduce --out" in message[1] and "mgsv train" in message[1]
    assert "Traceback" not in done.stderr


def test_plan_only_without_data_fetches_nothing(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "mgsv", "reproduce", "--out", str(tmp_path / "o"), "--plan-only",
                           "--table", "4", "--table", "5"], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert "plan: 4 training run(s), 4 test evaluation(s), tables 4, 5" in text
    assert "[4/4] made (random split 3, seed 42)" in text
    assert "fetching and importing it needs about 11.7 GB" in text
    assert not (tmp_path / "o" / "data").exists()
