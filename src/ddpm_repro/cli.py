"""`ddpm-repro <command>`: the entry points that the README and the pipeline call."""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from . import __version__


def _check_bound(args: argparse.Namespace) -> int:
    """Print the bound of the exact reverse process for Gaussian data beside its true NLL."""
    import torch

    from .diffusion import (
        GaussianDiffusion,
        LossType,
        ModelMeanType,
        ModelVarType,
        get_named_beta_schedule,
    )
    from .diffusion.likelihood import NATS_TO_BITS, discretized_gaussian_log_likelihood, mean_flat
    from .diffusion.oracle import GaussianDataOracle, discretization_gap_bits, sample_8bit_gaussian

    mu, sigma = args.mu, args.sigma
    x = sample_8bit_gaussian((args.images, 1, 8, 8), mu, sigma, torch.Generator().manual_seed(args.seed))
    true_nll = (
        -mean_flat(
            discretized_gaussian_log_likelihood(
                x, torch.full_like(x, mu), torch.full_like(x, math.log(sigma))
            )
        )
        * NATS_TO_BITS
    )
    processes = [
        GaussianDiffusion(
            betas=get_named_beta_schedule(schedule, T),
            model_mean_type=ModelMeanType.EPSILON,
            model_var_type=ModelVarType.LEARNED_RANGE,
            loss_type=LossType.VLB,
        )
        for schedule in args.schedules
        for T in args.timesteps
    ]  # built first, so a bad schedule or T fails before any output
    print(f"8-bit pixels from N({mu}, {sigma}^2), {args.images} images of 8x8; bits/dim, mean +- s.e.")
    print(
        f"{'schedule':>8} {'T':>5} {'true NLL':>9} {'bound':>16} "
        f"{'bound - NLL':>12} {'expected gap':>12} {'time':>6}"
    )
    names = [(schedule, T) for schedule in args.schedules for T in args.timesteps]
    for (schedule, T), d in zip(names, processes, strict=True):
        start = time.perf_counter()
        out = d.calc_bpd_loop(
            GaussianDataOracle(d, mu, sigma),
            x,
            clip_denoised=False,
            generator=torch.Generator().manual_seed(args.seed + 1),
            max_batch=8192,
        )
        diff = out["total_bpd"] - true_nll
        se = float(diff.std() / args.images**0.5)
        print(
            f"{schedule:>8} {T:>5} {float(true_nll.mean()):9.4f} "
            f"{float(out['total_bpd'].mean()):9.4f} +- {se:.4f} {float(diff.mean()):+12.4f} "
            f"{discretization_gap_bits(d):12.4f} {time.perf_counter() - start:5.1f}s"
        )
    return 0


def _prepare(args: argparse.Namespace) -> int:
    """Write the dataset's train/test splits as uint8 NHWC .npz files."""
    from .data import save_arrays
    from .data.digits import load_digits, split

    if args.dataset != "digits":
        raise ValueError(f"unknown dataset {args.dataset!r}; valid: digits")
    train, test = split(load_digits(), args.test_fraction, args.seed)
    out = Path(args.out)
    save_arrays(out / "train.npz", train)
    save_arrays(out / "test.npz", test)
    print(f"wrote {out / 'train.npz'} ({len(train.images)} images), {out / 'test.npz'} ({len(test.images)})")
    return 0


def _train(args: argparse.Namespace) -> int:
    """Train one cell, resuming from the newest checkpoint in --checkpoint-dir."""
    from .config import load_config
    from .data import load_arrays
    from .training import Trainer
    from .training.distributed import cleanup_distributed

    config = load_config(args.params, args.set)  # every key checked before any work
    data = load_arrays(args.data)
    try:
        trainer = Trainer(config, data, args.checkpoint_dir, progress=not args.no_progress)
        result = trainer.run()
    finally:
        cleanup_distributed()
    if trainer.ctx.is_main:
        summary = ", ".join(f"{k} {v:.4g}" for k, v in result.metrics.items())
        print(f"trained to step {result.step}: {result.checkpoint} ({summary})")
    return 0


def _sample(args: argparse.Namespace) -> int:
    """Generate from a checkpoint: uint8 .npz (images, labels) and optionally a PNG grid."""
    import yaml

    from .config import apply_overrides, build_diffusion, config_from_dict
    from .sampling import generate, save_grid, save_samples
    from .training import load_checkpoint, model_from_checkpoint
    from .training.checkpoint import resolve_checkpoint
    from .training.distributed import pick_device

    path = resolve_checkpoint(args.checkpoint)
    ckpt = load_checkpoint(path)
    base = ckpt["config"]
    if args.params:
        params = Path(args.params)
        if not params.is_file():
            raise FileNotFoundError(f"params file '{params}' not found")
        base = {**base, "sample": (yaml.safe_load(params.read_text()) or {}).get("sample", {})}
    config = config_from_dict(apply_overrides(base, args.set))
    device = pick_device(args.device)
    model = model_from_checkpoint(ckpt, use_ema=config.sample.use_ema, device=device)
    unet = model.config
    samples = generate(
        model,
        build_diffusion(config.diffusion),
        config.sample,
        (unet.in_channels, unet.image_size, unet.image_size),
        num_classes=unet.num_classes,
        device=device,
        progress=not args.no_progress,
    )
    save_samples(args.out, samples)
    if args.grid:
        save_grid(args.grid, samples.images[: args.grid_size])
    print(f"wrote {len(samples.images)} samples from {path} (step {ckpt['step']}) to {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ddpm-repro", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="<command>")

    check = commands.add_parser(
        "check-bound",
        help="verify the diffusion math: the full bound of the exact model vs the true NLL",
        description=(
            "For 8-bit pixels drawn from a rounded Gaussian the exact reverse process is known; "
            "its variational bound (every term, via calc_bpd_loop) must exceed the true discrete "
            "NLL by the discretisation gap only."
        ),
    )
    check.add_argument("--schedules", nargs="+", default=["linear", "cosine"], help="beta schedules")
    check.add_argument("--timesteps", nargs="+", type=int, default=[1000, 4000], help="values of T")
    check.add_argument("--images", type=int, default=384, help="number of 8x8 images")
    check.add_argument("--mu", type=float, default=0.1, help="pixel mean in [-1, 1]")
    check.add_argument("--sigma", type=float, default=0.25, help="pixel standard deviation")
    check.add_argument("--seed", type=int, default=0)
    check.set_defaults(func=_check_bound)

    prep = commands.add_parser("prepare", help="write a dataset's train/test splits as uint8 .npz")
    prep.add_argument("--dataset", default="digits", help="dataset name (digits: sklearn's 8x8 digits)")
    prep.add_argument("--out", required=True, help="output folder for train.npz and test.npz")
    prep.add_argument("--test-fraction", type=float, default=0.2, help="share of images held out")
    prep.add_argument("--seed", type=int, default=0, help="seed of the split")
    prep.set_defaults(func=_prepare)

    def add_params(p: argparse.ArgumentParser) -> None:
        p.add_argument("--params", help="params YAML file (default: built-in defaults)")
        p.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="SECTION.KEY=VALUE",
            help="override one params key (repeatable), e.g. --set train.steps=500",
        )
        p.add_argument("--no-progress", action="store_true", help="no progress bar")

    train = commands.add_parser(
        "train",
        help="train one model, resuming from the newest checkpoint",
        description="Train one grid cell. Rerunning the same command resumes exactly where it stopped. "
        "Under torchrun every process runs it; the global batch is split between them.",
    )
    add_params(train)
    train.add_argument("--data", required=True, help="training split .npz (uint8 images, labels)")
    train.add_argument("--checkpoint-dir", required=True, help="folder of ckpt_<step>.pt files")
    train.set_defaults(func=_train)

    sample = commands.add_parser(
        "sample",
        help="generate images from a checkpoint",
        description="Generate from a checkpoint (a file, or a folder: its newest). The sample settings "
        "come from the checkpoint's config, then --params' sample section, then --set.",
    )
    add_params(sample)
    sample.add_argument("--checkpoint", required=True, help="checkpoint file or folder")
    sample.add_argument("--out", required=True, help="output .npz (uint8 images [N,H,W,C], labels)")
    sample.add_argument("--grid", help="also write a PNG grid here")
    sample.add_argument("--grid-size", type=int, default=100, help="images in the grid")
    sample.add_argument("--device", default="auto", help="auto, cpu or cuda")
    sample.set_defaults(func=_sample)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .training.trainer import NonFiniteLossError

    try:
        return args.func(args)
    except NonFiniteLossError as exc:
        print(f"ddpm-repro {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as exc:  # ConfigError and CheckpointError included
        print(f"ddpm-repro {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ddpm-repro {args.command}: interrupted; rerun the command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
