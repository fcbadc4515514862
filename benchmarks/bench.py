"""Throughput of ddpm_repro against the machine's own limit and against a peer, in one run.

For the iddpm-cifar10 (32x32) and digits (8x8) presets, in fp32 and in bf16 autocast:

- train:  images/s of a full training step (forward + backward + grad clip + Adam + EMA)
          through `Trainer.train_step`, the project's real step;
- sample: images/s per network evaluation of `p_sample_loop` (ancestral, respaced);
- nll:    images/s through `calc_bpd_loop`, every one of the T terms plus the prior;
- the machine's limit: a matmul probe in fp32 and bf16, so that every figure also gets its
  achieved GFLOP/s (model FLOPs counted by torch.utils.flop_counter) and fraction of peak;
- the peer, lucidrains' denoising-diffusion-pytorch (LearnedGaussianDiffusion + Unet, built
  as close to the same model as it allows; see README.md), measured the way its own Trainer
  trains and its own p_sample_loop samples, under the same torch.autocast;
- the per-step overhead of the sampling and NLL loops: loop time over the time of the same
  number of plain forwards of the same batch.

Every figure runs in a fresh process by default on CPU (`--isolate process`), so that its
peak memory is its own and one figure's allocator state cannot slow another.

One pass cannot carry a ratio on a noisy machine, so every figure is measured in `--rounds N`
rounds (default 3; 2 with `--quick`), ours and the peer alternating (ours, peer, ours, peer,
...), and the probe N times before the figures. A figure's value is the median over its rounds,
with the range (min-max) and each round's value kept in the JSON. Ratios are taken round by
round, round i over round i: ours/peer, bf16/fp32 of our train step, a figure's GFLOP/s over
the probe's; the loop overhead's ratio is its own round's. Each goal gets a verdict from the
range of its value: "met" when the whole range is on the goal's side of the target, "not met"
when all of it is on the other side, "not resolved" when the range crosses the target.

The header of the results (Markdown and JSON `environment.machine`) gives the CPU model, cores,
torch's CPU capability and whether the CPU has AMX, from ddpm_repro.reporting.timing.machine().
Results are written after every round of every figure, so a run cut short keeps what it measured.

    benchmarks/.venv-peer/bin/python benchmarks/bench.py              # the full CPU run
    benchmarks/.venv-peer/bin/python benchmarks/bench.py --rounds 5   # a closer median, 5/3 the time
    .venv/bin/python benchmarks/bench.py --quick --skip-peer          # a smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import gc
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))  # this checkout's ddpm_repro, whatever is installed
os.environ.setdefault("TQDM_DISABLE", "1")  # the peer's p_sample_loop always opens a tqdm bar

import torch  # noqa: E402

PEER_VENV_PYTHON = HERE / ".venv-peer" / "bin" / "python"
RESULT_MARK = "@@bench-result "
README_START, README_END = "<!-- bench:start -->", "<!-- bench:end -->"

# The peer's Unet runs resolution r at the width of its *previous* level (dims[i] for the
# blocks, dims[i+1] after the downsample), so widths per resolution match ours when its
# dims list is [ch, ch*m0, ch*m1, ...] shifted by one: init_dim=ch and dim_mults = our
# mults from the second level on, repeated at the end. It has attention at every level
# (linear attention where full_attn is False); full attention where we have attention.
PRESETS: dict[str, dict[str, Any]] = {
    "iddpm-cifar10": {
        "image_size": 32,
        "channels": 3,
        "timesteps": 4000,  # Improved DDPM's CIFAR-10 T
        "peer": {
            "dim": 128,
            "init_dim": 128,
            "dim_mults": (2, 2, 2, 2),  # widths 128@32, 256@16, 256@8, 256@4 as ours
            "full_attn": (False, True, True, False),  # ours: attention at 16 and 8 (and mid)
            "attn_heads": 4,
            "attn_dim_head": (32, 64, 64, 64),  # 4 heads of 64 at 256 channels, as ours
            "dropout": 0.3,
        },
    },
    "digits": {
        "image_size": 8,
        "channels": 1,
        "timesteps": 1000,  # params.yaml
        "peer": {
            "dim": 32,
            "init_dim": 32,
            "dim_mults": (2, 2),  # widths 32@8, 64@4 as ours
            "full_attn": (False, True),  # ours: attention at 4 (and mid)
            "attn_heads": 2,
            "attn_dim_head": 32,  # 2 heads of 32 at 64 channels, as ours
            "dropout": 0.0,
        },
    },
}

# Sizes per (device kind, mode). train: batch, warm-up steps, timed runs, steps per run.
# sample: batch, network evaluations per loop (a respaced process), runs. nll: images,
# examples per model call, T of the bound, runs.
SIZES: dict[str, dict[str, dict[str, dict[str, int]]]] = {
    "cpu": {
        "iddpm-cifar10": {
            "train": {"batch": 16, "warmup": 2, "runs": 5, "steps": 1},
            "sample": {"batch": 8, "nfe": 4, "runs": 3},
            "nll": {"images": 2, "max_batch": 8, "T": 8, "runs": 3},
        },
        "digits": {
            "train": {"batch": 64, "warmup": 5, "runs": 5, "steps": 10},
            "sample": {"batch": 256, "nfe": 20, "runs": 3},
            "nll": {"images": 64, "max_batch": 1024, "T": 64, "runs": 3},
        },
    },
    "cuda": {
        "iddpm-cifar10": {
            "train": {"batch": 128, "warmup": 5, "runs": 5, "steps": 5},
            "sample": {"batch": 256, "nfe": 20, "runs": 3},
            "nll": {"images": 64, "max_batch": 1024, "T": 64, "runs": 3},
        },
        "digits": {
            "train": {"batch": 64, "warmup": 10, "runs": 5, "steps": 20},
            "sample": {"batch": 256, "nfe": 50, "runs": 3},
            "nll": {"images": 64, "max_batch": 1024, "T": 256, "runs": 3},
        },
    },
    "quick": {
        "iddpm-cifar10": {
            "train": {"batch": 1, "warmup": 1, "runs": 1, "steps": 1},
            "sample": {"batch": 1, "nfe": 2, "runs": 1},
            "nll": {"images": 1, "max_batch": 2, "T": 2, "runs": 1},
        },
        "digits": {
            "train": {"batch": 4, "warmup": 1, "runs": 2, "steps": 1},
            "sample": {"batch": 2, "nfe": 2, "runs": 2},
            "nll": {"images": 1, "max_batch": 4, "T": 4, "runs": 2},
        },
    },
}
PROBE_SIZES = {"cpu": (1024, 2048, 4096), "cuda": (4096, 8192), "quick": (256, 512)}
TASKS = ("train", "sample", "nll")
PRECISIONS = ("fp32", "bf16")


# =============================================================== measuring tools
def _register_cpu_sdpa_flops() -> None:
    """torch's flop counter knows the CUDA attention kernels but not the CPU flash kernel that
    scaled_dot_product_attention dispatches to on CPU; count it with the same formula.
    Best effort: on a torch without these names the CPU attention FLOPs go uncounted."""
    try:
        _register_cpu_sdpa_flops_unguarded()
    except Exception as exc:  # an older or newer flop_counter API
        print(f"[bench] CPU attention FLOPs not counted: {exc}", file=sys.stderr)


def _register_cpu_sdpa_flops_unguarded() -> None:
    from torch.utils import flop_counter as fc

    aten = torch.ops.aten
    fwd = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    bwd = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    if fwd is not None and fwd not in fc.flop_registry:

        @fc.register_flop_formula(fwd)
        def _fwd(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
            return fc.sdpa_flop_count(query_shape, key_shape, value_shape)

    if bwd is not None and bwd not in fc.flop_registry:

        @fc.register_flop_formula(bwd)
        def _bwd(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
            return fc.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs (2 per multiply-add) of the matmuls, convolutions and attention that fn runs."""
    from torch.utils.flop_counter import FlopCounterMode

    _register_cpu_sdpa_flops()
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def _proc_status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


class PeakMemory:
    """Peak memory of a block above the memory in use when it starts.

    CUDA: torch's allocator statistics. CPU: the process's resident set, whose high-water
    mark (VmHWM) Linux resets on writing 5 to /proc/self/clear_refs; where that is not
    allowed, the mark since the process started (so only an isolated run is exact).
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.note = ""

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            self.base = (_proc_status_kb("VmRSS") or 0) * 1024
            try:
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                self.note = "VmHWM not resettable: peak since process start"
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self.peak = (_proc_status_kb("VmHWM") or 0) * 1024

    def result(self) -> dict[str, float]:
        kind = "allocated" if self.device.type == "cuda" else "rss"
        out = {
            "peak_mem_mb": round(max(0, self.peak - self.base) / 2**20, 1),
            f"peak_{kind}_mb": round(self.peak / 2**20, 1),
            "memory_kind": f"{kind} above the state before the first measured call",
        }
        if self.note:
            out["memory_note"] = self.note
        return out


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def median_throughput(seconds: list[float], items: int) -> dict[str, Any]:
    per_s = [items / s for s in seconds]
    return {
        "images_per_s": statistics.median(per_s),
        "runs_images_per_s": [round(x, 4) for x in per_s],
        "run_seconds": [round(s, 4) for s in seconds],
    }


# ======================================================================== probe
def _rate(fn: Callable[[], None], flops: float, device: torch.device) -> float:
    """GFLOP/s of fn: two warm-up calls, then the median of 5 timings of ~0.2 s each."""
    for _ in range(2):
        fn()
    reps = max(1, min(50, int(0.2 / max(timed(fn, device), 1e-6))))
    seconds = [timed(lambda: [fn() for _ in range(reps)], device) for _ in range(5)]
    return flops * reps / statistics.median(seconds) / 1e9


def _matmul_gflops(n: int, dtype: torch.dtype, device: torch.device) -> float:
    """A square n x n matmul (torch.mm: MKL/OpenBLAS on CPU, cuBLAS on CUDA)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    c = torch.empty(n, n, device=device, dtype=dtype)
    return _rate(lambda: torch.mm(a, b, out=c), 2 * n**3, device)


def _conv1x1_gflops(n: int, dtype: torch.dtype, device: torch.device) -> float:
    """The same n x n x n product as a 1x1 convolution over a 32 x (n/32) map: the oneDNN
    (CPU) or cuDNN kernels that the models' convolutions use, which can beat the BLAS matmul."""
    nhwc = torch.channels_last
    x = torch.randn(1, n, 32, n // 32, device=device, dtype=dtype).contiguous(memory_format=nhwc)
    w = torch.randn(n, n, 1, 1, device=device, dtype=dtype).contiguous(memory_format=nhwc)
    return _rate(lambda: torch.nn.functional.conv2d(x, w), 2 * n**3, device)


PROBE_KERNELS = {"matmul": _matmul_gflops, "conv1x1": _conv1x1_gflops}


def run_probe(spec: dict[str, Any]) -> dict[str, Any]:
    """The machine's limit per dtype: the best rate over square sizes and two GEMM kernels
    (matmul and a 1x1 convolution). On CUDA "fp32" follows torch's matmul TF32 setting (off by
    default) and "tf32" is added."""
    device = torch.device(spec["device"])
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    if device.type == "cuda":
        dtypes["tf32"] = torch.float32
    out: dict[str, Any] = {}
    for name, dtype in dtypes.items():
        best: dict[str, Any] = {"gflops": 0.0}
        tf32_before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        tf32 = name == "tf32" or (name == "fp32" and tf32_before[0])
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
        try:
            for kernel, measure in PROBE_KERNELS.items():
                for n in spec["sizes"]:
                    gflops = measure(n, dtype, device)
                    if gflops > best["gflops"]:
                        best = {"gflops": round(gflops, 1), "size": n, "kernel": kernel}
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32_before
        out[name] = best
    return out


# ======================================================================== ours
def _ours_config(preset: str, precision: str, device: str, batch: int, timesteps: int):
    from ddpm_repro.config import Config, DiffusionConfig, ModelConfig, TrainConfig

    # The Improved DDPM hybrid cell (LEARNED_RANGE variance, cosine schedule): the peer's
    # LearnedGaussianDiffusion trains the same objective.
    return Config(
        model=ModelConfig(preset=preset),
        diffusion=DiffusionConfig(schedule="cosine", timesteps=timesteps),
        train=TrainConfig(
            steps=10**9,
            batch_size=batch,
            lr=1e-4,
            warmup_steps=0,
            grad_clip=1.0,
            ema_rate=0.9999,
            bf16=precision == "bf16",
            device=device,
            log_every=10**9,
            checkpoint_every=10**9,
        ),
    )


def _ours_model(preset: str, precision: str, device: torch.device):
    from ddpm_repro.config import build_unet_config
    from ddpm_repro.models import UNet

    p = PRESETS[preset]
    config = _ours_config(preset, precision, device.type, 1, p["timesteps"])
    torch.manual_seed(0)
    unet_config = build_unet_config(
        config, image_size=p["image_size"], channels=p["channels"], num_classes=None
    )
    return UNet(unet_config).to(device).eval(), config


def _ours_process(timesteps: int):
    from ddpm_repro.config import DiffusionConfig, build_diffusion

    return build_diffusion(DiffusionConfig(schedule="cosine", timesteps=timesteps))


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _forward_flops_per_image(model: torch.nn.Module, shape: tuple[int, ...], device: torch.device) -> float:
    x = torch.randn(1, *shape, device=device)
    t = torch.tensor([1], device=device)
    with torch.no_grad():
        return count_flops(lambda: model(x, t))


def _ours_trainer(preset: str, precision: str, device: str, batch: int, ckpt_dir: str):
    """The Trainer whose train_step the benchmarks time: the hybrid cell of `preset` on random
    uint8 images (max(256, 4 * batch) of them), checkpoints under ckpt_dir."""
    import numpy as np

    from ddpm_repro.data.arrays import ImageArrays
    from ddpm_repro.training import Trainer

    p = PRESETS[preset]
    size, ch = p["image_size"], p["channels"]
    config = _ours_config(preset, precision, device, batch, p["timesteps"])
    n = max(256, 4 * batch)
    images = np.random.default_rng(0).integers(0, 256, (n, size, size, ch), dtype=np.uint8)
    data = ImageArrays(images=images, labels=np.full(n, -1, np.int64))
    return Trainer(config, data, ckpt_dir, progress=False)


def train_ours(spec: dict[str, Any]) -> dict[str, Any]:
    device, preset, precision, s = (
        torch.device(spec["device"]),
        spec["preset"],
        spec["precision"],
        spec["sizes"],
    )
    p = PRESETS[preset]
    size, ch = p["image_size"], p["channels"]
    with tempfile.TemporaryDirectory() as ckpt_dir:
        trainer = _ours_trainer(preset, precision, device.type, s["batch"], ckpt_dir)
        with PeakMemory(device) as mem:
            for _ in range(s["warmup"]):
                trainer.train_step()
            seconds = [
                timed(lambda: [trainer.train_step() for _ in range(s["steps"])], device)
                for _ in range(s["runs"])
            ]
        out = median_throughput(seconds, s["batch"] * s["steps"]) | mem.result()

        out["train_flops_per_image"] = train_flops_per_image(trainer, preset, device)
        out["fwd_flops_per_image"] = _forward_flops_per_image(trainer.model, (ch, size, size), device)
        out["params"] = _params(trainer.model)
    return out


def train_flops_per_image(trainer, preset: str, device: torch.device) -> int:
    """FLOPs of one training step's network work per image, counted in fp32 on one image
    through the trainer's training_losses and backward (the step's optimizer and EMA add
    elementwise work only); the trainer's gradients are cleared afterwards."""
    p = PRESETS[preset]
    size, ch = p["image_size"], p["channels"]
    model, diffusion = trainer.model, trainer.diffusion
    x0 = torch.rand(1, ch, size, size, device=device) * 2 - 1
    t = torch.tensor([p["timesteps"] // 2], device=device)

    def step() -> None:
        diffusion.training_losses(model, x0, t)["loss"].sum().backward()

    flops = count_flops(step)
    trainer.optimizer.zero_grad(set_to_none=True)
    return flops


def _plain_forwards(model, batches: list[int], shape, device, precision: str, runs: int, timesteps: int):
    """Median seconds of one model call per entry of batches (the loop's calls, nothing else)."""
    big = max(batches)
    x = torch.randn(big, *shape, device=device)
    t = torch.randint(0, timesteps, (big,), device=device)

    def calls() -> None:
        with torch.no_grad(), autocast(device, precision):
            for b in batches:
                model(x[:b], t[:b])

    calls()  # warm-up
    return statistics.median(timed(calls, device) for _ in range(runs))


def sample_ours(spec: dict[str, Any]) -> dict[str, Any]:
    from ddpm_repro.diffusion import respaced

    device, preset, precision, s = (
        torch.device(spec["device"]),
        spec["preset"],
        spec["precision"],
        spec["sizes"],
    )
    p = PRESETS[preset]
    shape = (p["channels"], p["image_size"], p["image_size"])
    model, _ = _ours_model(preset, precision, device)
    base = _ours_process(p["timesteps"])
    process, warm = respaced(base, str(s["nfe"])), respaced(base, "2")
    g = torch.Generator(device=device).manual_seed(0)

    def loop(proc) -> Callable[[], Any]:
        def run() -> None:
            with autocast(device, precision):
                proc.p_sample_loop(model, (s["batch"], *shape), generator=g)

        return run

    with PeakMemory(device) as mem:
        loop(warm)()
        seconds = [timed(loop(process), device) for _ in range(s["runs"])]
    out = median_throughput(seconds, s["batch"] * s["nfe"]) | mem.result()
    forward_s = _plain_forwards(
        model, [s["batch"]] * s["nfe"], shape, device, precision, s["runs"], p["timesteps"]
    )
    out["overhead"] = {"loop_s": statistics.median(seconds), "forwards_s": forward_s}
    out["overhead"]["ratio"] = out["overhead"]["loop_s"] / forward_s
    out["fwd_flops_per_image"] = _forward_flops_per_image(model, shape, device)
    out["params"] = _params(model)
    return out


def nll_ours(spec: dict[str, Any]) -> dict[str, Any]:
    device, preset, precision, s = (
        torch.device(spec["device"]),
        spec["preset"],
        spec["precision"],
        spec["sizes"],
    )
    p = PRESETS[preset]
    shape = (p["channels"], p["image_size"], p["image_size"])
    model, _ = _ours_model(preset, precision, device)
    T, n = s["T"], s["images"]
    process = _ours_process(T)
    g = torch.Generator(device=device).manual_seed(0)
    x0 = (torch.randint(0, 256, (n, *shape), generator=g, device=device).float() / 127.5) - 1
    # calc_bpd_loop's calls: per_call timesteps stacked per call, from T-1 down.
    per_call = max(1, s["max_batch"] // n)
    batches = [n * min(per_call, hi + 1) for hi in range(T - 1, -1, -per_call)]

    def run() -> None:
        with autocast(device, precision):
            process.calc_bpd_loop(model, x0, max_batch=s["max_batch"], generator=g)

    with PeakMemory(device) as mem:
        _plain_forwards(model, batches[:1], shape, device, precision, 1, T)  # warm-up, same shapes
        seconds = [timed(run, device) for _ in range(s["runs"])]
    out = median_throughput(seconds, n) | mem.result()
    out["term_images_per_s"] = out["images_per_s"] * T  # per network evaluation of one image
    out["images_per_s_at_profile_T"] = out["term_images_per_s"] / p["timesteps"]
    out["T"], out["profile_T"] = T, p["timesteps"]
    forward_s = _plain_forwards(model, batches, shape, device, precision, s["runs"], T)
    out["overhead"] = {"loop_s": statistics.median(seconds), "forwards_s": forward_s}
    out["overhead"]["ratio"] = out["overhead"]["loop_s"] / forward_s
    out["fwd_flops_per_image"] = _forward_flops_per_image(model, shape, device)
    out["params"] = _params(model)
    return out


# ======================================================================== peer
def _peer(preset: str, precision: str, device: torch.device, timesteps: int):
    from denoising_diffusion_pytorch import Unet

    p = PRESETS[preset]
    kw = dict(p["peer"])
    # Its flash path pins the CUDA flash kernel, which has no fp32: its own einsum
    # attention there. On CPU its flash path falls back to the math kernel as needed.
    kw["flash_attn"] = not (device.type == "cuda" and precision == "fp32")
    torch.manual_seed(0)
    unet = Unet(channels=p["channels"], learned_variance=True, **kw)
    return _peer_process(unet, preset, timesteps).to(device)


def _peer_process(unet, preset: str, timesteps: int):
    from denoising_diffusion_pytorch import LearnedGaussianDiffusion

    # Improved DDPM's hybrid loss (lambda 0.001), eps prediction, cosine schedule: the same
    # objective as ours. Its sampler ignores timesteps it was not built with, so a loop of
    # K evaluations is a process built with K timesteps.
    return LearnedGaussianDiffusion(
        unet,
        image_size=PRESETS[preset]["image_size"],
        timesteps=timesteps,
        objective="pred_noise",
        beta_schedule="cosine",
        vb_loss_weight=0.001,
    )


def train_peer(spec: dict[str, Any]) -> dict[str, Any]:
    from ema_pytorch import EMA

    device, preset, precision, s = (
        torch.device(spec["device"]),
        spec["preset"],
        spec["precision"],
        spec["sizes"],
    )
    p = PRESETS[preset]
    size, ch = p["image_size"], p["channels"]
    diffusion = _peer(preset, precision, device, p["timesteps"])
    # As its Trainer builds them: Adam(betas 0.9, 0.99), EMA(beta 0.995, update_every 10),
    # gradient clipping at 1.0; images in [0, 1] (it normalises to [-1, 1] itself).
    opt = torch.optim.Adam(diffusion.parameters(), lr=1e-4, betas=(0.9, 0.99))
    ema = EMA(diffusion, beta=0.995, update_every=10).to(device)
    g = torch.Generator().manual_seed(0)
    data = torch.rand(max(256, 4 * s["batch"]), ch, size, size, generator=g).to(device)

    def train_step() -> None:
        # Its Trainer.train inner loop, one accumulation step: loss, .item(), backward,
        # clip, step, zero_grad, ema.update.
        x = data[torch.randint(0, len(data), (s["batch"],), generator=g).to(device)]
        with autocast(device, precision):
            loss = diffusion(x)
        loss.item()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(diffusion.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        ema.update()

    with PeakMemory(device) as mem:
        for _ in range(s["warmup"]):
            train_step()
        seconds = [timed(lambda: [train_step() for _ in range(s["steps"])], device) for _ in range(s["runs"])]
    out = median_throughput(seconds, s["batch"] * s["steps"]) | mem.result()
    x = data[:1]
    t = torch.tensor([p["timesteps"] // 2], device=device)
    out["train_flops_per_image"] = count_flops(lambda: diffusion(x, times=t).backward())
    opt.zero_grad()
    out["fwd_flops_per_image"] = _forward_flops_per_image(diffusion.model, (ch, size, size), device)
    out["params"] = _params(diffusion.model)
    return out


def sample_peer(spec: dict[str, Any]) -> dict[str, Any]:
    device, preset, precision, s = (
        torch.device(spec["device"]),
        spec["preset"],
        spec["precision"],
        spec["sizes"],
    )
    p = PRESETS[preset]
    shape = (p["channels"], p["image_size"], p["image_size"])
    process = _peer(preset, precision, device, s["nfe"]).eval()
    warm = _peer_process(process.model, preset, 2).to(device).eval()

    def loop(proc) -> Callable[[], Any]:
        def run() -> None:
            with autocast(device, precision):
                proc.p_sample_loop((s["batch"], *shape))

        return run

    with PeakMemory(device) as mem:
        loop(warm)()
        seconds = [timed(loop(process), device) for _ in range(s["runs"])]
    out = median_throughput(seconds, s["batch"] * s["nfe"]) | mem.result()
    forward_s = _plain_forwards(
        process.model, [s["batch"]] * s["nfe"], shape, device, precision, s["runs"], s["nfe"]
    )
    out["overhead"] = {"loop_s": statistics.median(seconds), "forwards_s": forward_s}
    out["overhead"]["ratio"] = out["overhead"]["loop_s"] / forward_s
    out["fwd_flops_per_image"] = _forward_flops_per_image(process.model, shape, device)
    out["params"] = _params(process.model)
    return out


WORKERS: dict[tuple[str, str], Callable[[dict[str, Any]], dict[str, Any]]] = {
    ("train", "ours"): train_ours,
    ("sample", "ours"): sample_ours,
    ("nll", "ours"): nll_ours,
    ("train", "peer"): train_peer,
    ("sample", "peer"): sample_peer,
}


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    if spec.get("malloc") == "keep":  # as `ddpm-repro` runs; for ours and the peer alike
        from ddpm_repro.allocator import keep_freed_memory

        keep_freed_memory()
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    if spec["task"] == "probe":
        return run_probe(spec)
    return WORKERS[(spec["task"], spec["impl"])](spec)


# ================================================================= orchestration
def peer_status() -> tuple[bool, str]:
    try:
        from importlib.metadata import version

        import denoising_diffusion_pytorch  # noqa: F401

        return True, f"denoising-diffusion-pytorch {version('denoising-diffusion-pytorch')}"
    except Exception as exc:  # a missing or broken install: the run goes on without the peer
        return False, f"not importable ({type(exc).__name__}: {exc}); run benchmarks/setup_peer.sh"


def dispatch(spec: dict[str, Any], isolate: bool, timeout: float, note: str = "") -> dict[str, Any]:
    """One figure's result (the worker's dict, or {"error": ...}) with its wall time, run in a
    fresh interpreter when isolate; note (the round) goes into the progress lines."""
    label = (
        f"{spec['task']} {spec.get('impl', '')} {spec.get('preset', '')} {spec.get('precision', '')}".strip()
        + (f" {note}" if note else "")
    )
    print(f"[bench] {label} ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    try:
        if not isolate:
            result = run_worker(spec)
        else:
            proc = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
                stdout=subprocess.PIPE,
                text=True,
                timeout=timeout,
            )
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_MARK)]
            if proc.returncode or not lines:
                raise RuntimeError(f"worker exited {proc.returncode} without a result")
            result = json.loads(lines[-1][len(RESULT_MARK) :])
    except Exception as exc:  # one failed figure must not lose the others
        result = {"error": f"{type(exc).__name__}: {exc}"}
        print(f"[bench] {label}: FAILED {result['error']}", file=sys.stderr, flush=True)
    result["wall_s"] = round(time.perf_counter() - start, 2)
    if "images_per_s" in result:
        print(f"[bench] {label}: {result['images_per_s']:.4g} img/s ({result['wall_s']} s)", file=sys.stderr)
    return result


def _interpreter() -> str:
    exe = Path(sys.executable).absolute()
    return str(exe.relative_to(ROOT)) if exe.is_relative_to(ROOT) else "python"


def environment(device: torch.device) -> dict[str, Any]:
    """Versions, threads, load and the machine: `machine` is reporting.timing.machine()'s line
    (CPU model, cores, torch's CPU capability, AMX or not, the GPU if any)."""
    # Here, not at the top: the package's reporting/__init__ imports matplotlib, which the
    # figure workers (this script again) do not need.
    from ddpm_repro.reporting.timing import machine

    env = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "machine": machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "arch": platform.machine(),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cudnn_allow_tf32"] = torch.backends.cudnn.allow_tf32
        env["matmul_allow_tf32"] = torch.backends.cuda.matmul.allow_tf32
    return env


# =================================================================== rounds and goals
def spread(key: str, values: list[float | None]) -> dict[str, Any]:
    """{key: median, key_range: [min, max], key_rounds: values} over the rounds; values holds
    None for a round without a value, and median and range are None when no round has one."""
    got = [v for v in values if v is not None]
    return {
        key: statistics.median(got) if got else None,
        f"{key}_range": [min(got), max(got)] if got else None,
        f"{key}_rounds": values,
    }


def paired(a: list[float | None], b: list[float | None]) -> list[float | None]:
    """a_i / b_i round by round (None where either round has no value), as many as the shorter
    list has: in a run cut short, ours may have a round that the peer does not."""
    return [x / y if x is not None and y else None for x, y in zip(a, b, strict=False)]


def verdict(value_range: list[float] | None, target: float, at_least: bool) -> str:
    """A goal's verdict from the range of its value over the rounds: "met" when the whole range
    is on the goal's side of target, "not met" when all of it is on the other side, "not
    resolved" when it crosses target; "n/a" without a range."""
    if value_range is None:
        return "n/a"
    inside = [v >= target if at_least else v <= target for v in value_range]
    return "met" if all(inside) else "not met" if not any(inside) else "not resolved"


def combine(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One result from the rounds' results of a figure: each number the median over the rounds
    (the value itself where they agree), each dict combined alike, each text the first round's;
    lists (a round's own timed runs) stay in the rounds only."""
    out: dict[str, Any] = {}
    for key, first in results[0].items():
        values = [r[key] for r in results if key in r]
        if isinstance(first, dict):
            out[key] = combine(values)
        elif isinstance(first, int | float):
            out[key] = first if all(v == first for v in values) else statistics.median(values)
        elif not isinstance(first, list):
            out[key] = first
    return out


def summarise(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """A figure's fields from its rounds: combine() of those that measured, with images/s and
    the loop overhead's ratio as spread()s; {"error": ...} when no round measured."""
    good = [r for r in rounds if "error" not in r]
    if not good:
        return {"error": rounds[0]["error"]}
    out = combine(good) | spread("images_per_s", [r.get("images_per_s") for r in rounds])
    if "overhead" in out:
        out["overhead"] |= spread("ratio", [r.get("overhead", {}).get("ratio") for r in rounds])
    return out


def summarise_probe(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per dtype: GFLOP/s as a spread() over the rounds, with each round's kernel and size."""
    names = [k for r in rounds for k, v in r.items() if isinstance(v, dict)]
    return {
        name: spread("gflops", [r.get(name, {}).get("gflops") for r in rounds])
        | {
            "kernel_rounds": [r.get(name, {}).get("kernel") for r in rounds],
            "size_rounds": [r.get(name, {}).get("size") for r in rounds],
        }
        for name in dict.fromkeys(names)
    }


def derive(results: dict[str, Any]) -> None:
    """Summarise the rounds of the probe and of every figure; add GFLOP/s, fraction of peak and
    the ours/peer ratios, all round by round; evaluate the goals."""
    for f in results["figures"]:  # in place: main appends the next rounds to these dicts
        kept = {k: f[k] for k in ("preset", "precision", "task", "impl", "rounds")}
        f.clear()
        f.update({k: v for k, v in kept.items() if k != "rounds"} | summarise(kept["rounds"]))
        f["rounds"] = kept["rounds"]
    peak = results["peak"] = summarise_probe(results["probe_rounds"])
    models: dict[str, dict[str, dict[str, Any]]] = {}
    for f in results["figures"]:
        if "error" in f:
            continue
        m = models.setdefault(f["preset"], {}).setdefault(f["impl"], {})
        for key in ("params", "fwd_flops_per_image", "train_flops_per_image"):
            if key in f:
                m[key] = f[key]
        flops = f.get("train_flops_per_image" if f["task"] == "train" else "fwd_flops_per_image")
        rate = "term_images_per_s" if f["task"] == "nll" else "images_per_s"
        if flops:
            gflops = [r[rate] * flops / 1e9 if rate in r else None for r in f["rounds"]]
            f |= spread("gflops", gflops)
            if precision_peak := peak.get(f["precision"]):
                f |= spread("fraction_of_peak", paired(gflops, precision_peak["gflops_rounds"]))
    results["models"] = models

    def find(preset: str, precision: str, task: str, impl: str) -> dict[str, Any] | None:
        for f in results["figures"]:
            if (f["preset"], f["precision"], f["task"], f["impl"]) == (preset, precision, task, impl):
                return None if "error" in f else f
        return None

    ratios = []
    for f in results["figures"]:
        peer = find(f["preset"], f["precision"], f["task"], "peer")
        if f["impl"] != "ours" or "error" in f or peer is None:
            continue
        r = {"preset": f["preset"], "precision": f["precision"], "task": f["task"]}
        r |= spread("images_per_s", paired(f["images_per_s_rounds"], peer["images_per_s_rounds"]))
        if "gflops" in f and "gflops" in peer:
            r |= spread("gflops", paired(f["gflops_rounds"], peer["gflops_rounds"]))
        if f.get("peak_mem_mb") and peer.get("peak_mem_mb"):
            r["peak_mem"] = f["peak_mem_mb"] / peer["peak_mem_mb"]
        ratios.append(r)
    results["ratios"] = ratios

    goals = []

    def goal(name: str, values: list[float | None], target: float, at_least: bool = True) -> None:
        s = spread("value", values)
        verdict_ = verdict(s["value_range"], target, at_least)
        goals.append({"goal": name, "target": target, "at_least": at_least, **s, "verdict": verdict_})

    def ratio(preset: str, precision: str, task: str) -> list[float | None]:
        for r in ratios:
            if (r["preset"], r["precision"], r["task"]) == (preset, precision, task):
                return r["images_per_s_rounds"]
        return []

    presets, precisions = results["presets"], results["precisions"]
    if "digits" in presets:
        for prec in precisions:
            for task in ("train", "sample"):
                goal(f"digits {task} {prec}: ours/peer img/s", ratio("digits", prec, task), 1.5)
    if "iddpm-cifar10" in presets and "fp32" in precisions:
        goal("iddpm-cifar10 train fp32: ours/peer img/s", ratio("iddpm-cifar10", "fp32", "train"), 1.1)
        f = find("iddpm-cifar10", "fp32", "train", "ours")
        fractions = (f or {}).get("fraction_of_peak_rounds", [])
        goal("iddpm-cifar10 train fp32: fraction of fp32 peak", fractions, 0.85)
    if "iddpm-cifar10" in presets and "bf16" in precisions:
        goal("iddpm-cifar10 train bf16: ours/peer img/s", ratio("iddpm-cifar10", "bf16", "train"), 1.0)
    if "fp32" in precisions and "bf16" in precisions:
        # bf16 doubles the matmul peak only where the CPU has matrix units (AMX) or on a GPU
        amx = "no AMX" not in results["environment"]["machine"] or results["device"] != "cpu"
        for preset in presets:
            a, b = find(preset, "bf16", "train", "ours"), find(preset, "fp32", "train", "ours")
            values = paired(a["images_per_s_rounds"], b["images_per_s_rounds"]) if a and b else []
            goal(f"{preset} train: ours bf16 / ours fp32 img/s", values, 2.0 if amx else 1.6)
    for f in results["figures"]:
        if f["impl"] == "ours" and f["task"] in ("sample", "nll") and "overhead" in f:
            goal(
                f"{f['preset']} {f['task']} {f['precision']}: loop / plain forwards",
                f["overhead"]["ratio_rounds"],
                1.05,
                at_least=False,
            )
    results["goals"] = goals


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    return f"{x:.{digits}g}" if abs(x) < 10**digits else f"{x:.0f}"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def _range(value_range: list[float] | None, digits: int = 3) -> str:
    """A range as "min-max", or "n/a" without one."""
    return "n/a" if value_range is None else "-".join(_fmt(v, digits) for v in value_range)


def _span(d: dict[str, Any] | None, key: str, digits: int = 3) -> str:
    """d[key] with its range over the rounds, "median (min-max)"; the median alone where the
    rounds agree (one round); "n/a" without d."""
    if d is None:
        return "n/a"
    value, value_range = d.get(key), d.get(f"{key}_range")
    if value is None or value_range is None or value_range[0] == value_range[1]:
        return _fmt(value, digits)
    return f"{_fmt(value, digits)} ({_range(value_range, digits)})"


def _distinct(values: list[Any]) -> str:
    """The different values, in order of first appearance, comma-separated."""
    return ", ".join(str(v) for v in dict.fromkeys(v for v in values if v is not None)) or "n/a"


VERDICT_TEXT = {"met": "met", "not met": "**not met**", "not resolved": "not resolved", "n/a": "n/a"}


def markdown(results: dict[str, Any]) -> str:
    env = results["environment"]
    load = f", load average {env['load_average_1min']} at start" if results["device"] == "cpu" else ""
    rounds, where = results["rounds"], f"{env['machine']}; {env['threads']} threads{load}"
    lines = [
        f"Measured {results['date']} on {results['device']} ({where}), "
        f"torch {env['torch']}, Python {env['python']}; peer: {results['peer']}.",
        "",
        "C allocator: "
        + (
            "freed blocks kept for reuse in every figure's process, ours and the peer's alike "
            "(`--malloc keep`, ddpm_repro/allocator.py, as `ddpm-repro` runs)."
            if env.get("malloc", "default") == "keep"
            else "glibc's defaults (`--malloc default`)."
        ),
        "",
        f"Command: `{results['command']}`"
        + (" (**--quick: a smoke run, not a measurement**)" if results["quick"] else ""),
        "",
        f"{rounds} round{'s' if rounds > 1 else ''} per figure, ours and the peer (if run) alternating"
        + (", each run in a fresh process" if results["isolated"] else "")
        + ": a value is the median over the rounds with its range (min-max) in brackets; a ratio "
        "is taken round by round (round i over round i), then its median and range.",
        "",
        "**Machine limit** (best square GEMM: torch.mm or a 1x1 convolution, sizes n x n x n):",
        "",
        "| dtype | GFLOP/s | kernel | n |",
        "|---|---:|---|---:|",
    ]
    for name, p in results.get("peak", {}).items():
        kernels, sizes = _distinct(p["kernel_rounds"]), _distinct(p["size_rounds"])
        lines.append(f"| {name} | {_span(p, 'gflops', 4)} | {kernels} | {sizes} |")
    lines += [
        "",
        "**Models** (FLOPs: matmul, convolution and attention, 2 per multiply-add, per 32x32 or 8x8 image):",
        "",
        "| preset | impl | params | forward GFLOP/image | train step GFLOP/image |",
        "|---|---|---:|---:|---:|",
    ]
    for preset, impls in results.get("models", {}).items():
        for impl, m in impls.items():
            fwd, train = m.get("fwd_flops_per_image"), m.get("train_flops_per_image")
            lines.append(
                f"| {preset} | {impl} | {m.get('params', 0) / 1e6:.2f}M | "
                f"{_fmt(fwd and fwd / 1e9, 4)} | {_fmt(train and train / 1e9, 4)} |"
            )
    lines += [
        "",
        "**Throughput** (median of each round's median of runs; sample: images/s per network "
        "evaluation; nll: images/s through the whole bound at the T shown, and per term). GFLOP/s "
        "and % of the matmul peak of the same precision and round; memory: peak above the state "
        "before the first measured call"
        + (
            " (in one process: approximate on CPU)."
            if results["device"] == "cpu" and not results["isolated"]
            else "."
        ),
        "",
        "| preset | precision | figure | ours img/s | peer img/s | ours/peer | ours GFLOP/s (% peak) "
        "| peer GFLOP/s (% peak) | ours MB | peer MB |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    by_key = {(f["preset"], f["precision"], f["task"], f["impl"]): f for f in results["figures"]}
    ratios = {(r["preset"], r["precision"], r["task"]): r for r in results.get("ratios", [])}
    for preset in results["presets"]:
        for prec in results["precisions"]:
            for task in results["tasks"]:
                ours, peer = (
                    by_key.get((preset, prec, task, "ours")),
                    by_key.get((preset, prec, task, "peer")),
                )
                if ours is None:
                    continue
                name = {"train": "train step", "sample": "sample / NFE"}.get(task, "")
                if task == "nll":
                    name = f"nll, T={ours.get('T', '?')} bound"
                cells = []
                for f in (ours, peer):
                    if f is None:
                        cells.append(("n/a", "n/a", "n/a"))
                    elif "error" in f:
                        cells.append(("error", "n/a", "n/a"))
                    else:
                        gf = f.get("gflops")
                        gtxt = f"{_fmt(gf, 4)} ({_pct(f.get('fraction_of_peak'))})" if gf else "n/a"
                        cells.append((_span(f, "images_per_s", 4), gtxt, _fmt(f.get("peak_mem_mb"), 4)))
                r = _span(ratios.get((preset, prec, task)), "images_per_s")
                lines.append(
                    f"| {preset} | {prec} | {name} | {cells[0][0]} | {cells[1][0]} | {r} | "
                    f"{cells[0][1]} | {cells[1][1]} | {cells[0][2]} | {cells[1][2]} |"
                )
                if task == "nll" and "term_images_per_s" in ours:
                    per_term = _fmt(ours["term_images_per_s"], 4)
                    lines.append(f"| {preset} | {prec} | nll, per term | {per_term} | n/a | n/a | | | | |")
                    lines.append(
                        f"| {preset} | {prec} | nll at T={ours['profile_T']} | "
                        f"{_fmt(ours['images_per_s_at_profile_T'], 4)} | n/a | n/a | | | | |"
                    )
    flops_ratios = [r for r in ratios.values() if "gflops" in r]
    if flops_ratios:
        lines += [
            "",
            "ours/peer in achieved GFLOP/s (the two models' FLOPs differ; see Models): "
            + ", ".join(
                f"{r['preset']} {r['task']} {r['precision']} {_span(r, 'gflops')}" for r in flops_ratios
            )
            + ".",
        ]
    overheads = [f for f in results["figures"] if f["impl"] == "ours" and "overhead" in f]
    if overheads:
        lines += ["", "**Loop overhead** (loop time / the same model calls alone, in the same round):", ""]
        lines += ["| preset | precision | loop | ratio |", "|---|---|---|---:|"]
        for f in overheads:
            loop = "p_sample_loop" if f["task"] == "sample" else "calc_bpd_loop"
            lines.append(f"| {f['preset']} | {f['precision']} | {loop} | {_span(f['overhead'], 'ratio')} |")
    if results.get("goals"):
        lines += [
            "",
            "**Goals** (met: the whole range over the rounds is on the goal's side of the target; "
            "not met: all of it is on the other side; not resolved: the range crosses the target):",
            "",
            "| goal | median | range | target | verdict |",
            "|---|---:|---:|---:|---|",
        ]
        for g in results["goals"]:
            sign = ">=" if g["at_least"] else "<="
            lines.append(
                f"| {g['goal']} | {_fmt(g['value'])} | {_range(g['value_range'])} | {sign} {g['target']} "
                f"| {VERDICT_TEXT[g['verdict']]} |"
            )
    failed = [
        f"{f['task']} {f['impl']} {f['preset']} {f['precision']} round {i + 1}: {r['error']}"
        for f in results["figures"]
        for i, r in enumerate(f["rounds"])
        if "error" in r
    ] + [f"probe round {i + 1}: {r['error']}" for i, r in enumerate(results["probe_rounds"]) if "error" in r]
    if failed:
        lines += ["", "Failed rounds: " + "; ".join(failed)]
    return "\n".join(lines) + "\n"


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def update_readme(readme: Path, section: str) -> None:
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        raise SystemExit(f"{readme} has no {README_START} ... {README_END} markers")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    write_atomic(readme, f"{head}{README_START}\n{section}{README_END}{tail}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks that everything runs")
    ap.add_argument("--skip-peer", action="store_true", help="do not measure denoising-diffusion-pytorch")
    ap.add_argument("--out", type=Path, help="results folder (default benchmarks/results, quick: .../quick)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--presets", default=",".join(PRESETS), help="comma-separated subset")
    ap.add_argument("--precisions", default=",".join(PRECISIONS), help="comma-separated: fp32,bf16")
    ap.add_argument("--tasks", default=",".join(TASKS), help="comma-separated: train,sample,nll")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    ap.add_argument(
        "--rounds",
        type=int,
        help="rounds per figure, ours and the peer alternating (default 3, with --quick 2)",
    )
    ap.add_argument(
        "--isolate",
        choices=("auto", "process", "none"),
        default="auto",
        help="one process per figure (auto: on CPU, except with --quick)",
    )
    ap.add_argument(
        "--malloc",
        choices=("keep", "default"),
        default="keep",
        help="keep: the C allocator settings `ddpm-repro` applies (ddpm_repro/allocator.py), in every "
        "figure's process, ours and the peer's alike; default: glibc's own",
    )
    ap.add_argument("--worker-timeout", type=float, default=1800, help="seconds per isolated figure")
    ap.add_argument("--update-readme", action="store_true", help="write the table into benchmarks/README.md")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 3)
    if rounds < 1:
        ap.error("--rounds must be at least 1")

    if args.worker:
        print(RESULT_MARK + json.dumps(run_worker(json.loads(args.worker))), flush=True)
        return 0

    if not args.skip_peer and not peer_status()[0] and PEER_VENV_PYTHON.exists():
        here = Path(sys.executable).absolute()
        if here != PEER_VENV_PYTHON.absolute():
            print(f"[bench] re-running under {PEER_VENV_PYTHON} for the peer", file=sys.stderr)
            os.execv(
                str(PEER_VENV_PYTHON), [str(PEER_VENV_PYTHON), str(Path(__file__).resolve()), *sys.argv[1:]]
            )

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else None
    device = device or torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    kind = "quick" if args.quick else device.type
    isolate = args.isolate == "process" or (
        args.isolate == "auto" and device.type == "cpu" and not args.quick
    )
    out_dir = args.out or (HERE / "results" / ("quick" if args.quick else ""))
    presets = [p for p in args.presets.split(",") if p]
    precisions = [p for p in args.precisions.split(",") if p]
    tasks = [t for t in args.tasks.split(",") if t]
    for name, values, valid in (
        ("preset", presets, PRESETS),
        ("precision", precisions, PRECISIONS),
        ("task", tasks, TASKS),
    ):
        bad = [v for v in values if v not in valid]
        if bad:
            ap.error(f"unknown {name} {bad}; valid: {', '.join(valid)}")
    has_peer, peer_text = (False, "skipped (--skip-peer)") if args.skip_peer else peer_status()

    results: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": shlex.join([_interpreter(), "benchmarks/bench.py", *sys.argv[1:]]),
        "quick": args.quick,
        "device": str(device),
        "environment": environment(device) | {"malloc": args.malloc},
        "peer": peer_text,
        "isolated": isolate,
        "rounds": rounds,
        "presets": presets,
        "precisions": precisions,
        "tasks": tasks,
        "sizes": {p: SIZES[kind][p] for p in presets},
        "probe_rounds": [],
        "figures": [],
    }
    print(f"[bench] {results['environment']}; peer: {peer_text}", file=sys.stderr)
    load = results["environment"]["load_average_1min"]
    if device.type == "cpu" and load is not None and load > 0.5:
        print(
            f"[bench] WARNING: load average {load}: other processes share the CPU, so these figures "
            "are low (with 2 threads a busy core can make small models 10-100x slower)",
            file=sys.stderr,
        )
    json_path, md_path = out_dir / f"bench_{device.type}.json", out_dir / f"bench_{device.type}.md"

    def save() -> None:  # after every round: a run cut short keeps what it measured
        derive(results)
        write_atomic(json_path, json.dumps(results, indent=2) + "\n")
        write_atomic(md_path, markdown(results))

    common = {"device": str(device), "threads": args.threads, "malloc": args.malloc}
    probe = {"task": "probe", "sizes": PROBE_SIZES[kind], **common}
    for i in range(rounds):
        note = f"round {i + 1}/{rounds}"
        results["probe_rounds"].append(dispatch(probe, isolate, args.worker_timeout, note))
        save()
    for preset in presets:
        for precision in precisions:
            for task in tasks:
                figures = [
                    {"preset": preset, "precision": precision, "task": task, "impl": impl, "rounds": []}
                    for impl in ("ours", "peer")
                    if (task, impl) in WORKERS and (impl == "ours" or has_peer)
                ]
                for i in range(rounds):  # ours, peer, ours, peer, ...
                    for figure in figures:
                        spec = {k: figure[k] for k in ("task", "impl", "preset", "precision")}
                        spec |= {"sizes": SIZES[kind][preset][task], **common}
                        note = f"round {i + 1}/{rounds}"
                        figure["rounds"].append(dispatch(spec, isolate, args.worker_timeout, note))
                        if i == 0:  # listed from its first round on
                            results["figures"].append(figure)
                        save()
    save()
    table = markdown(results)
    print(table)
    print(f"[bench] wrote {json_path} and {md_path}", file=sys.stderr)
    if args.update_readme:
        update_readme(HERE / "README.md", table)
        print(f"[bench] updated {HERE / 'README.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
