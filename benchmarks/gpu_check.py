"""The correctness half of the GPU check (benchmarks/gpu_check.sh runs it; bench.py measures).

    python benchmarks/gpu_check.py imports          # what importing the core pulls in
    python benchmarks/gpu_check.py bf16 [--quick]   # bf16 autocast: finite, close to fp32
    python benchmarks/gpu_check.py ddp [--quick]    # one-process DDP (NCCL on CUDA) train steps

Each section prints one line per check, writes gpu_check_<section>.json to --out and exits 1
when a check fails. Only torch, numpy and ddpm_repro's core (diffusion, models, training,
config) are imported, so it runs on a bare GPU machine with PYTHONPATH=src.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

import torch  # noqa: E402


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _data(n: int, size: int, channels: int):
    import numpy as np

    from ddpm_repro.data.arrays import ImageArrays

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, size, size, channels), dtype=np.uint8)
    return ImageArrays(images=images, labels=np.full(n, -1, np.int64))


def _config(preset: str, device: torch.device, batch: int, bf16: bool, **train: Any):
    from ddpm_repro.config import Config, DiffusionConfig, ModelConfig, TrainConfig

    return Config(
        model=ModelConfig(preset=preset, dropout=0.0),  # no dropout: fp32 and bf16 see one network
        diffusion=DiffusionConfig(
            schedule="cosine", timesteps=1000, timestep_sampler=train.pop("timestep_sampler", "uniform")
        ),
        train=TrainConfig(
            steps=1000,
            batch_size=batch,
            lr=1e-4,
            warmup_steps=0,
            grad_clip=1.0,
            bf16=bf16,
            device=device.type,
            log_every=1000,
            checkpoint_every=1000,
            **train,
        ),
    )


class Checks:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, name: str, ok: bool, **values: Any) -> None:
        self.rows.append({"check": name, "ok": bool(ok), **values})
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {shown}", flush=True)

    @property
    def ok(self) -> bool:
        return all(r["ok"] for r in self.rows)


def imports(args: argparse.Namespace, checks: Checks) -> None:
    """Import the core and build a Config and a Trainer's imports: which non-stdlib
    top-level packages does that load beyond what `import torch, numpy` loads?"""
    std = set(sys.stdlib_module_names)

    def tops() -> set[str]:
        return {m.split(".")[0] for m in sys.modules if not m.startswith("_")}

    import numpy  # noqa: F401

    before = tops()
    import ddpm_repro.diffusion  # noqa: F401
    import ddpm_repro.models  # noqa: F401
    import ddpm_repro.training  # noqa: F401
    from ddpm_repro.config import Config

    Config()  # DataConfig validates its dataset name through data/sources.py
    extra = sorted(t for t in tops() - before - std if t != "ddpm_repro")
    checks.add("core imports need only torch and numpy", not extra, extra=extra or "none")
    print(f"torch {torch.__version__} from {Path(torch.__file__).parent}; numpy {numpy.__version__}")


def _perturb_zero_init(model: torch.nn.Module) -> None:
    """The UNet's output convolutions start at zero, which would make fp32 and bf16 agree
    trivially; give them small seeded weights so every layer shapes the output."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_((torch.randn(p.shape, generator=g) * 0.02).to(p.device))


def bf16(args: argparse.Namespace, checks: Checks) -> None:
    from ddpm_repro.training import Trainer

    device = _device(args.device)
    preset = "digits" if args.quick else args.preset
    size, ch = (8, 1) if preset in ("digits", "tiny") else (32, 3)
    batch = 4 if args.quick else 32
    data = _data(max(64, 2 * batch), size, ch)
    with tempfile.TemporaryDirectory() as d32, tempfile.TemporaryDirectory() as d16:
        t32 = Trainer(_config(preset, device, batch, False), data, d32, progress=False)
        t16 = Trainer(_config(preset, device, batch, True), data, d16, progress=False)
        _perturb_zero_init(t32.model)
        t16.model.load_state_dict(t32.model.state_dict())

        # The same network, batch, t and noise; fp32 against bf16 autocast (no grad).
        b = t32.batch(0)
        model, diffusion = t32.model.eval(), t32.diffusion
        with torch.no_grad():
            x_t = diffusion.q_sample(b["x0"], b["t"], noise=b["noise"])
            out32 = model(x_t, b["t"])
            terms32 = diffusion.training_losses(model, b["x0"], b["t"], noise=b["noise"])
            with torch.autocast(device.type, dtype=torch.bfloat16):
                out16 = model(x_t, b["t"])
                terms16 = diffusion.training_losses(model, b["x0"], b["t"], noise=b["noise"])
        model.train()
        rel = float((out16.float() - out32).norm() / out32.norm())
        checks.add(
            "bf16 network output finite and within 5% of fp32 (relative L2)",
            bool(torch.isfinite(out16).all()) and rel < 0.05,
            rel_l2=rel,
            out_dtype=str(out16.dtype),
        )
        for key in ("loss", "mse", "vb"):
            a, ref = float(terms16[key].mean()), float(terms32[key].mean())
            diff = abs(a - ref) / max(abs(ref), 1e-12)
            limit = 0.05 if key != "vb" else 0.25  # L_t is a small KL: its relative error is larger
            checks.add(
                f"bf16 training_losses[{key}] finite and within {limit:.0%} of fp32",
                math.isfinite(a) and diff < limit,
                bf16=a,
                fp32=ref,
                rel_diff=diff,
            )

        # The real step: Trainer.train_step under bf16 autocast, against the fp32 step.
        steps = 3
        m32 = [t32.train_step() for _ in range(steps)]
        m16 = [t16.train_step() for _ in range(steps)]
        finite = all(math.isfinite(m["loss"]) and math.isfinite(m["grad_norm"]) for m in m16)
        diff = max(abs(a["loss"] - r["loss"]) / abs(r["loss"]) for a, r in zip(m16, m32, strict=True))
        checks.add(
            f"bf16 Trainer.train_step x{steps}: loss and grad norm finite, loss within 5% of fp32",
            finite and diff < 0.05,
            loss_bf16=m16[-1]["loss"],
            loss_fp32=m32[-1]["loss"],
            max_rel_diff=diff,
            grad_norm_bf16=m16[-1]["grad_norm"],
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ddp(args: argparse.Namespace, checks: Checks) -> None:
    """World size 1, but through torch.distributed and DistributedDataParallel: the NCCL
    set-up, the DDP hooks, no_sync over microbatches and the importance sampler's
    all_gather, i.e. the code paths a torchrun launch takes."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from ddpm_repro.training import Trainer
    from ddpm_repro.training.distributed import DistContext

    device = _device(args.device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        device = torch.device("cuda", device.index or 0)
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        ones = torch.ones(4, device=device)
        dist.all_reduce(ones)
        checks.add(f"{backend} all_reduce (world size 1)", bool((ones == 1).all()), backend=backend)

        batch = 8
        config = _config(
            "digits", device, batch, args.bf16, microbatch=batch // 2, timestep_sampler="loss-second-moment"
        )
        with tempfile.TemporaryDirectory() as ckpt:
            trainer = Trainer(
                config, _data(64, 8, 1), ckpt, progress=False, dist_ctx=DistContext(0, 1, device)
            )
            # Trainer wraps the model in DDP only when world_size > 1; attach it here so that
            # train_step takes the DDP branch (no_sync on all but the last microbatch).
            trainer.ddp = DistributedDataParallel(
                trainer.model, device_ids=[device] if device.type == "cuda" else None
            )
            before = [p.detach().clone() for p in trainer.model.parameters()]
            metrics = [trainer.train_step() for _ in range(3 if args.quick else 5)]
            moved = any(
                not torch.equal(a, p) for a, p in zip(before, trainer.model.parameters(), strict=True)
            )
            finite = all(math.isfinite(m["loss"]) and math.isfinite(m["grad_norm"]) for m in metrics)
            checks.add(
                f"DDP Trainer.train_step x{len(metrics)} ({backend}, 2 microbatches, importance sampler)",
                finite and moved,
                loss=metrics[-1]["loss"],
                grad_norm=metrics[-1]["grad_norm"],
                weights_moved=moved,
            )
    finally:
        dist.destroy_process_group()


SECTIONS = {"imports": imports, "bf16": bf16, "ddp": ddp}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("section", choices=sorted(SECTIONS))
    ap.add_argument("--device", default="auto", help="auto | cuda | cuda:N | cpu (a CPU dry run: gloo)")
    ap.add_argument("--preset", default="iddpm-cifar10", help="bf16: the model to compare")
    ap.add_argument("--bf16", action="store_true", help="ddp: train under bf16 autocast")
    ap.add_argument("--quick", action="store_true", help="tiny sizes")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or HERE / "results"))
    args = ap.parse_args(argv)
    checks = Checks()
    error = None
    try:
        SECTIONS[args.section](args, checks)
    except Exception as exc:  # reported as a failed check, with the JSON still written
        error = f"{type(exc).__name__}: {exc}"
        checks.add(f"{args.section} ran", False, error=error)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"gpu_check_{args.section}.json"
    payload = {"section": args.section, "ok": checks.ok, "torch": torch.__version__, "checks": checks.rows}
    if torch.cuda.is_available():
        payload["gpu"] = torch.cuda.get_device_name()
    path.write_text(json.dumps(payload, indent=2) + "\n")
    if error:
        import traceback

        traceback.print_exc()
    return 0 if checks.ok else 1


if __name__ == "__main__":
    sys.exit(main())
