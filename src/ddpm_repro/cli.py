"""`ddpm-repro <command>`: the entry points that the README and the pipeline call."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from . import __version__


def _check_bound(args: argparse.Namespace) -> int:
    """Print the bound of the exact reverse process for Gaussian data beside its true NLL."""
    from .diffusion.oracle import check_bound

    rows = check_bound(args.mu, args.sigma, args.images, args.schedules, args.timesteps, args.seed)
    first = next(rows)  # builds every process first: a bad schedule or T fails before any output
    print(
        f"8-bit pixels from N({args.mu}, {args.sigma}^2), {args.images} images of 8x8; bits/dim, mean +- s.e."
    )
    print(
        f"{'schedule':>8} {'T':>5} {'true NLL':>9} {'bound':>16} "
        f"{'bound - NLL':>12} {'expected gap':>12} {'time':>6}"
    )
    for r in [first, *rows]:
        print(
            f"{r.schedule:>8} {r.timesteps:>5} {r.true_nll:9.4f} {r.bound:9.4f} +- {r.bound_se:.4f} "
            f"{r.excess:+12.4f} {r.expected_gap:12.4f} {r.seconds:5.1f}s"
        )
    return 0


def _prepare(args: argparse.Namespace) -> int:
    """Write the dataset's train/test splits as uint8 NHWC .npz files."""
    from .config import load_config
    from .data import save_arrays
    from .data.sources import load_dataset

    cfg = load_config(args.params, args.set).data
    train, test = load_dataset(cfg.dataset, cfg.root, cfg.image_size, cfg.test_fraction, cfg.seed)
    out = Path(args.out)
    save_arrays(out / "train.npz", train)
    save_arrays(out / "test.npz", test)
    print(f"wrote {out / 'train.npz'} ({len(train.images)} images), {out / 'test.npz'} ({len(test.images)})")
    return 0


def _train(args: argparse.Namespace) -> int:
    """Train one cell, resuming from the newest checkpoint in --checkpoint-dir; with
    train.nproc > 1, as that many worker processes that this command starts."""
    from .config import load_config
    from .data import load_arrays
    from .io import write_text
    from .launch import workers_to_start
    from .stage_outputs import TRAIN
    from .training import Trainer
    from .training.distributed import cleanup_distributed, setup_distributed
    from .training.metrics_log import CsvMetricsLog

    config = load_config(args.params, args.set, args.cell)  # every key checked before any work
    data = load_arrays(args.data)
    if nproc := workers_to_start(config.train.nproc, config.train.device):
        return _launch(args, nproc)
    start = time.perf_counter()
    try:
        ctx = setup_distributed(config.train.device)
        tracker = None
        if ctx.is_main:  # the metrics log and the MLflow run start (or resume) with training
            from .tracking import Tracker

            log = CsvMetricsLog(Path(args.checkpoint_dir) / "metrics.csv")
            tracker = Tracker(config, "train")
        trainer = Trainer(
            config,
            data,
            args.checkpoint_dir,
            callbacks=(log, tracker) if ctx.is_main else (),
            progress=not args.no_progress,
            dist_ctx=ctx,
            restart_on_change=args.restart_on_change,
        )
        first_step = trainer.step
        try:
            result = trainer.run()
        except BaseException:
            if tracker is not None:
                tracker.end("KILLED" if isinstance(sys.exc_info()[1], KeyboardInterrupt) else "FAILED")
            raise
    finally:
        cleanup_distributed()
    if not trainer.ctx.is_main:
        return 0
    args.images = (result.step - first_step) * config.train.batch_size
    # A run resumed at its last step trained nothing now: its final metrics are the log's last row.
    last = result.metrics or log.last()
    final = {
        "cell": config.cell,
        "steps": result.step,
        "final_loss": last.get("loss"),
        "final_mse": last.get("mse"),
        "final_vb": last.get("vb"),
        "images_per_s": last.get("images_per_s"),
        "probe_loss": trainer.probe_loss(),
        "train_seconds_this_run": round(time.perf_counter() - start, 1),
    }
    if args.metrics:
        TRAIN.write(args.metrics, final)
    if args.loss_curve:
        write_text(args.loss_curve, log.path.read_text())
    tracker.log_metrics(
        {k: v for k, v in final.items() if isinstance(v, float)}, step=result.step, prefix="final/"
    )
    if args.loss_curve:
        tracker.log_artifact(args.loss_curve)
    if config.tracking.log_checkpoint:  # what `ddpm-repro sample --checkpoint` reads
        tracker.log_artifact(result.checkpoint, "checkpoint")
    tracker.end()
    summary = ", ".join(f"{k} {v:.4g}" for k, v in last.items())
    print(f"trained {config.cell} to step {result.step}: {result.checkpoint} ({summary})")
    return 0


def _cell_tracker(config, stage: str, is_main: bool):
    """Rank 0's handle on the cell's MLflow run (None on the other ranks), found before the
    work, so that the run's system metrics cover it."""
    if not is_main:
        return None
    from .tracking import Tracker

    tracker = Tracker(config, stage)
    tracker.find_cell_run()
    return tracker


def _system_metrics(tracker):
    """The tracker's system metrics around a block; nothing on a rank without a tracker."""
    from contextlib import nullcontext

    return tracker.system_metrics() if tracker is not None else nullcontext()


def _load_cell(args: argparse.Namespace):
    """(checkpoint path, checkpoint, config) for sample/nll/evaluate: the checkpoint's own
    config, with --params' sample/evaluate/tracking sections and train.nproc, then --set."""
    from .config import apply_overrides, config_from_dict, read_params
    from .training import load_checkpoint
    from .training.checkpoint import resolve_checkpoint

    path = resolve_checkpoint(args.checkpoint)
    ckpt = load_checkpoint(path)
    base = dict(ckpt["config"])
    if args.params:
        loaded = read_params(args.params)
        for section in ("profile", "sample", "evaluate", "tracking"):
            if section in loaded:
                base[section] = loaded[section]
        if "nproc" in (loaded.get("train") or {}):  # how many workers, not what they compute
            base["train"] = {**base["train"], "nproc": loaded["train"]["nproc"]}
    return path, ckpt, config_from_dict(apply_overrides(base, args.set))


def _file_id(path: str | Path) -> dict:
    """A file as a chunked job's input: its path, size and time written (a retrained
    checkpoint of the same step, or a rewritten file, is another input)."""
    stat = Path(path).stat()
    return {"path": str(Path(path).resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _job_settings(path: Path, ckpt: dict, **settings) -> dict:
    """What identifies a chunked job's results: the checkpoint file and the settings (config
    sections, or `_file_id`s of other inputs)."""
    from .config import config_to_dict

    checkpoint = {**_file_id(path), "step": int(ckpt["step"])}
    return {"checkpoint": checkpoint, **{k: config_to_dict(v) for k, v in settings.items()}}


def _sample(args: argparse.Namespace) -> int:
    """Generate from a checkpoint: uint8 .npz (images, labels) and optionally a PNG grid; in
    resumable chunks, across train.nproc workers."""
    from .data import save_arrays
    from .launch import workers_to_start
    from .sampling import Pretrained, save_grid
    from .sharding import ChunkedJob, partial_dir
    from .training.distributed import cleanup_distributed, setup_distributed

    path, ckpt, config = _load_cell(args)
    if nproc := workers_to_start(config.train.nproc, args.device):
        return _launch(args, nproc)
    try:
        ctx = setup_distributed(args.device)
        tracker = _cell_tracker(config, "sample", ctx.is_main)
        pretrained = Pretrained.from_payload(path, ckpt, ctx.device, config)
        start = time.perf_counter()
        settings = _job_settings(path, ckpt, sample=config.sample)
        job = ChunkedJob(partial_dir(args.out), settings, ctx, f"sample {config.cell}", not args.no_progress)
        with _system_metrics(tracker):
            samples = pretrained.sample(run_chunks=job.run)
        seconds = time.perf_counter() - start
        if ctx.is_main:
            save_arrays(args.out, samples)
            if args.grid:
                save_grid(args.grid, samples.images[: args.grid_size])
        job.finish()
    finally:
        cleanup_distributed()
    if not ctx.is_main:
        return 0
    tracker.log_metrics({"num_samples": len(samples.images), "seconds": seconds}, prefix="sample/")
    if args.grid:
        tracker.log_artifact(args.grid)
    args.images = len(samples.images)
    print(f"wrote {len(samples.images)} samples from {path} (step {ckpt['step']}) to {args.out}")
    return 0


def _nll(args: argparse.Namespace) -> int:
    """NLL in bits/dim of a checkpoint on the test split (the full bound), as JSON; in
    resumable chunks of test images, across train.nproc workers."""
    from .data import load_arrays
    from .evaluation import evaluate_nll
    from .launch import workers_to_start
    from .sampling import Pretrained
    from .sharding import ChunkedJob, partial_dir
    from .stage_outputs import NLL, NLL_PER_IMAGE
    from .training.distributed import cleanup_distributed, setup_distributed

    path, ckpt, config = _load_cell(args)
    test = load_arrays(args.data)
    if nproc := workers_to_start(config.train.nproc, args.device):
        return _launch(args, nproc)
    e = config.evaluate
    try:
        ctx = setup_distributed(args.device)
        tracker = _cell_tracker(config, "nll", ctx.is_main)
        pretrained = Pretrained.from_payload(path, ckpt, ctx.device, config, use_ema=e.use_ema)
        start = time.perf_counter()
        keys = ("nll_images", "nll_strata", "nll_batch", "nll_chunk", "clip_denoised", "use_ema", "seed")
        nll_settings = {k: getattr(e, k) for k in keys}
        settings = _job_settings(path, ckpt, nll=nll_settings, data=_file_id(args.data))
        job = ChunkedJob(partial_dir(args.out), settings, ctx, f"nll {config.cell}", not args.no_progress)
        with _system_metrics(tracker):
            metrics = evaluate_nll(
                pretrained.model,
                pretrained.diffusion,
                test,
                e.nll_images,
                e.nll_batch,
                strata=e.nll_strata,
                chunk_images=e.nll_chunk,
                clip_denoised=e.clip_denoised,
                seed=e.seed,
                device=ctx.device,
                run_chunks=job.run,
            )
        if ctx.is_main:
            metrics.update(
                cell=config.cell,
                checkpoint_step=int(ckpt["step"]),
                nll_seconds=round(time.perf_counter() - start, 1),
            )
            # the per-image bounds (for paired claims) stay out of DVC's metrics file
            per_image = {"cell": config.cell, "nll_per_image": metrics.pop("nll_per_image")}
            NLL_PER_IMAGE.write(Path(args.out).with_name(NLL_PER_IMAGE.filename), per_image)
            NLL.write(args.out, metrics)
        job.finish()
    finally:
        cleanup_distributed()
    if not ctx.is_main:
        return 0
    tracker.log_metrics({k: v for k, v in metrics.items() if isinstance(v, float | int)}, prefix="eval/")
    args.images = metrics["nll_images"]
    print(
        f"{config.cell}: NLL {metrics['nll_bpd']:.4f} ± {metrics['nll_bpd_se']:.4f} bits/dim "
        f"({metrics['nll_images']} images, {metrics['nll_estimate']}: {metrics['nll_terms']} terms each) "
        f"-> {args.out}"
    )
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    """The samples' quality against the reference stage's statistics, and the sampling-step
    curve (its samples in resumable chunks across train.nproc workers), as JSON."""
    from .data import load_arrays
    from .evaluation.reference import Reference
    from .evaluation.step_curve import step_curve
    from .launch import workers_to_start
    from .sampling import Pretrained
    from .sharding import ChunkedJob, partial_dir
    from .stage_outputs import EVAL
    from .training.distributed import cleanup_distributed, setup_distributed

    path, ckpt, config = _load_cell(args)
    e = config.evaluate
    # missing files fail before any work
    reference = Reference(
        args.reference, fid=e.fid, bootstrap_rounds=e.bootstrap_rounds, kid_subsets=e.kid_subsets
    )
    samples = load_arrays(args.samples)
    if nproc := workers_to_start(config.train.nproc, args.device):
        return _launch(args, nproc)
    try:
        ctx = setup_distributed(args.device)
        tracker = _cell_tracker(config, "evaluate", ctx.is_main)
        reference.device = ctx.device
        start = time.perf_counter()
        curve_sample = dataclasses.replace(config.sample, clip_denoised=e.clip_denoised, seed=e.seed)
        settings = _job_settings(  # the samples too: the Inception features are theirs
            path, ckpt, sample=curve_sample, curve=e.curve if config.has_step_curve else {},
            curve_samples=e.curve_samples,
            bootstrap_rounds=e.bootstrap_rounds, kid_subsets=e.kid_subsets,
            samples=_file_id(args.samples),
        )  # fmt: skip
        job = ChunkedJob(partial_dir(args.out), settings, ctx, progress=not args.no_progress)
        metrics: dict = {}
        with _system_metrics(tracker):
            if ctx.is_main:
                metrics.update(reference.classifier_quality(samples))
            fid = reference.inception_fid(
                samples, run_chunks=lambda n, f: job.sub("inception", f"inception {config.cell}").run(n, f)
            )
            metrics.update(fid or {})
            if config.has_step_curve:
                pretrained = Pretrained.from_payload(path, ckpt, ctx.device, config, use_ema=e.use_ema)
                metrics["step_curve"] = step_curve(
                    pretrained.model,
                    pretrained.diffusion,
                    curve_sample,
                    reference,
                    pretrained.image_shape,
                    e.curve_points,
                    e.curve_samples,
                    num_classes=pretrained.model.config.num_classes,
                    device=ctx.device,
                    point_chunks=lambda name: job.sub(name, f"step curve {config.cell} {name}").run,
                )
        if ctx.is_main:
            metrics.update(
                cell=config.cell,
                checkpoint_step=int(ckpt["step"]),
                eval_seconds=round(time.perf_counter() - start, 1),
            )
            if config.model.class_cond:
                metrics["guidance_scale"] = config.sample.guidance_scale
            EVAL.write(args.out, metrics)
        job.finish()
    finally:
        cleanup_distributed()
    if not ctx.is_main:
        return 0
    tracker.log_metrics({k: v for k, v in metrics.items() if isinstance(v, float | int)}, prefix="eval/")
    for point in metrics.get("step_curve", []):
        tracker.log_metrics(
            {f"fd_{point['method']}": point["fd_classifier"]}, step=point["steps"], prefix="curve/"
        )
    fid = metrics.get("fid_inception")
    fid_text = f", FID {fid:.2f}" if fid is not None else f", FID: {metrics.get('fid_note')}"
    kid = metrics.get("kid_classifier")
    kid_text = "" if kid is None else f", KID {kid:.5f} ± {metrics['kid_classifier_se']:.5f}"
    low, high = metrics["fd_classifier_low"], metrics["fd_classifier_high"]
    fd_text = f"FD {metrics['fd_classifier']:.3f} [{low:.3f}, {high:.3f}]"
    print(f"{config.cell}: {fd_text}{kid_text}{fid_text} -> {args.out}")
    return 0


def _reference(args: argparse.Namespace) -> int:
    """Train the offline feature extractor and write the training split's feature statistics
    (and its Inception statistics when pytorch-fid's weights are available)."""
    from .config import load_config
    from .data import load_arrays
    from .evaluation.reference import build_reference
    from .stage_outputs import REFERENCE
    from .training.distributed import pick_device

    config = load_config(args.params, args.set)
    train = load_arrays(Path(args.data) / "train.npz")
    test = load_arrays(Path(args.data) / "test.npz")
    metrics = build_reference(
        train,
        test,
        args.out,
        config.reference,
        fid=config.evaluate.fid,
        device=pick_device(args.device),
        progress=not args.no_progress,
    )
    REFERENCE.write(args.metrics, metrics)
    print(
        f"reference classifier: test accuracy {metrics['classifier_test_accuracy']:.3f}, "
        f"FD(test, train) {metrics['fd_test_vs_train']:.3f} -> {args.out}"
    )
    return 0


def _import_official(args: argparse.Namespace) -> int:
    """Convert a checkpoint released with Improved DDPM (openai/improved-diffusion) into ours."""
    from .models.official import settings_for
    from .training.official_checkpoint import convert_official_checkpoint

    settings = settings_for(
        args.source,
        preset=args.preset,
        model_channels=args.model_channels,
        schedule=args.schedule,
        timesteps=args.timesteps,
        objective=args.objective,
        timestep_sampler=args.timestep_sampler,
        rescale_timesteps=args.rescale_timesteps,
        step=args.step,
    )
    out = convert_official_checkpoint(args.source, args.out, settings)
    print(
        f"wrote {out}: preset {settings.preset}, {settings.schedule} schedule, T={settings.timesteps}, "
        f"{settings.objective}, timestep scale {settings.timestep_scale:g}"
    )
    return 0


def _report(args: argparse.Namespace) -> int:
    """The comparison tables, claims and plots of every cell of the grid."""
    from .config import load_config
    from .reporting import collect_cells, collect_conditional, write_report
    from .stage_outputs import REFERENCE

    config = load_config(args.params, args.set)
    rows = collect_cells(args.cells_dir, config)
    reference = REFERENCE.read(args.reference) if Path(args.reference).is_file() else None
    # the first class-conditional cell's outputs, if there is one and it has been evaluated
    names = list(config.conditional.cells)
    conditional = collect_conditional(Path(args.cells_dir) / f"{names[0]}-cond", config) if names else None
    paths = write_report(config, rows, args.out_dir, reference, conditional)
    print(f"wrote {len(paths)} files under {args.out_dir} ({len(rows)} cells)")
    return 0


def _regression(args: argparse.Namespace) -> int:
    """Compare a run's pinned metrics with the pins file (exit 1 on a change), or re-pin."""
    from .config import load_config
    from .regression import compare, format_table, load_pins, read_metrics, update_pins

    cells = load_config(args.params, args.set).grid.cells
    got = read_metrics(args.cells_dir, cells)
    if args.update:
        update_pins(args.pins, got)
        print(f"re-pinned {len(cells)} cells in {args.pins}")
        return 0
    checks = compare(load_pins(args.pins), got)
    failed = [c for c in checks if not c.ok]
    print(format_table(checks, only_failures=bool(failed) and not args.verbose))
    if failed:
        print(
            f"\nregression: {len(failed)} of {len(checks)} pinned metrics moved beyond their tolerance. "
            f"If the change is intended, re-pin: ddpm-repro regression --update --pins {args.pins}"
        )
        return 1
    print(f"\nregression: all {len(checks)} pinned metrics within tolerance")
    return 0


def _preflight(args: argparse.Namespace) -> int:
    """Check the profile against this machine (one line per missing piece, with its fix) and
    print its projected cost; exit status 2 when something is missing."""
    from .config import load_config

    config = load_config(args.params, args.set)
    return _run_preflight(config, args.tflops, args.gpus)


def _run_preflight(config, tflops: float | None = None, gpus: int = 1) -> int:
    from .preflight import check, projected_cost

    print(projected_cost(config, tflops=tflops, gpus=gpus).format())
    problems = check(config)
    for problem in problems:
        print(f"preflight: {problem}", file=sys.stderr)
    if problems:
        print(f"preflight: {len(problems)} problem(s); nothing was run", file=sys.stderr)
        return 2
    print(f"preflight: profile {config.profile} has what it needs on this machine")
    return 0


def _repro(args: argparse.Namespace) -> int:
    """`dvc repro` inside one MLflow parent run that groups the cells it (re)runs, after
    `preflight` found nothing missing."""
    import tempfile

    from .config import load_config
    from .errors import UserError
    from .io import write_text
    from .reporting.timing import machine, mlflow_metrics, read_timings, timing_markdown
    from .repro import run_pipeline
    from .tracking import PipelineRun

    if Path(args.params).resolve() != Path("params.yaml").resolve():
        raise UserError(
            f"--params {args.params}: dvc.yaml's stages read ./params.yaml, so repro runs that file's "
            f"profile only; copy {args.params} to params.yaml to run it"
        )
    config = load_config(args.params)
    if rc := _run_preflight(config):
        return rc
    reports = Path("reports")
    with PipelineRun(config) as parent, tempfile.TemporaryDirectory() as scratch:
        timings = Path(scratch) / "timings.jsonl"
        env = {**os.environ, TIMINGS_ENV: str(timings)}
        start = time.perf_counter()
        dvc_args = args.dvc_args[1:] if args.dvc_args[:1] == ["--"] else args.dvc_args  # repro -- -f
        rc = run_pipeline(dvc_args, args.jobs, env)
        wall = time.perf_counter() - start
        rows = read_timings(timings)
        if rows:  # also after a failure: what ran, and how long it took
            write_text(reports / "timing.md", timing_markdown(rows, machine(), wall))
            parent.tracker.log_metrics({**mlflow_metrics(rows), "pipeline_seconds": wall})
            parent.tracker.log_artifact(reports / "timing.md", "report")
        if rc != 0:
            raise SystemExit(rc)  # marks the parent run FAILED on the way out
        # the report belongs to the whole run: its files go to the parent run's artifacts
        for name in ("report.md", "report.csv", "report.tex", "steps.csv"):
            parent.tracker.log_artifact(reports / name, "report")
        for plot in sorted((reports / "plots").glob("*.png")):
            parent.tracker.log_artifact(plot, "report/plots")
    print(f"pipeline finished (MLflow parent run {parent.run_id or 'not recorded'})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The `ddpm-repro` parser: one subcommand per stage, each bound to its handler as `func`."""
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
    check.add_argument("--seed", type=int, default=0, help="seed of the images and of the bound's noise")
    check.set_defaults(func=_check_bound)

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

    prep = commands.add_parser("prepare", help="write the dataset's train/test splits as uint8 .npz")
    add_params(prep)
    prep.add_argument("--out", required=True, help="output folder for train.npz and test.npz")
    prep.set_defaults(func=_prepare)

    train = commands.add_parser(
        "train",
        help="train one grid cell, resuming from the newest checkpoint",
        description="Train one grid cell. Rerunning the same command resumes exactly where it stopped. "
        "Under torchrun every process runs it; the global batch is split between them.",
    )
    add_params(train)
    train.add_argument(
        "--cell", help="grid cell <schedule>-<loss>, e.g. cosine-hybrid (default: diffusion section)"
    )
    train.add_argument("--data", required=True, help="training split .npz (uint8 images, labels)")
    train.add_argument("--checkpoint-dir", required=True, help="folder of ckpt_<step>.pt files")
    train.add_argument("--metrics", help="write the final metrics JSON here")
    train.add_argument("--loss-curve", help="write the loss curve CSV here")
    train.add_argument(
        "--restart-on-change",
        action="store_true",
        help="if the checkpoints were trained with other settings, move them aside to "
        "<checkpoint-dir>.replaced-<n>/ and start over (default: error)",
    )
    train.set_defaults(func=_train)

    def add_checkpoint(p: argparse.ArgumentParser) -> None:
        add_params(p)
        p.add_argument("--checkpoint", required=True, help="checkpoint file, or a folder (its newest)")
        p.add_argument("--device", default="auto", help="auto, cpu or cuda")

    sample = commands.add_parser(
        "sample",
        help="generate images from a checkpoint",
        description="Generate from a checkpoint. Settings: the checkpoint's own config, then the "
        "sample section of --params, then --set.",
    )
    add_checkpoint(sample)
    sample.add_argument("--out", required=True, help="output .npz (uint8 images [N,H,W,C], labels)")
    sample.add_argument("--grid", help="also write a PNG grid here")
    sample.add_argument("--grid-size", type=int, default=100, help="images in the grid")
    sample.set_defaults(func=_sample)

    nll = commands.add_parser(
        "nll",
        help="NLL in bits/dim of a checkpoint on a test split (the variational bound)",
        description="The variational bound on the first evaluate.nll_images test images (0: all): "
        "every one of the T terms, or with evaluate.nll_strata = K an unbiased estimate of the "
        "T - 1 KL terms from one timestep per stratum, from the EMA weights, in chunks of evaluate.nll_chunk "
        "images that train.nproc workers share; a killed run resumes from its finished chunks.",
    )
    add_checkpoint(nll)
    nll.add_argument("--data", required=True, help="test split .npz")
    nll.add_argument("--out", required=True, help="output metrics JSON")
    nll.set_defaults(func=_nll)

    evaluate = commands.add_parser(
        "evaluate",
        help="sample quality against the reference statistics; the sampling-step curve",
        description="The samples' FD and IS in the reference classifier's features, FID when "
        "evaluate.fid allows and the reference has Inception statistics, per-class accuracy for a "
        "class-conditional model, and the FD at each point of evaluate.curve (Improved DDPM Fig. 8), "
        "whose samples are drawn in resumable chunks that train.nproc workers share.",
    )
    add_checkpoint(evaluate)
    evaluate.add_argument("--samples", required=True, help="samples .npz written by `ddpm-repro sample`")
    evaluate.add_argument("--reference", required=True, help="folder written by the reference stage")
    evaluate.add_argument("--out", required=True, help="output metrics JSON")
    evaluate.set_defaults(func=_evaluate)

    reference = commands.add_parser(
        "reference", help="train the offline feature classifier; write train-split feature statistics"
    )
    add_params(reference)
    reference.add_argument("--data", required=True, help="folder with train.npz and test.npz")
    reference.add_argument("--out", required=True, help="output folder (classifier.pt, train_features.npz)")
    reference.add_argument("--metrics", required=True, help="output metrics JSON (test accuracy, ...)")
    reference.add_argument("--device", default="auto", help="auto, cpu or cuda (the Inception features)")
    reference.set_defaults(func=_reference)

    official = commands.add_parser(
        "import-official",
        help="convert a released Improved DDPM checkpoint (openai/improved-diffusion) into ours",
        description="Maps the original UNet's parameters onto ours (every key checked) and writes one of "
        "our checkpoints with the model's diffusion settings, for sample and evaluate. A released file "
        "is recognised by its name (docs/official_checkpoints.md); the options override its settings "
        "or describe another file.",
    )
    official.add_argument("source", help="the original .pt file (a state dict)")
    official.add_argument(
        "--out", required=True, help="our checkpoint file to write, e.g. .../ckpt_00500000.pt"
    )
    official.add_argument("--preset", help="our UNet preset of the same architecture")
    official.add_argument("--model-channels", type=int, help="their --num_channels, if not the preset's")
    official.add_argument("--schedule", help="their --noise_schedule")
    official.add_argument("--timesteps", type=int, help="their --diffusion_steps")
    official.add_argument("--objective", choices=["hybrid", "vlb", "simple"], help="vlb for --use_kl True")
    official.add_argument("--timestep-sampler", help="uniform or loss-second-moment")
    official.add_argument(
        "--rescale-timesteps",
        action=argparse.BooleanOptionalAction,
        help="their --rescale_timesteps (default True): the net was fed t * 1000 / T",
    )
    official.add_argument("--step", type=int, help="training step to record")
    official.set_defaults(func=_import_official)

    regression = commands.add_parser(
        "regression",
        help="compare a pipeline run's pinned metrics with the committed pins (CI)",
        description="Reads probe_loss, nll_bpd and fd_classifier of every grid cell from --cells-dir "
        "and compares them with --pins within each metric's tolerance; exit status 1 and a table of "
        "what moved when any is outside. --update writes the measured values as the new pins.",
    )
    add_params(regression)
    regression.add_argument("--cells-dir", default="reports/cells", help="folder of <cell>/{train,eval}.json")
    regression.add_argument("--pins", default="pipelines/smoke/pins.json", help="the pins file")
    regression.add_argument("--update", action="store_true", help="re-pin: write the measured values")
    regression.add_argument("--verbose", action="store_true", help="print every check, not only failures")
    regression.set_defaults(func=_regression)

    report = commands.add_parser("report", help="write the comparison tables, claims and plots of the grid")
    add_params(report)
    report.add_argument("--cells-dir", default="reports/cells", help="folder of <cell>/{train,eval}.json")
    report.add_argument("--out-dir", default="reports", help="where report.md/.csv/.tex and plots/ go")
    report.add_argument("--reference", default="reports/reference.json", help="the reference stage's metrics")
    report.set_defaults(func=_report)

    preflight = commands.add_parser(
        "preflight",
        help="check the profile against this machine and print its projected cost",
        description="Names each missing piece with its fix, one line each: a CUDA device the profile "
        "asks for, the dataset (on disk or downloadable), Inception weights when evaluate.fid is "
        "required. Then the profile's FLOPs per stage, computed from the UNet's counted FLOPs, and "
        "the hours they take at --tflops per GPU. `ddpm-repro repro` runs it first.",
    )
    add_params(preflight)
    preflight.add_argument(
        "--tflops", type=float, help="dense TFLOP/s per GPU for the hours (default: hours not computed)"
    )
    preflight.add_argument("--gpus", type=int, default=1, help="GPUs sharing the work (default 1)")
    preflight.set_defaults(func=_preflight)

    repro = commands.add_parser(
        "repro",
        help="run `dvc repro` inside one MLflow parent run",
        description=(
            "Opens a parent MLflow run, runs `dvc repro [DVC_ARGS]`, closes the run. Without "
            "DVC_ARGS the cells' stage chains run side by side first (--jobs)."
        ),
    )
    repro.add_argument(
        "--params", default="params.yaml", help="must be ./params.yaml, the file dvc.yaml's stages read"
    )
    repro.add_argument(
        "--jobs",
        type=_jobs,
        default=None,
        help="cells run at once, each with cores/JOBS threads (default auto: one per core "
        "without a GPU, 1 with one); ignored when DVC_ARGS are given",
    )
    repro.add_argument(
        "dvc_args", nargs=argparse.REMAINDER, help="passed to dvc repro; put -- before flags (repro -- -f)"
    )
    repro.set_defaults(func=_repro)
    return parser


def _jobs(text: str) -> int | None:
    """--jobs: 'auto' (None) or a positive integer."""
    if text == "auto":
        return None
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"--jobs must be a positive integer or 'auto', got {text!r}")
    return int(text)


TIMINGS_ENV = "DDPM_REPRO_TIMINGS"  # set by `repro`: each stage appends its wall time here


def _launch(args: argparse.Namespace, nproc: int) -> int:
    """Start the stage's workers; its rank-0 worker records the stage's time, not this process."""
    from .launch import launch

    args.launched = True
    return launch(nproc, args.argv)


def _record_timing(args: argparse.Namespace, seconds: float) -> None:
    """Append {stage, seconds, images} (a JSON line) to the file `repro` names in TIMINGS_ENV:
    from the process that did the work (rank 0), under DVC's stage name where DVC ran it."""
    path = os.environ.get(TIMINGS_ENV)
    if not path or getattr(args, "launched", False) or os.environ.get("RANK", "0") != "0":
        return
    row = {
        "stage": os.environ.get("DVC_STAGE") or args.command,
        "seconds": round(seconds, 2),
        "images": getattr(args, "images", None),
    }
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def main(argv: list[str] | None = None) -> int:
    """Run one command; return its exit status: 0 ok, 1 non-finite loss or failed write, 2 bad
    config, file, checkpoint or data (a `UserError`) or a missing file, 130 interrupted. These
    print as one line naming the command. Anything else is a bug: its traceback is printed."""
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what a launched worker reruns
    from .allocator import keep_freed_memory
    from .errors import NonFiniteLossError, UserError

    keep_freed_memory()  # freed activations stay for reuse (allocator.py says what it gains)

    try:
        start = time.perf_counter()
        rc = args.func(args)
        if rc == 0:
            _record_timing(args, time.perf_counter() - start)
        return rc
    except NonFiniteLossError as exc:
        print(f"ddpm-repro {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except (UserError, FileNotFoundError) as exc:  # ConfigError and CheckpointError included
        print(f"ddpm-repro {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk or a failing write: the outputs were not replaced
        print(f"ddpm-repro {args.command}: error: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"ddpm-repro {args.command}: interrupted; rerun the command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
