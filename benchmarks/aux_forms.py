"""The AUX loss's x_0-distribution forms, measured on the default profile with the same seeds.

Trains linear-aux and cosine-aux once per variant through the CLI (train, sample, nll,
evaluate without the step curve), then writes a table of NLL (with its s.e. over the test
images), FD in the reference classifier's features (no uncertainty: one draw of
`--samples` samples), the final training loss and the sample grids:

  model          aux_variance: model (the x_0-distribution the model's reverse step implies)
  model-floor    the same, with each bin's probability floored at 1e-12 in training only,
                 as improved-diffusion's decoder does and this library now does (evaluation
                 stays exact); every variant not named *-floor trains without the floor
  model-lsm      the same, with vlb's loss-second-moment timestep sampler (the matched pair)
  posterior      aux_variance: posterior (N(clip(x0_hat), 1 - alpha_bar_t))
  decoder        aux_variance: decoder (the decoder's variance at every t)
  posterior-floor  posterior, floored in training like model-floor
  posterior-lsm  posterior with vlb's loss-second-moment timestep sampler
  vlb            linear-vlb and cosine-vlb themselves, the cells aux is compared with

  .venv/bin/python benchmarks/aux_forms.py --data data/prepared --reference reference

Checkpoints, samples and per-cell JSON go to --work (benchmarks/aux_forms_work/, ignored by
git); the table to --results (benchmarks/results/aux_forms.{json,md}).

Needs a prepared default run (`make run` leaves data/prepared and reference). About 3 min a
cell on 2 cores: 55 min for the 16 cells. Rerunning skips the cells whose outputs exist.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from ddpm_repro.reporting.timing import machine

# variant: (aux_variance, aux's timestep sampler); None: the vlb cells themselves
FORMS = {
    "model": ("model", "uniform"),
    "model-floor": ("model", "uniform"),
    "model-lsm": ("model", "loss-second-moment"),
    "posterior": ("posterior", "uniform"),
    "decoder": ("decoder", "uniform"),
    "posterior-floor": ("posterior", "uniform"),
    "posterior-lsm": ("posterior", "loss-second-moment"),
    "vlb": None,  # the vlb cell itself (loss-second-moment sampler), for the aux-vs-vlb comparison
}


def overrides(variant: str) -> list[str]:
    """The --set arguments of a variant."""
    if FORMS[variant] is None:
        return []
    form, sampler = FORMS[variant]
    return ["--set", f"losses.aux.aux_variance={form}", "--set", f"losses.aux.timestep_sampler={sampler}"]


# The library trains with each bin's probability floored at 1e-12 (TRAIN_MIN_BIN_PROB); the
# variants not named *-floor train with the exact likelihood, as the library did when this
# table was first measured, so that the floor is the one difference between X and X-floor.
EXACT_TRAIN = """
import sys
import ddpm_repro.diffusion.gaussian_diffusion as gd
gd.TRAIN_MIN_BIN_PROB = 0.0
from ddpm_repro.cli import main
sys.exit(main(sys.argv[1:]))
"""


def run(cmd: list[str]) -> None:
    print("+", " ".join(cmd[:6]), "...", flush=True)
    subprocess.run(cmd, check=True)


def cell(args: argparse.Namespace, variant: str, schedule: str) -> dict:
    name = f"{schedule}-{'vlb' if FORMS[variant] is None else 'aux'}"
    out = args.work / variant / name
    out.mkdir(parents=True, exist_ok=True)
    common = ["--params", "params.yaml", "--no-progress", "--set", "train.nproc=1", *overrides(variant)]
    cli = [sys.executable, "-m", "ddpm_repro.cli"]
    train_cli = cli if variant.endswith("-floor") else [sys.executable, "-c", EXACT_TRAIN]
    ckpt = out / "checkpoints"
    steps = [
        (
            out / "train.json",
            [
                *train_cli,
                "train",
                *common,
                "--cell",
                name,
                "--data",
                str(args.data / "train.npz"),
                "--checkpoint-dir",
                str(ckpt),
                "--metrics",
                str(out / "train.json"),
                "--loss-curve",
                str(out / "loss.csv"),
            ],
        ),
        (
            out / "samples.npz",
            [
                *cli,
                "sample",
                *common,
                "--checkpoint",
                str(ckpt),
                "--out",
                str(out / "samples.npz"),
                "--set",
                f"sample.num_samples={args.samples}",
                "--grid",
                str(out / "samples.png"),
            ],
        ),
        (
            out / "nll.json",
            [
                *cli,
                "nll",
                *common,
                "--checkpoint",
                str(ckpt),
                "--data",
                str(args.data / "test.npz"),
                "--out",
                str(out / "nll.json"),
            ],
        ),
        (
            out / "eval.json",
            [
                *cli,
                "evaluate",
                *common,
                "--checkpoint",
                str(ckpt),
                "--samples",
                str(out / "samples.npz"),
                "--reference",
                str(args.reference),
                "--set",
                "evaluate.curve={}",
                "--set",
                "evaluate.fid=never",
                "--out",
                str(out / "eval.json"),
            ],
        ),
    ]
    for output, cmd in steps:
        if not output.exists():
            run(cmd)
    train = json.loads((out / "train.json").read_text())
    nll = json.loads((out / "nll.json").read_text())
    ev = json.loads((out / "eval.json").read_text())
    return {
        "variant": variant,
        "cell": name,
        "nll_bpd": nll["nll_bpd"],
        "nll_bpd_se": nll["nll_bpd_se"],
        "nll_images": nll["nll_images"],
        "fd_classifier": ev["fd_classifier"],
        "fd_samples": ev["fd_samples"],
        "final_loss": train["final_loss"],
        "final_vb": train["final_vb"],
        "train_seconds": train["train_seconds_this_run"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/prepared"))
    parser.add_argument("--reference", type=Path, default=Path("reference"))
    parser.add_argument("--work", type=Path, default=Path("benchmarks/aux_forms_work"), help="cell outputs")
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results"), help="the table")
    parser.add_argument("--samples", type=int, default=400)
    parser.add_argument("--variants", default=",".join(FORMS))
    args = parser.parse_args()
    os.environ.setdefault("DDPM_REPRO_TRACKING", "0")
    rows = []
    for variant in args.variants.split(","):
        for schedule in ("linear", "cosine"):
            rows.append(cell(args, variant, schedule))
            args.results.mkdir(parents=True, exist_ok=True)
            (args.results / "aux_forms.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = [
        f"Machine: {machine()}; default profile, train.seed 0, "
        f"{args.samples} samples per FD, NLL over the first {rows[0]['nll_images']} test images",
        "",
        "| variant | cell | NLL (bits/dim) ± s.e. | FD (classifier) | final loss | final L_t (bits/dim) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['cell']} | {r['nll_bpd']:.3f} ± {r['nll_bpd_se']:.3f} | "
            f"{r['fd_classifier']:.2f} | {r['final_loss']:.3f} | {r['final_vb']:.4f} |"
        )
    (args.results / "aux_forms.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
