#!/usr/bin/env bash
# The GPU check, for a machine that has one GPU, torch and numpy, and nothing else (no dvc,
# mlflow, pytorch-fid, no network). Runs from a checkout with PYTHONPATH=src, in under 5 min
# (the section limits add up to 435 s):
#
#   preflight  torch version, GPU name, CUDA usable
#   imports    importing ddpm_repro's core (diffusion, models, training, config) needs only
#              torch and numpy
#   bf16       bf16 autocast: network output, training_losses and Trainer.train_step finite
#              and close to fp32
#   ddp        torch.distributed with world size 1, backend nccl: DDP Trainer.train_steps
#   stages     `ddpm-repro train`, `sample` and `nll` of a smoke cell through the stages' own
#              launcher (train.nproc): 1 worker, and 2 where the machine has 2 devices (on
#              the CPU dry run: 2 gloo workers); sample and nll of 2 workers read the
#              1-worker checkpoint, and on CPU their uint8 samples must be identical and the
#              NLL agree to 1e-6; `evaluate` too where pytorch-fid is installed. Without dvc or
#              mlflow (tracking off): the CLI's own code path.
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
section stages 150 "$PY" - "$DEVICE" "$OUT_DIR" <<'PY'
"""train / sample / nll (and evaluate where pytorch-fid is importable) of one smoke cell, each
stage started as `python -m ddpm_repro.cli <stage>` with train.nproc workers, as dvc.yaml runs it."""
import importlib.util, json, os, subprocess, sys, time
from pathlib import Path
import numpy as np
import torch
from ddpm_repro.data.arrays import ImageArrays, save_arrays

device, out = sys.argv[1], Path(sys.argv[2])
work = out / "gpu_check_stages"
work.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(0)  # digits-like data, so no sklearn is needed: 17 grey levels
for name, n in (("train", 512), ("test", 64)):
    images = (rng.integers(0, 17, (n, 8, 8, 1)) * 255 // 16).astype(np.uint8)
    save_arrays(work / f"{name}.npz", ImageArrays(images, rng.integers(0, 10, n)))
gpus = torch.cuda.device_count() if device.startswith("cuda") else 0
workers = [1, 2] if device == "cpu" or gpus >= 2 else [1]
has_fid = importlib.util.find_spec("pytorch_fid") is not None
env = {**os.environ, "DDPM_REPRO_TRACKING": "0", "DDPM_REPRO_LOG_INTERVAL": "10"}
common = ["--params", "pipelines/smoke/params.yaml", "--no-progress"]
dev = "cuda" if device.startswith("cuda") else "cpu"
rows, failed = [], False
for nproc in workers:
    d = work / f"nproc{nproc}"
    n = ["--set", f"train.nproc={nproc}"]
    # every worker count samples and scores the 1-worker checkpoint, so the outputs must agree
    ckpt = ["--checkpoint", str(work / f"nproc{workers[0]}" / "ckpt")]
    stages = [
        ("train", ["--cell", "cosine-hybrid", "--data", str(work / "train.npz"), "--checkpoint-dir",
                   str(d / "ckpt"), "--set", "train.steps=200", "--set", f"train.device={dev}",
                   "--set", "train.batch_size=64", "--restart-on-change"]),
        ("sample", [*ckpt, "--device", dev, "--out", str(d / "samples.npz"),
                    "--set", "sample.num_samples=256", "--set", "sample.batch_size=64", "--set", "sample.steps="]),
        ("nll", [*ckpt, "--device", dev, "--data", str(work / "test.npz"), "--out", str(d / "nll.json"),
                 "--set", "evaluate.nll_images=64"]),
    ]
    if has_fid:
        stages += [("reference", ["--data", str(work), "--out", str(d / "ref"), "--metrics", str(d / "ref.json"),
                                  "--set", "reference.epochs=1"]),
                   ("evaluate", [*ckpt, "--device", dev, "--samples", str(d / "samples.npz"),
                                 "--reference", str(d / "ref"), "--out", str(d / "eval.json")])]
    for stage, args in stages:
        start = time.perf_counter()
        rc = subprocess.run([sys.executable, "-m", "ddpm_repro.cli", stage, *common, *n, *args], env=env).returncode
        seconds = time.perf_counter() - start
        rows.append({"nproc": nproc, "stage": stage, "rc": rc, "seconds": round(seconds, 1)})
        print(f"[stages] nproc {nproc} {stage}: rc {rc}, {seconds:.1f} s (process start included)", flush=True)
        failed |= rc != 0
if not has_fid:
    print("[stages] evaluate not run: pytorch-fid is not installed here (reference.py imports it)")
if len(workers) == 2 and not failed:
    a, b = (np.load(work / f"nproc{k}" / "samples.npz")["images"] for k in workers)
    x, y = (json.loads((work / f"nproc{k}" / "nll.json").read_text())["nll_per_image"] for k in workers)
    rel = float(np.max(np.abs(np.subtract(x, y)) / np.abs(x)))
    same = bool(np.array_equal(a, b))
    print(f"[stages] 1 vs 2 workers on the same checkpoint: uint8 samples identical {same} "
          f"({int((a != b).sum())} of {a.size} values differ), NLL max rel diff {rel:.2e}")
    if device == "cpu" and (not same or rel > 1e-6):  # CUDA kernels may differ run to run
        print("[stages] FAILED: on CPU the samples must be identical and the NLL agree to 1e-6")
        failed = True
(out / "gpu_check_stages.json").write_text(json.dumps({"device": device, "rows": rows}, indent=2) + "\n")
sys.exit(1 if failed else 0)
PY
# Whatever it measured before a timeout is already in $OUT_DIR (saved after every figure).
section bench 120 "$PY" benchmarks/bench.py --device "$DEVICE" --rounds 1 --out "$OUT_DIR" ${PEER_FLAG[@]+"${PEER_FLAG[@]}"} ${QUICK[@]+"${QUICK[@]}"}

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "GPU CHECK FAILED: ${failed[*]} (results and logs in $OUT_DIR)"
    exit 1
fi
echo "GPU CHECK PASSED (results and logs in $OUT_DIR)"
