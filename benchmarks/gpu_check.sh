#!/usr/bin/env bash
# The GPU check, for a machine that has one GPU, torch and numpy, and nothing else (no dvc,
# mlflow, pytorch-fid, no network). Runs from a checkout with PYTHONPATH=src, in under 5 min
# (the section limits add up to 285 s):
#
#   preflight  torch version, GPU name, CUDA usable
#   imports    importing ddpm_repro's core (diffusion, models, training, config) needs only
#              torch and numpy
#   bf16       bf16 autocast: network output, training_losses and Trainer.train_step finite
#              and close to fp32
#   ddp        torch.distributed with world size 1, backend nccl: DDP Trainer.train_steps
#   bench      bench.py on the GPU: matmul peaks, train/sample/NLL throughput, FLOP
#              utilisation (bf16 included), peak memory (peer too where it is importable
#              and GPU_CHECK_PEER=1)
#
# Results go to $OUT if set, else benchmarks/results/. Each section has its own time limit;
# a failed section does not stop the others, and the exit status is 1 if any failed.
#
#   bash benchmarks/gpu_check.sh                          # on the GPU machine
#   GPU_CHECK_DEVICE=cpu PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh --quick  # CPU dry run
#
# PYTHON picks the interpreter (default: python3, else python).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT_DIR="${OUT:-benchmarks/results}"
mkdir -p "$OUT_DIR"
export OUT="$OUT_DIR"
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
PY="${PYTHON:-$(command -v python3 || command -v python)}"
DEVICE="${GPU_CHECK_DEVICE:-cuda}"
QUICK=()
if [[ "${1:-}" == "--quick" ]]; then QUICK=(--quick); fi
PEER_FLAG=(--skip-peer)
if [[ "${GPU_CHECK_PEER:-0}" == "1" ]]; then PEER_FLAG=(); fi

failed=()
# section NAME SECONDS COMMAND...: run under a time limit, log to $OUT_DIR/gpu_check_NAME.log
section() {
    local name="$1" limit="$2"
    shift 2
    echo "=== $name (limit ${limit}s) ==="
    local start=$SECONDS rc=0
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$OUT_DIR/gpu_check_$name.log" || rc=$?
    if [[ $rc -ne 0 ]]; then
        [[ $rc -eq 124 ]] && echo "--- $name: timed out after ${limit}s"
        failed+=("$name(rc=$rc)")
    fi
    echo "--- $name: rc=$rc in $((SECONDS - start))s"
}

section preflight 30 "$PY" - "$DEVICE" <<'PY'
import platform, sys
import torch
device = sys.argv[1]
print(f"python {platform.python_version()}  torch {torch.__version__}  cuda {torch.version.cuda}  "
      f"cudnn {torch.backends.cudnn.version()}")
if device.startswith("cuda"):
    if not torch.cuda.is_available():
        sys.exit("no usable CUDA device: torch.cuda.is_available() is False")
    p = torch.cuda.get_device_properties(0)
    print(f"GPU {torch.cuda.get_device_name(0)}  {p.total_memory / 2**30:.0f} GiB  sm_{p.major}{p.minor}  "
          f"count {torch.cuda.device_count()}  nccl {torch.cuda.nccl.version()}")
    print(f"tf32: matmul {torch.backends.cuda.matmul.allow_tf32}  cudnn {torch.backends.cudnn.allow_tf32}")
else:
    print(f"dry run on {device}: no GPU figures")
try:
    import numpy
    print(f"numpy {numpy.__version__}")
except ImportError:
    sys.exit("numpy is not installed: ddpm_repro.diffusion needs it (pip install numpy)")
PY
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "GPU CHECK FAILED: preflight (see above); nothing else was run"
    exit 1
fi
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total,utilization.gpu --format=csv || true
fi

section imports 30 "$PY" benchmarks/gpu_check.py imports --device "$DEVICE" --out "$OUT_DIR"
section bf16 60 "$PY" benchmarks/gpu_check.py bf16 --device "$DEVICE" --out "$OUT_DIR" ${QUICK[@]+"${QUICK[@]}"}
section ddp 45 "$PY" benchmarks/gpu_check.py ddp --device "$DEVICE" --out "$OUT_DIR" ${QUICK[@]+"${QUICK[@]}"}
# Whatever it measured before a timeout is already in $OUT_DIR (saved after every figure).
section bench 120 "$PY" benchmarks/bench.py --device "$DEVICE" --out "$OUT_DIR" ${PEER_FLAG[@]+"${PEER_FLAG[@]}"} ${QUICK[@]+"${QUICK[@]}"}

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "GPU CHECK FAILED: ${failed[*]} (results and logs in $OUT_DIR)"
    exit 1
fi
echo "GPU CHECK PASSED (results and logs in $OUT_DIR)"
