"""The table of `benchmarks/gpu_check.sh`: one row per check, the measured value beside the issue's target for one
H100 (issue 16: evaluation of 512 pairs <= 20 ms, training >= 20 steps/s at batch 512, AST >= 300 windows/s).

    python benchmarks/_gpu_table.py OUT_DIR SMALL      # OUT_DIR: what gpu_check.sh wrote; SMALL: 1 for --cpu / --small

Exit code 1 if a step failed (its log is named), 0 otherwise; a target missed is reported, not an error.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

JSON_STEPS = {"eval", "train", "ast", "ground", "planted_eval"}  # the others print text
TARGETS = {"eval": ("<=", 0.020, "s"), "train": (">=", 20.0, "steps/s"), "ast": (">=", 300.0, "windows/s")}


def load(out: Path, name: str) -> tuple[str, dict | None]:
    """(state, JSON output) of a step: "ok", "n/a: reason" or "FAILED (exit N): log"."""
    if (out / f"{name}.skipped").exists():
        return "n/a: " + (out / f"{name}.skipped").read_text().strip(), None
    status = json.loads((out / f"{name}.status").read_text())
    if status["rc"] != 0:
        return f"FAILED (exit {status['rc']}, {status['ms'] / 1000:.0f} s): {out / (name + '.log')}", None
    text = (out / f"{name}.json").read_text()
    return "ok", json.loads(text) if name in JSON_STEPS else {"text": text}


def verdict(name: str, value: float, full_size: bool) -> str:
    """The target and whether `value` meets it (only a full-size run is comparable)."""
    sense, target, unit = TARGETS[name]
    text = f"{sense} {target:g} {unit}"
    if not full_size:
        return f"{text} (full size on one H100; not comparable)"
    met = value <= target if sense == "<=" else value >= target
    return f"{text}: {'met' if met else 'MISSED'}"


def rows(out: Path, small: bool) -> tuple[list[tuple[str, str, str]], bool]:
    device = json.loads((out / "device.json").read_text())
    full = not small and device["device"].startswith("cuda")
    table, failed = [], False

    state, report = load(out, "eval")
    if report:
        for run in report["runs"]:
            rate = run["rates"]["total"]
            value = f"{rate['seconds'] * 1000:.1f} ms ({rate['x_floor']:.1f}x floor of {rate['peak']:.0f} GFLOP/s)"
            target = verdict("eval", rate["seconds"], full) if run["precision"] == "bf16" else "-"
            table.append((f"evaluation, {run['batch']} pairs, {run['precision']}", value, target))
        a = report.get("bf16_agreement")
        if a:
            table.append(("  bf16 vs fp32", f"|p_s| max {a['p_s_max_diff']:.4f}, top-1 same "
                                             f"{a['top1_agreement_pct']:.1f}%, span max {a['span_max_diff_s']:.3f} s",
                          "-"))
    else:
        failed |= state.startswith("FAILED")
        table.append(("evaluation (bench_made.py)", state, "-"))

    state, report = load(out, "train")
    if report:
        for run in report["runs"]:
            rate = run["rates"]["total"]
            steps = 1 / rate["seconds"]
            table.append((f"training step, batch {run['batch']}, {run['precision']}",
                          f"{steps:.2f} steps/s ({rate['seconds'] * 1000:.0f} ms, {rate['x_floor']:.1f}x floor)",
                          verdict("train", steps, full and run["batch"] == 512)))
    else:
        failed |= state.startswith("FAILED")
        table.append(("training step (bench_made.py)", state, "-"))

    state, report = load(out, "ast")
    if report:
        for row in report["ast"]["rows"]:
            if row["name"].startswith("bf16 batch") and "only" not in row["name"]:
                windows = 1 / row["median_s"]
                table.append((f"AST extraction, {row['name']} (fbank included)",
                              f"{windows:.1f} windows/s ({row['rate']['x_floor']:.1f}x floor)",
                              verdict("ast", windows, full)))
    else:
        failed |= state.startswith("FAILED")
        table.append(("AST extraction (bench_encoders.py)", state, "-"))

    state, report = load(out, "ground")
    if report:
        for row in report["rows"]:
            table.append((f"grounding: {row['name']} ({report['tracks']} tracks)",
                          f"{row['seconds'] * 1000:.1f} ms", "-"))
    else:
        failed |= state.startswith("FAILED")
        table.append(("grounding (bench_ground.py)", state, "-"))

    states = {name: load(out, name) for name in ("synthetic", "planted", "planted_eval")}
    bad = [f"{name}: {state}" for name, (state, _) in states.items() if state != "ok"]
    if bad:
        failed = True
        table.append(("planted-signal training, 3 epochs", "; ".join(bad), "-"))
    else:
        seconds = json.loads((out / "planted.status").read_text())["ms"] / 1000
        metrics = states["planted_eval"][1]["metrics"]
        test_size = sum(1 for _ in (out / "planted" / "data" / "test_data.csv").open()) - 1
        table.append(("planted-signal training, 3 epochs (mgsv train)", f"{seconds:.1f} s wall (validation included)",
                      "-"))
        table.append(("  then mgsv eval --split test",
                      f"R@1 {metrics['R@1']:.1f}, MoR@1 (IoU>0.5) {metrics['MoR@1 (IoU>0.5)']:.1f}, "
                      f"mIoU {metrics['mIoU']:.1f}", f"chance R@1 {100 / test_size:.1f}"))
    return table, failed


def main() -> None:
    out, small = Path(sys.argv[1]), sys.argv[2] == "1"
    device = json.loads((out / "device.json").read_text())
    table, failed = rows(out, small)
    print(f"\nmgsv GPU check on {device['device']} ({device['name']}), torch {device['torch']}, "
          f"CUDA {device['cuda']}{', small sizes' if small else ''}; outputs in {out}")
    widths = [max(len(row[i]) for row in table) for i in range(2)]
    print(f"{'check':{widths[0]}}  {'measured':{widths[1]}}  target (one H100)")
    for check, value, target in table:
        print(f"{check:{widths[0]}}  {value:{widths[1]}}  {target}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
