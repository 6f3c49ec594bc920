#!/usr/bin/env bash
# One command for a CUDA machine: MaDe evaluation of 512 pairs, the training step at batch 512, AST extraction and
# grounding benchmarks on the GPU, then a 3-epoch planted-signal training (mgsv data synthetic + mgsv train + mgsv
# eval), printed as one table beside the issue's targets for one H100. Meant to finish in under 8 minutes there.
#
#   benchmarks/gpu_check.sh                  # DEVICE=cuda, full sizes
#   benchmarks/gpu_check.sh --cpu            # DEVICE=cpu, small sizes: checks that the script itself works
#   DEVICE=cuda:1 PYTHON=.venv/bin/python benchmarks/gpu_check.sh --out /tmp/gpu-check
#
# Every step runs even if another fails; its log and JSON stay in the output folder (printed at the end). A step
# whose benchmark lacks the flags it needs (--device, --json) is reported as "n/a" with the reason, not run on
# the wrong device. Run it from the repository root with mgsv installed in $PYTHON.
set -uo pipefail

DEVICE="${DEVICE:-cuda}"
SMALL="${SMALL:-0}"
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) DEVICE=cpu; SMALL=1 ;;
    --small) SMALL=1 ;;
    --out) OUT="$2"; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1 (use --cpu, --small, --out DIR)" >&2; exit 2 ;;
  esac
  shift
done
PYTHON="${PYTHON:-python}"
HERE="$(cd "$(dirname "$0")" && pwd)"
OUT="${OUT:-$(mktemp -d -t mgsv-gpu-check.XXXXXX)}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

if [ "$SMALL" = 1 ]; then
  EVAL_PAIRS=16; EVAL_PRECISION=bf16; TRAIN_BATCH=8; REPEATS=1
  AST_SECONDS=5; AST_BATCH=2; GROUND_TRACKS=40; GROUND_REPEATS=2
  SYN=(--tracks 16 --train-videos 64 --val-size 8 --test-size 8)
  TRAIN_SET=(--set train.batch_size=16 --set model.dim=32 --set model.detr_ffn_dim=64 --set model.enhance_ffn_dim=64
             --set model.decoder_layers=2)
  STEP_LIMIT=300
else
  EVAL_PAIRS=512; EVAL_PRECISION=both; TRAIN_BATCH=512; REPEATS=10
  AST_SECONDS=240; AST_BATCH=32; GROUND_TRACKS=4000; GROUND_REPEATS=20
  SYN=(--tracks 400 --train-videos 2048 --val-size 200 --test-size 200); TRAIN_SET=()
  STEP_LIMIT=150
fi

supports() {  # supports SCRIPT FLAG...: every FLAG appears in the script's --help
  local help
  help="$("$PYTHON" "$HERE/$1" --help 2>/dev/null)" || return 1
  shift
  for flag in "$@"; do grep -q -- "$flag" <<<"$help" || return 1; done
}

step() {  # step NAME COMMAND...: stdout -> NAME.json, stderr -> NAME.log, seconds and exit code -> NAME.status
  local name="$1" started rc
  shift
  echo "== $name: $*" >&2
  started=$(date +%s%N)
  timeout "$STEP_LIMIT" "$@" >"$OUT/$name.json" 2>"$OUT/$name.log"
  rc=$?
  echo "{\"rc\": $rc, \"ms\": $(( ($(date +%s%N) - started) / 1000000 ))}" >"$OUT/$name.status"
  [ "$rc" = 0 ] || echo "   $name failed (exit $rc): $OUT/$name.log" >&2
}

skip() {  # skip NAME REASON
  echo "== $1: n/a ($2)" >&2
  printf '%s\n' "$2" >"$OUT/$1.skipped"
}

"$PYTHON" - "$DEVICE" >"$OUT/device.json" <<'PY' || { echo "gpu_check.sh: $DEVICE is not usable here" >&2; exit 1; }
import json, sys
import torch
from mgsv.cli.common import for_cli
from mgsv.devices import device_name
from mgsv.errors import MgsvError
try:
    device = device_name(sys.argv[1])
except MgsvError as exc:
    sys.exit(f"error: {for_cli(str(exc))}")
name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "CPU"
print(json.dumps({"device": device, "name": name, "torch": torch.__version__, "cuda": torch.version.cuda}))
PY

step eval "$PYTHON" "$HERE/bench_made.py" --device "$DEVICE" --skip-train --precision "$EVAL_PRECISION" \
  --eval-pairs "$EVAL_PAIRS" --repeats "$REPEATS" --json
step train "$PYTHON" "$HERE/bench_made.py" --device "$DEVICE" --skip-eval --precision bf16 \
  --train-batch "$TRAIN_BATCH" --repeats "$REPEATS" --json

if supports bench_encoders.py --device --json; then
  step ast "$PYTHON" "$HERE/bench_encoders.py" --device "$DEVICE" --only ast --json --seconds "$AST_SECONDS" \
    --ast-batches "$AST_BATCH" --ast-fp32-batches "$AST_BATCH" --repeats "$REPEATS"
else
  skip ast "bench_encoders.py has no --device/--json yet (issue-16c adds them)"
fi

if supports bench_ground.py --device --json; then
  step ground "$PYTHON" "$HERE/bench_ground.py" --device "$DEVICE" --json --skip-clip --tracks "$GROUND_TRACKS" \
    --repeats "$GROUND_REPEATS" --workdir "$OUT/ground-work"
else
  skip ground "bench_ground.py has no --device/--json yet: grounding was not timed on $DEVICE"
fi

# The planted-signal training: the real commands, 3 epochs, bf16; R@1 and MoR@1 far above chance show it learned.
step synthetic "$PYTHON" -m mgsv data synthetic --out "$OUT/planted/data" "${SYN[@]}" --force
step planted "$PYTHON" -m mgsv train --preset made --data "$OUT/planted/data" --out "$OUT/planted/run" \
  --device "$DEVICE" --precision bf16 --set train.epochs=3 "${TRAIN_SET[@]}" --no-progress
step planted_eval "$PYTHON" -m mgsv eval "$OUT/planted/run" --split test --device "$DEVICE" \
  --precision bf16 --json --force

"$PYTHON" "$HERE/_gpu_table.py" "$OUT" "$SMALL"
