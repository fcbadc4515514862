"""Does running cells side by side (`ddpm-repro repro --jobs N`) shorten the pipeline?

Copies the working tree into a scratch folder with a cut-down default profile (the default's
model, evaluation and curve; `--steps` training steps, `--losses` for a smaller grid), then runs the
whole pipeline from nothing with `--jobs 1` (DVC's one stage at a time, each stage with every
core's threads) and with `--jobs N`, alternating A B A B for `--rounds` pairs. Prints each
run's wall time and, pair by pair, the ratio jobs-1 / jobs-N with its median and range.

  .venv/bin/python benchmarks/parallel_cells.py --jobs 2 --rounds 2 --steps 200 --losses simple,hybrid

Writes benchmarks/results/parallel_cells.{json,md}. Run it on an idle machine: any other job
on the cores changes both sides. About 5 min a pair at those settings on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from ddpm_repro.reporting.timing import machine

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def scratch_repo(dest: Path, steps: int, losses: list[str] | None) -> Path:
    """A git repo at dest with the tracked and untracked (not ignored) files of this tree, the
    default params with train.steps = steps (and grid.losses = losses when given), and no
    dvc.lock: every stage runs."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\n")
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    (dest / "dvc.lock").unlink(missing_ok=True)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["train"]["steps"] = steps
    if losses:
        params["grid"]["losses"] = losses
    params["tracking"]["enabled"] = False
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git = ["git", "-c", "user.email=bench@ddpm-repro", "-c", "user.name=bench"]
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "benchmark copy"], cwd=dest, check=True)
    return dest


def one_run(template: Path, work: Path, jobs: int) -> float:
    """Wall seconds of `ddpm-repro repro --jobs JOBS` on a fresh copy of the template."""
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(template, work, symlinks=True)
    env = {**os.environ, "PYTHONPATH": str(work / "src"), "DDPM_REPRO_TRACKING": "0"}
    env.pop("OMP_NUM_THREADS", None)
    start = time.perf_counter()
    result = subprocess.run(
        [shutil.which("ddpm-repro") or "ddpm-repro", "repro", "--jobs", str(jobs)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"parallel_cells: --jobs {jobs} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2, help="the side-by-side run's --jobs (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="A B pairs (default 3)")
    parser.add_argument("--steps", type=int, default=200, help="train.steps of every cell (default 200)")
    parser.add_argument("--losses", default="", help="grid.losses, comma-separated (default: the profile's)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="parallel_cells_") as tmp:
        losses = [x for x in args.losses.split(",") if x] or None
        template = scratch_repo(Path(tmp) / "template", args.steps, losses)
        rounds = []
        for r in range(args.rounds):
            one = one_run(template, Path(tmp) / "run", 1)
            many = one_run(template, Path(tmp) / "run", args.jobs)
            rounds.append({"jobs_1_s": round(one, 1), "jobs_n_s": round(many, 1), "ratio": one / many})
            print(f"round {r + 1}: jobs 1 {one:.1f} s, jobs {args.jobs} {many:.1f} s, ratio {one / many:.3f}")
    ratios = [x["ratio"] for x in rounds]
    result = {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "profile": f"default profile, train.steps {args.steps}"
        + (f", grid.losses {args.losses}" if args.losses else ""),
        "jobs": args.jobs,
        "rounds": rounds,
        "ratio_median": statistics.median(ratios),
        "ratio_range": [min(ratios), max(ratios)],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "parallel_cells.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# Cells side by side: `ddpm-repro repro --jobs 1` against `--jobs {args.jobs}`",
        "",
        f"{result['machine']}; {result['date']}; the {result['profile']}; "
        "the whole pipeline from nothing, A B alternating.",
        "",
        f"| round | --jobs 1 (s) | --jobs {args.jobs} (s) | ratio |",
        "|---:|---:|---:|---:|",
    ]
    for i, x in enumerate(rounds, 1):
        lines.append(f"| {i} | {x['jobs_1_s']} | {x['jobs_n_s']} | {x['ratio']:.3f} |")
    lo, hi = result["ratio_range"]
    median = result["ratio_median"]
    lines += ["", f"Speed-up (jobs 1 / jobs {args.jobs}): median {median:.3f}, range {lo:.3f}-{hi:.3f}."]
    (args.out / "parallel_cells.md").write_text("\n".join(lines) + "\n")
    print(lines[-1])


if __name__ == "__main__":
    main()
