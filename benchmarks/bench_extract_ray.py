"""Music extraction throughput on this machine: the serial engine against `--engine ray` (a local Ray instance).

    nice .venv/bin/python benchmarks/bench_extract_ray.py --music .media/usr/share/games/wesnoth/1.16/data/core/music
    nice .venv/bin/python benchmarks/bench_extract_ray.py --encoder real --limit 6     # real-size AST, random weights

`--encoder tiny` (the test AST: hidden 32, 2 layers) makes the run measure decoding and the engines' own overhead;
`--encoder real` is the AudioSet AST architecture with random weights in bf16 where the CPU has it (the encoder's
cost per window is the real one). Each engine writes a fresh store. Ray is started once (`ray.init(num_cpus=N)`)
and its start-up is reported apart; the Ray time includes everything after it: hashing tasks, actor start-up
(each actor loads the encoder), decoding, encoding and the merge into the store.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

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
    args = parser.parse_args()
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
    print(f"{len(files)} music files ({sum(p.stat().st_size for p in files) / 1e6:.0f} MB), {args.encoder} AST")

    import ray

    started = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    print(f"ray.init(num_cpus={args.cpus}): {time.perf_counter() - started:.1f} s")
    for engine in ("serial", "ray"):
        store = workdir / f"store-{engine}"
        shutil.rmtree(store, ignore_errors=True)
        started = time.perf_counter()
        report = extract_features(store, music=files, encoders=options, engine=engine)
        seconds = time.perf_counter() - started
        music = report.modalities["music"]
        print(f"{engine:6}: {music.encoded} encoded, {len(music.failures)} failed in {seconds:.1f} s: "
              f"{len(files) / seconds:.2f} files/s")  # fmt: skip
    ray.shutdown()


if __name__ == "__main__":
    main()
