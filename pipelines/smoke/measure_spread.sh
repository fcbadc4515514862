#!/usr/bin/env bash
# Measure how much the pinned smoke metrics move without any change to the code: the smoke
# pipeline of the working tree, run again and under proxies for other CPU kinds (ATen's
# AVX2 kernels instead of AVX-512, oneDNN limited to AVX2, one thread instead of two). Prints
# each pinned metric's largest difference from the first run; the tolerances in pins.json
# are set well above these (see the README, "CI regression"). About 4 minutes per variant.
set -euo pipefail
root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
out=${1:-${TMPDIR:-/tmp}/ddpm-repro-spread}
export PATH="$root/.venv/bin:$PATH" DDPM_REPRO_TRACKING=0 MLFLOW_DISABLE_TELEMETRY=true
declare -A variants=(
  [a-default]=""
  [b-repeat]=""
  [c-avx2]="ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2"
  [d-one-thread]="OMP_NUM_THREADS=1 MKL_NUM_THREADS=1"
)
for name in $(printf '%s\n' "${!variants[@]}" | sort); do
  dir="$out/$name"
  rm -rf "$dir" && mkdir -p "$dir"
  # the working tree as git would clone it (uncommitted edits included), without the results
  git -C "$root" ls-files -co --exclude-standard | grep -v -e '^reports/' -e '^dvc.lock$' \
    | while read -r f; do [ -f "$root/$f" ] && echo "$f"; done \
    | tar -C "$root" -cf - -T - | tar -C "$dir" -xf -
  git -C "$dir" init -q && git -C "$dir" add -A
  git -C "$dir" -c user.email=spread@ddpm-repro -c user.name=spread commit -qm "spread run"
  cp "$dir/pipelines/smoke/params.yaml" "$dir/params.yaml"
  echo "== $name: ${variants[$name]:-(no change)}"
  (cd "$dir" && env ${variants[$name]} dvc repro --quiet)
done
python - "$out" <<'PY'
import json, sys
from pathlib import Path
from ddpm_repro.config import load_config
from ddpm_repro.regression import PINNED, read_metrics
out = Path(sys.argv[1])
runs = sorted(p for p in out.iterdir() if p.is_dir())
cells = load_config(runs[0] / "params.yaml").grid.cells
base = read_metrics(runs[0] / "reports" / "cells", cells)
for run in runs[1:]:
    got = read_metrics(run / "reports" / "cells", cells)
    for metric in PINNED:
        diffs = [abs(got[c][metric] - base[c][metric]) for c in cells]
        rels = [d / abs(base[c][metric]) for d, c in zip(diffs, cells)]
        print(f"{run.name:14s} {metric:14s} max |diff| {max(diffs):.3g}  max rel {max(rels):.3g}")
PY
