"""Does keeping freed memory (ddpm_repro/allocator.py, which `ddpm-repro` applies) speed up
training on CPU?

Runs the project's training step (`Trainer.train_step`, as benchmarks/bench.py builds it: the
Improved DDPM hybrid cell) in fresh processes, with the allocator settings `ddpm-repro` applies
("keep") and with glibc's defaults ("default"), alternating keep, default, keep, default ... for
`--rounds` pairs per preset. Each process builds the model, takes `--warmup` steps, then times
`--steps` steps. Prints per pair: the timed steps' images/s, the whole process's wall, user and
system seconds, and the ratio default / keep of the wall time; then each figure's median and
range over the pairs.

  .venv/bin/python benchmarks/allocator.py                        # both presets, 3 pairs, ~8 min
  .venv/bin/python benchmarks/allocator.py --presets digits --rounds 5

Writes benchmarks/results/allocator.{json,md}. Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))
MARK = "@@allocator "
# steps timed per process, warm-up steps, batch: about 20 s a process on 2 cores
SIZES = {"iddpm-cifar10": (6, 2, 16), "digits": (300, 20, 64)}


def worker(mode: str, preset: str, steps: int, warmup: int, batch: int) -> dict:
    """Time `steps` training steps of `preset` in this process, allocator set by `mode`."""
    from ddpm_repro.allocator import keep_freed_memory

    applied = keep_freed_memory() if mode == "keep" else False
    import bench
    import numpy as np
    import torch

    from ddpm_repro.data.arrays import ImageArrays
    from ddpm_repro.training import Trainer

    p = bench.PRESETS[preset]
    size, ch = p["image_size"], p["channels"]
    config = bench._ours_config(preset, "fp32", "cpu", batch, p["timesteps"])
    images = np.random.default_rng(0).integers(0, 256, (256, size, size, ch), dtype=np.uint8)
    data = ImageArrays(images=images, labels=np.full(256, -1, np.int64))
    with tempfile.TemporaryDirectory() as ckpt_dir:
        torch.manual_seed(0)
        trainer = Trainer(config, data, ckpt_dir, progress=False)
        for _ in range(warmup):
            trainer.train_step()
        start = time.perf_counter()
        for _ in range(steps):
            trainer.train_step()
        seconds = time.perf_counter() - start
    return {"applied": applied, "images_per_s": steps * batch / seconds}


def run_one(mode: str, preset: str) -> dict:
    """One fresh process: its result, wall seconds, and user and system CPU seconds."""
    steps, warmup, batch = SIZES[preset]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    args = [mode, preset, str(steps), str(warmup), str(batch)]
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
    return f"{statistics.median(values):.{digits}g} ({min(values):.{digits}g}-{max(values):.{digits}g})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", default=",".join(SIZES), help="comma-separated subset")
    ap.add_argument("--rounds", type=int, default=3, help="keep/default pairs per preset")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        mode, preset, steps, warmup, batch = args.worker
        print(MARK + json.dumps(worker(mode, preset, int(steps), int(warmup), int(batch))), flush=True)
        return 0

    from ddpm_repro.reporting.timing import machine

    presets = [p for p in args.presets.split(",") if p]
    bad = [p for p in presets if p not in SIZES]
    if bad:
        ap.error(f"unknown preset {bad}; valid: {', '.join(SIZES)}")
    results = {"machine": machine(), "rounds": args.rounds, "sizes": SIZES, "runs": []}
    for preset in presets:
        for r in range(args.rounds):
            pair = {}
            for mode in ("keep", "default"):
                pair[mode] = run_one(mode, preset)
                print(f"[allocator] {preset} round {r + 1} {mode}: {pair[mode]}", file=sys.stderr, flush=True)
            results["runs"].append({"preset": preset, "round": r + 1, **pair})

    lines = [
        f"Measured on {results['machine']}; {args.rounds} pairs per preset, keep and default "
        "alternating, each a fresh process (`.venv/bin/python benchmarks/allocator.py`).",
        "",
        "| preset | settings | train img/s | process wall s | user s | system s | wall default / keep |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for preset in presets:
        runs = [r for r in results["runs"] if r["preset"] == preset]
        ratios = [r["default"]["wall_s"] / r["keep"]["wall_s"] for r in runs]
        for mode in ("keep", "default"):
            figs = [r[mode] for r in runs]
            lines.append(
                f"| {preset} | {mode} | {span([f['images_per_s'] for f in figs], 4)} | "
                f"{span([f['wall_s'] for f in figs])} | {span([f['user_s'] for f in figs])} | "
                f"{span([f['sys_s'] for f in figs])} | {span(ratios) if mode == 'keep' else ''} |"
            )
    table = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "allocator.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "allocator.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
