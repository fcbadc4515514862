"""Does a CPU fast path of the training step pay off? New against old, in whole processes.

Each comparison runs the project's training step (`Trainer.train_step`, as benchmarks/bench.py
builds it: the Improved DDPM hybrid cell) in fresh processes, with the project's path ("new")
and with the one it replaced ("old"), alternating new, old, new, old ... for `--rounds` pairs
per preset. Each process builds the model, takes the warm-up steps, then times the rest.

  allocator  freed memory kept for reuse (ddpm_repro/allocator.py, which `ddpm-repro` applies)
             against glibc's defaults; fp32, both presets
  dropout    the CPU dropout layer (numpy's PCG64 mask, ddpm_repro/models/layers.py) against
             torch's nn.Dropout (`bernoulli_`); iddpm-cifar10 (dropout 0.3), fp32
  attention  bf16 attention as two matmuls (`matmul_attention`) against the
             scaled_dot_product_attention math kernel it replaced; iddpm-cifar10, bf16

Except in `allocator`'s old processes, every process keeps freed memory, as `ddpm-repro` does.
Prints per pair: the timed steps' images/s, the whole process's wall, user and system seconds,
and the ratios new / old of the timed steps' images/s and old / new of the wall time (above 1:
the new path is faster); then each figure's median and range over the pairs.

  .venv/bin/python benchmarks/train_ab.py allocator              # 3 pairs per preset, ~4 min
  .venv/bin/python benchmarks/train_ab.py dropout --rounds 5

Writes benchmarks/results/<comparison>.{json,md}. Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))
MARK = "@@train-ab "
# steps timed per process, warm-up steps, batch: about 20 s a process on 2 cores
SIZES = {"iddpm-cifar10": (6, 2, 16), "digits": (300, 20, 64)}
# comparison -> its two paths' names (new, old) and {preset: precision}
COMPARISONS = {
    "allocator": (("keep", "default"), {"iddpm-cifar10": "fp32", "digits": "fp32"}),
    "dropout": (("numpy mask", "bernoulli_"), {"iddpm-cifar10": "fp32"}),
    "attention": (("matmul", "sdpa math"), {"iddpm-cifar10": "bf16"}),
}


def _old_path(comparison: str, trainer) -> None:
    """Put back, in this process, the path that `comparison`'s new one replaced."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from ddpm_repro.models import layers

    if comparison == "dropout":
        for module in list(trainer.model.modules()):
            for name, child in module.named_children():
                if isinstance(child, layers.Dropout):
                    setattr(module, name, torch.nn.Dropout(child.p))
    elif comparison == "attention":

        def sdpa_math(q, k, v):
            with sdpa_kernel(SDPBackend.MATH):
                return F.scaled_dot_product_attention(q, k, v)

        layers.matmul_attention = sdpa_math


def worker(comparison: str, path: str, preset: str, steps: int, warmup: int, batch: int) -> dict:
    """Time `steps` training steps of `preset` in this process, on `path` (new or old)."""
    from ddpm_repro.allocator import keep_freed_memory

    applied = keep_freed_memory() if (comparison, path) != ("allocator", "old") else False
    import bench
    import torch

    precision = COMPARISONS[comparison][1][preset]
    with tempfile.TemporaryDirectory() as ckpt_dir:
        torch.manual_seed(0)
        trainer = bench._ours_trainer(preset, precision, "cpu", batch, ckpt_dir)
        if path == "old":
            _old_path(comparison, trainer)
        for _ in range(warmup):
            trainer.train_step()
        start = time.perf_counter()
        for _ in range(steps):
            trainer.train_step()
        seconds = time.perf_counter() - start
    return {"allocator_applied": applied, "images_per_s": steps * batch / seconds}


def run_one(comparison: str, path: str, preset: str) -> dict:
    """One fresh process: its result, wall seconds, and user and system CPU seconds."""
    steps, warmup, batch = SIZES[preset]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    args = [comparison, path, preset, str(steps), str(warmup), str(batch)]
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", *args], capture_output=True, text=True, check=True
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith(MARK))
    return json.loads(line[len(MARK) :]) | {
        "wall_s": wall,
        "user_s": after.ru_utime - before.ru_utime,
        "sys_s": after.ru_stime - before.ru_stime,
    }


def span(values: list[float], digits: int = 3) -> str:
    """Median and range, "median (min-max)", as bench.py writes them."""
    import bench

    return bench._span(bench.spread("v", values), "v", digits)


def markdown(results: dict) -> str:
    """The results as a Markdown table: per preset and path, median (range) over the pairs."""
    comparison, names = results["comparison"], results["paths"]
    presets = COMPARISONS[comparison][1]
    lines = [
        f"Measured on {results['machine']}; {results['rounds']} pairs per preset, new and old "
        f"alternating, each a fresh process (`.venv/bin/python benchmarks/train_ab.py {comparison}`).",
        "",
        "| preset | precision | path | train img/s | process wall s | user s | system s "
        "| train img/s new / old | wall old / new |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for preset, precision in presets.items():
        runs = [r for r in results["runs"] if r["preset"] == preset]
        speedup = [r["new"]["images_per_s"] / r["old"]["images_per_s"] for r in runs]
        walls = [r["old"]["wall_s"] / r["new"]["wall_s"] for r in runs]
        for path in ("new", "old"):
            figs = [r[path] for r in runs]
            ratios = f"{span(speedup)} | {span(walls)}" if path == "new" else " | "
            lines.append(
                f"| {preset} | {precision} | {path}: {names[path]} | "
                f"{span([f['images_per_s'] for f in figs], 4)} | {span([f['wall_s'] for f in figs])} | "
                f"{span([f['user_s'] for f in figs])} | {span([f['sys_s'] for f in figs])} | {ratios} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("comparison", nargs="?", choices=sorted(COMPARISONS))
    ap.add_argument("--rounds", type=int, default=3, help="new/old pairs per preset")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        comparison, path, preset, steps, warmup, batch = args.worker
        result = worker(comparison, path, preset, int(steps), int(warmup), int(batch))
        print(MARK + json.dumps(result), flush=True)
        return 0
    if args.comparison is None:
        ap.error(f"name a comparison: {', '.join(COMPARISONS)}")

    from ddpm_repro.reporting.timing import machine

    (new_name, old_name), presets = COMPARISONS[args.comparison]
    results = {
        "comparison": args.comparison,
        "paths": {"new": new_name, "old": old_name},
        "machine": machine(),
        "rounds": args.rounds,
        "sizes": {p: SIZES[p] for p in presets},
        "runs": [],
    }
    for preset in presets:
        for r in range(args.rounds):
            pair = {}
            for path in ("new", "old"):
                pair[path] = run_one(args.comparison, path, preset)
                print(f"[train_ab] {preset} round {r + 1} {path}: {pair[path]}", file=sys.stderr, flush=True)
            results["runs"].append({"preset": preset, "round": r + 1, **pair})

    table = markdown(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.comparison}.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / f"{args.comparison}.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
