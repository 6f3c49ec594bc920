"""Music extraction throughput on this machine: the serial engine against `--engine ray` (a local Ray instance).

    nice .venv/bin/python benchmarks/bench_extract_ray.py --music .media/usr/share/games/wesnoth/1.16/data/core/music
    nice .venv/bin/python benchmarks/bench_extract_ray.py --encoder real --limit 6     # real-size AST, random weights

`--encoder tiny` (the test AST: hidden 32, 2 layers) makes the run measure decoding and the engines' own overhead;
`--encoder real` is the AudioSet AST architecture with random weights in bf16 where the CPU has it (the encoder's
cost per window is the real one). Each engine writes a fresh store. Ray is started once (`ray.init(num_cpus=N)`)
and its start-up is reported apart; the Ray time includes everything after it: hashing tasks, actor start-up
(each actor loads the encoder), decoding, encoding and the merge into the store.

Beside each time: windows encoded (every valid window of each file's first 240 s), windows/s, the useful FLOPs
(windows x the AST's FLOPs per window at its config sizes, `_encoder_flops`: ~261 GFLOP for the real AST), the
matrix-product peak of this process in the encoder's precision (measured before and after, the higher kept) and
x floor. With the tiny AST the FLOPs are negligible and x floor mostly measures decoding and the engines' overhead.

    nice .venv/bin/python benchmarks/bench_extract_ray.py --limit 2 --json     # quick check
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _encoder_flops import ast_window_flops
from _peak import Peaks, load_average, rate

from mgsv.extract.pipeline import EncoderOptions, extract_features
from mgsv.files.discover import find_media


def real_size_ast(folder: Path) -> Path:
    """A random AST with the AudioSet architecture, saved once."""
    if not (folder / "config.json").exists():
        import torch
        from transformers import ASTConfig, ASTForAudioClassification

        from mgsv.encoders.tiny import save_pretrained_quietly

        torch.manual_seed(0)
        save_pretrained_quietly(ASTForAudioClassification(ASTConfig(num_labels=527)), folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--music", type=Path, default=Path(".media/usr/share/games/wesnoth/1.16/data/core/music"))
    parser.add_argument("--limit", type=int, default=None, help="Only the N shortest files.")
    parser.add_argument("--encoder", choices=["tiny", "real"], default="tiny")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout (logs on stderr)")
    args = parser.parse_args()
    log = sys.stderr if args.json else sys.stdout
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-extract-ray-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if args.encoder == "tiny":
        from mgsv.encoders.tiny import make_tiny_ast

        ast = workdir / "tiny-ast"
        if not ast.exists():
            make_tiny_ast(ast)
        options = EncoderOptions(ast=str(ast), dtype="fp32", batch_size=32)
    else:
        options = EncoderOptions(ast=str(real_size_ast(workdir / "real-ast")), dtype="auto")
    files = sorted(find_media([args.music], "music").files, key=lambda p: p.stat().st_size)[: args.limit]
    windows, flops, precision = work_of(files, Path(options.ast), options.dtype)
    peaks = Peaks.measure()
    print(f"{len(files)} music files ({sum(p.stat().st_size for p in files) / 1e6:.0f} MB, {windows} windows), "
          f"{args.encoder} AST ({precision}, {flops / windows / 1e9:.2f} GFLOP a window); {peaks.describe()}; "
          f"load {load_average()}", file=log)
    runs = {}

    import ray

    started = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - started
    print(f"ray.init(num_cpus={args.cpus}): {ray_start:.1f} s", file=log)
    for engine in ("serial", "ray"):
        store = workdir / f"store-{engine}"
        shutil.rmtree(store, ignore_errors=True)
        started = time.perf_counter()
        report = extract_features(store, music=files, encoders=options, engine=engine)
        seconds = time.perf_counter() - started
        music = report.modalities["music"]
        runs[engine] = {"encoded": music.encoded, "failed": len(music.failures), "files_per_s": len(files) / seconds,
                        "windows_per_s": windows / seconds, "seconds": seconds}
        print(f"{engine:6}: {music.encoded} encoded, {len(music.failures)} failed in {seconds:.1f} s: "
              f"{len(files) / seconds:.2f} files/s, {windows / seconds:.2f} windows/s", file=log)  # fmt: skip
    ray.shutdown()
    peaks = peaks.best(Peaks.measure())
    for run in runs.values():
        run["rate"] = rate(run["seconds"], flops, peaks.of(precision))
        print(f"  {run['rate']['gflop']:.0f} GFLOP at {precision} peak {run['rate']['peak']:.0f} GFLOP/s: "
              f"{run['seconds']:.1f} s is {run['rate']['x_floor']:.1f}x floor", file=log)
    if args.json:
        print(json.dumps({"files": len(files), "windows": windows, "encoder": args.encoder, "precision": precision,
                          "cpus": args.cpus, "ray_init_s": ray_start, "peaks": peaks.to_dict(),
                          "load": load_average(), "runs": runs}, indent=2))


def work_of(files: list[Path], ast: Path, dtype: str) -> tuple[int, float, str]:
    """Valid windows of the files (first 240 s of each), their AST FLOPs, and the precision the AST runs in."""
    import torch
    from transformers import AutoConfig

    from mgsv.encoders.ast import window_layout
    from mgsv.encoders.loading import resolve_dtype
    from mgsv.media.probe import probe

    windows = sum(int(window_layout(probe(path).duration or 0.0).mask.sum()) for path in files)
    precision = "bf16" if resolve_dtype(dtype, torch.device("cpu")) == torch.bfloat16 else "fp32"
    return windows, windows * ast_window_flops(AutoConfig.from_pretrained(ast)), precision


if __name__ == "__main__":
    main()
