"""bf16 numerics on the digits preset: does the bf16 loss curve stay within the fp32 runs'
seed-to-seed spread? (The gap between bf16 and fp32 runs of the same seed, against the gaps
between fp32 runs of different seeds; and the share of logged steps inside the min-max band.)

Trains the default profile's cosine-hybrid cell (params.yaml: the digits model, hybrid loss,
learned variance) from the same data, in fp32 with several seeds and in bf16 autocast with the
first of them, logging the loss averaged over every `--log-every` steps. Writes
benchmarks/results/bf16_curve.{json,png}: the fp32 band (min to max over seeds at each logged
step), the bf16 curve, and the share of bf16 points inside the band.

    .venv/bin/python benchmarks/bf16_curve.py            # about 4 minutes on 2 CPU cores

A benchmark, not a test: it prints the result and asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def train_curve(seed: int, bf16: bool, steps: int, log_every: int, data) -> list[tuple[int, float]]:
    """The loss curve of one run of the default cosine-hybrid cell."""
    from ddpm_repro.config import load_config
    from ddpm_repro.training import Trainer
    from ddpm_repro.training.metrics_log import CsvMetricsLog

    overrides = [
        f"train.seed={seed}",
        f"train.bf16={str(bf16).lower()}",
        f"train.steps={steps}",
        f"train.log_every={log_every}",
        f"train.checkpoint_every={steps}",
        "train.device=cpu",
    ]
    config = load_config(ROOT / "params.yaml", overrides, cell="cosine-hybrid")
    with tempfile.TemporaryDirectory() as out:
        log = CsvMetricsLog(Path(out) / "metrics.csv", resume_step=0)
        Trainer(config, data, out, callbacks=(log,), progress=False).run()
        return [(int(row["step"]), float(row["loss"])) for row in log.rows()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=600, help="training steps per run")
    parser.add_argument("--seeds", type=int, default=3, help="fp32 runs (seeds 0..N-1)")
    parser.add_argument("--log-every", type=int, default=20, help="steps per logged mean loss")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="output folder")
    args = parser.parse_args()

    from ddpm_repro.config import load_config
    from ddpm_repro.data.sources import load_dataset

    cfg = load_config(ROOT / "params.yaml").data
    data = load_dataset(cfg.dataset, cfg.root, cfg.image_size, cfg.test_fraction, cfg.seed)[0]
    fp32 = {}
    for seed in range(args.seeds):
        print(f"fp32 seed {seed} ...", flush=True)
        fp32[seed] = train_curve(seed, False, args.steps, args.log_every, data)
    print("bf16 seed 0 ...", flush=True)
    bf16 = train_curve(0, True, args.steps, args.log_every, data)

    steps = [s for s, _ in bf16]
    low = [min(run[i][1] for run in fp32.values()) for i in range(len(steps))]
    high = [max(run[i][1] for run in fp32.values()) for i in range(len(steps))]
    inside = [lo <= v <= hi for (_, v), lo, hi in zip(bf16, low, high, strict=True)]
    # the first logs fall fast and differ between seeds most; the settled part is the test
    settled = inside[len(inside) // 4 :]

    # bf16 follows its own seed's fp32 run; compare that gap with the gaps between seeds
    def mean_gap(a: list, b: list) -> float:
        return sum(abs(x[1] - y[1]) for x, y in zip(a, b, strict=True)) / len(a)

    runs = list(fp32.values())
    seed_gap = [mean_gap(a, b) for i, a in enumerate(runs) for b in runs[i + 1 :]]
    bf16_gap = mean_gap(bf16, fp32[0])
    result = {
        "cell": "cosine-hybrid (params.yaml, digits preset)",
        "steps": args.steps,
        "log_every": args.log_every,
        "fp32_seeds": list(fp32),
        "bf16_seed": 0,
        "share_inside_fp32_band": round(sum(inside) / len(inside), 3),
        "share_inside_after_first_quarter": round(sum(settled) / len(settled), 3),
        "mean_abs_gap_bf16_vs_fp32_same_seed": round(bf16_gap, 5),
        "mean_abs_gap_between_fp32_seeds": round(sum(seed_gap) / len(seed_gap), 5),
        "curves": {"fp32": {str(k): v for k, v in fp32.items()}, "bf16": bf16},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bf16_curve.json").write_text(json.dumps(result, indent=1) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=120)
    band = f"fp32, {args.seeds} seeds (min-max)"
    ax.fill_between(steps, low, high, color="tab:blue", alpha=0.25, label=band)
    ax.plot(steps, [v for _, v in bf16], color="tab:red", lw=1.2, label="bf16 autocast, seed 0")
    ax.plot(steps, [v for _, v in fp32[0]], color="tab:blue", lw=0.8, ls="--", label="fp32, seed 0")
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel(f"hybrid loss (mean of {args.log_every} steps)")
    ax.set_title("digits, cosine-hybrid: bf16 against the fp32 seed spread")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "bf16_curve.png")
    print(
        f"mean |loss gap|: bf16 vs fp32 of the same seed {bf16_gap:.4f}, between fp32 seeds "
        f"{result['mean_abs_gap_between_fp32_seeds']:.4f}; "
        f"bf16 inside the fp32 band at {result['share_inside_fp32_band']:.0%} of logged steps "
        f"({result['share_inside_after_first_quarter']:.0%} after the first quarter) "
        f"-> {out / 'bf16_curve.png'}"
    )


if __name__ == "__main__":
    main()
