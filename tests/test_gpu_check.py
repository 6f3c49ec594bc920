"""benchmarks/gpu_check.sh runs end to end on a CPU machine (`--cpu`: small sizes), so that on a GPU machine the one
command is known to work; and it stops with one message where the device is missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHON": sys.executable, **env}
    return subprocess.run(["bash", str(SCRIPT), *args, "--out", str(tmp_path / "out")], capture_output=True,
                          text=True, env=environment, timeout=1200, check=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on machines without CUDA")
def test_a_missing_gpu_stops_the_check_at_once(tmp_path: Path) -> None:
    result = run(tmp_path, DEVICE="cuda")
    assert result.returncode == 1
    assert "--device cuda: CUDA is not available on this machine" in " ".join(result.stderr.split())
    assert "gpu_check.sh: cuda is not usable here" in result.stderr
    assert not (tmp_path / "out" / "eval.json").exists()


@pytest.mark.slow
def test_the_check_runs_on_the_cpu_and_prints_one_table(tmp_path: Path) -> None:
    result = run(tmp_path, "--cpu")
    assert result.returncode == 0, result.stdout + result.stderr
    table = result.stdout
    assert "mgsv GPU check on cpu (CPU)" in table and "small sizes" in table
    lines = {line.strip().split("  ")[0]: line for line in table.splitlines()}
    for check in ("evaluation, 16 pairs, bf16", "training step, batch 8, bf16"):
        assert "not comparable" in lines[check] and "FAILED" not in lines[check], table
    assert "s wall" in lines["planted-signal training, 3 epochs (mgsv train)"], table
    assert "R@1" in lines["then mgsv eval --split test"] and "chance R@1 12.5" in table, table
    # AST and grounding: timed where the benchmark takes --device and --json, else named as not run, with the reason.
    for name in ("AST extraction", "grounding"):
        assert any(row.startswith(name) for row in lines), table
    assert "windows/s" in table or "bench_encoders.py has no --device/--json" in table
    out = tmp_path / "out"
    assert (out / "planted" / "run" / "checkpoints" / "last" / "model.safetensors").is_file()
    assert (out / "eval.json").stat().st_size and (out / "train.json").stat().st_size
