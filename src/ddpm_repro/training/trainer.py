"""The training loop: Adam (weight decay 0), lr warm-up, gradient clipping, EMA with
warm-up, microbatching, optional bf16 autocast, DDP, atomic checkpoints and exact resume.

Every random choice of a step (which images, which t, which noise, which labels are
dropped) comes from a generator seeded by (seed, step) and is drawn for the whole global
batch, each process taking its slice: a run resumed at step s sees exactly what an
uninterrupted run sees, and N processes see what one process with the same global batch
sees. Dropout uses torch's RNG, whose state the checkpoint carries.
"""

from __future__ import annotations

import math
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
import torch.distributed as dist
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel

from ..config import Config, build_diffusion, build_unet_config, config_to_dict
from ..data.arrays import ImageArrays
from ..diffusion import create_named_schedule_sampler
from ..errors import NonFiniteLossError, UserError
from ..models import UNet
from ..progress import Progress
from ..seeding import derive_seed
from .checkpoint import (
    FORMAT_VERSION,
    checkpoint_path,
    fault_point,
    load_latest,
    move_aside,
    remove_partial_writes,
    save_checkpoint,
)
from .distributed import DistContext, setup_distributed
from .ema import EMA


class Callback(Protocol):
    """Receives training events on the main process (MLflow sits behind one in tracking.py)."""

    def on_start(self, step: int, checkpoint_dir: Path) -> None:
        """`Trainer.run` begins at `step`: 0 for a new cell, the resumed checkpoint's step
        otherwise; `checkpoint_dir` is the cell's checkpoint folder."""
        ...

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        """Means over the last train.log_every steps (loss, mse, vb, aux, grad_norm, lr, images_per_s)."""
        ...

    def on_checkpoint(self, step: int, path: Path) -> None:
        """A checkpoint for `step` was written to `path`."""
        ...


@dataclass(frozen=True)
class TrainResult:
    """What `Trainer.run` ends with: the final step, its checkpoint and the last logged metrics
    (empty when there was nothing left to train)."""

    step: int
    checkpoint: Path
    metrics: dict[str, float]


_STEP_STREAM, _EPOCH_STREAM, _DROPOUT_STREAM, _PROBE_STREAM = 1, 2, 3, 4
PROBE_IMAGES = 64

# Train keys that change how a run is carried out, not what it computes (up to float
# rounding): a checkpoint resumes across them. More steps extend a run; logging,
# checkpointing, the device, the number of processes, the microbatch (the global batch and
# its sampling are fixed by batch_size and the seed), bf16 autocast and compilation do not
# change the objective or the data it sees.
RESUMABLE_TRAIN_KEYS = {
    "steps",
    "log_every",
    "checkpoint_every",
    "keep_checkpoints",
    "device",
    "nproc",
    "microbatch",
    "bf16",
    "compile",
}


class Trainer:
    """Trains one grid cell. `Trainer(config, data, checkpoint_dir).run()`.

    Args:
        config: the resolved params.
        data: the training split (uint8 NHWC + labels).
        checkpoint_dir: where checkpoints go; an existing usable checkpoint is resumed.
        callbacks: told when training starts (or resumes), receive metrics every
            train.log_every steps and each checkpoint; on the main process only.
        progress: a tqdm bar on a terminal; status lines otherwise (main process only).
        restart_on_change: if the checkpoints in checkpoint_dir were trained with other
            settings, move them aside to `<checkpoint_dir>.replaced-<n>/` and start over;
            otherwise that is an error. Nothing is ever deleted.
    """

    def __init__(
        self,
        config: Config,
        data: ImageArrays,
        checkpoint_dir: str | Path,
        callbacks: tuple[Callback, ...] = (),
        progress: bool = True,
        dist_ctx: DistContext | None = None,
        restart_on_change: bool = False,
    ) -> None:
        self.config = config
        self.restart_on_change = restart_on_change
        tc = config.train
        self.ctx = dist_ctx or setup_distributed(tc.device)
        if tc.batch_size % self.ctx.world_size:
            raise UserError(
                f"train.batch_size={tc.batch_size} is not divisible by the {self.ctx.world_size} processes"
            )
        if len(data.images) < tc.batch_size:
            raise UserError(
                f"the training split has {len(data.images)} images, "
                f"fewer than train.batch_size={tc.batch_size}"
            )
        self.local_batch = tc.batch_size // self.ctx.world_size
        self.checkpoint_dir = Path(checkpoint_dir)
        self.callbacks = callbacks
        self.progress = progress
        device = self.ctx.device

        n, h, w, c = data.images.shape
        if n == 0:
            raise UserError("the training data is empty")
        if h != w:
            raise UserError(f"images must be square, got {h}x{w}")
        self.num_classes = data.num_classes
        if config.model.class_cond and self.num_classes is None:
            raise UserError("model.class_cond is true but the data has no labels")
        self.images = torch.from_numpy(data.images).permute(0, 3, 1, 2).contiguous().to(device)
        self.labels = torch.from_numpy(data.labels).to(device)
        self.unet_config = build_unet_config(config, image_size=h, channels=c, num_classes=self.num_classes)

        torch.manual_seed(tc.seed)  # the same initial weights on every process
        self.model = UNet(self.unet_config).to(device)
        self.diffusion = build_diffusion(config.diffusion)
        self.sampler = create_named_schedule_sampler(
            config.diffusion.timestep_sampler, config.diffusion.timesteps
        )
        # The fused kernel updates every tensor in one op: ~4x faster than the loop on CPU.
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=tc.lr, weight_decay=0.0, fused=device.type in ("cpu", "cuda")
        )
        self.ema = EMA(self.model, tc.ema_rate)
        self.step = 0
        torch.manual_seed(derive_seed(tc.seed, _DROPOUT_STREAM, self.ctx.rank))  # dropout stream, per process
        self._perms: dict[int, Tensor] = {}
        self._resume()
        if tc.compile:  # in place, so the state_dict keys (and checkpoints) stay the eager model's
            self.model.compile()
        self.ddp = (
            DistributedDataParallel(self.model, device_ids=[device] if device.type == "cuda" else None)
            if self.ctx.world_size > 1
            else None
        )

    # ------------------------------------------------------------ checkpoints
    def _payload(self) -> dict:
        rng = {"torch": torch.get_rng_state()}
        if self.ctx.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.ctx.device)
        return {
            "format": FORMAT_VERSION,
            "step": self.step,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "sampler": self.sampler.state_dict(),
            "rng": rng,
            "config": config_to_dict(self.config),
            "unet": config_to_dict(self.unet_config),
        }

    def _changed_settings(self, ckpt: dict) -> list[str]:
        """Keys whose change makes a checkpoint's run a different run than this config's."""
        saved, current = ckpt["config"], config_to_dict(self.config)
        # A key the checkpoint lacks was added to the config after it was written, when the
        # code behaved as that key's default does.
        defaults = config_to_dict(type(self.config)())
        changed = [
            f"{section}.{key}"
            for section in ("model", "diffusion", "train")
            for key, value in current[section].items()
            if not (section == "train" and key in RESUMABLE_TRAIN_KEYS)
            and saved[section].get(key, defaults[section][key]) != value
        ]
        if int(ckpt["step"]) > self.config.train.steps:
            changed.append(f"train.steps (the checkpoint is at step {ckpt['step']})")
        return changed

    def _resume(self) -> None:
        if self.ctx.is_main:
            remove_partial_writes(self.checkpoint_dir)
        found = load_latest(self.checkpoint_dir, map_location=self.ctx.device)
        if found is None:
            return
        path, ckpt = found
        changed = self._changed_settings(ckpt)
        if changed:
            message = f"checkpoint '{path}' was trained with different settings ({', '.join(changed)})"
            if not self.restart_on_change:
                raise UserError(
                    f"{message}; use a new checkpoint directory, or --restart-on-change to move "
                    "these checkpoints aside and start over"
                )
            if self.ctx.is_main:
                moved = move_aside(self.checkpoint_dir)
                print(f"{message}: moved them to '{moved}' and starting over", file=sys.stderr)
            if self.ctx.world_size > 1:
                dist.barrier()
            return
        self.model.load_state_dict(ckpt["model"])
        self.ema.load_state_dict(ckpt["ema"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.sampler.load_state_dict(ckpt["sampler"])
        self.step = int(ckpt["step"])
        if self.ctx.is_main:
            print(f"resuming {self.config.cell} from step {self.step} ({path})", file=sys.stderr)
            torch.set_rng_state(ckpt["rng"]["torch"].cpu())
            if "cuda" in ckpt["rng"] and self.ctx.device.type == "cuda":
                torch.cuda.set_rng_state(ckpt["rng"]["cuda"].cpu(), self.ctx.device)
        else:
            torch.manual_seed(derive_seed(self.config.train.seed, _DROPOUT_STREAM, self.ctx.rank, self.step))

    def save(self) -> Path:
        """Write this step's checkpoint (main process) and return its path (every process)."""
        if self.ctx.is_main:
            path = save_checkpoint(self.checkpoint_dir, self._payload(), self.config.train.keep_checkpoints)
            for cb in self.callbacks:
                cb.on_checkpoint(self.step, path)
        if self.ctx.world_size > 1:
            dist.barrier()
        return checkpoint_path(self.checkpoint_dir, self.step)

    # -------------------------------------------------------------- batches
    def _permutation(self, epoch: int) -> Tensor:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(derive_seed(self.config.train.seed, _EPOCH_STREAM, epoch))
            self._perms = {e: p for e, p in self._perms.items() if e >= epoch - 1}
            self._perms[epoch] = torch.randperm(len(self.images), generator=g)
        return self._perms[epoch]

    def batch(self, step: int) -> dict[str, Tensor]:
        """This process's slice of the global batch of `step`: x0, t, weights, noise, y."""
        tc, n = self.config.train, len(self.images)
        positions = torch.arange(step * tc.batch_size, (step + 1) * tc.batch_size)
        epochs = positions // n
        index = torch.empty_like(positions)
        for epoch in epochs.unique().tolist():
            mask = epochs == epoch
            index[mask] = self._permutation(epoch)[positions[mask] % n]
        g = torch.Generator().manual_seed(derive_seed(tc.seed, _STEP_STREAM, step))
        t, weights = self.sampler.sample(tc.batch_size, generator=g)
        noise = torch.randn((tc.batch_size, *self.images.shape[1:]), generator=g)
        drop = torch.rand(tc.batch_size, generator=g) < tc.class_drop_prob
        lo, hi = self.ctx.rank * self.local_batch, (self.ctx.rank + 1) * self.local_batch
        device = self.ctx.device
        index = index[lo:hi].to(device)
        out = {
            "x0": self.images[index].float() / 127.5 - 1.0,
            "t": t[lo:hi].to(device),
            "weights": weights[lo:hi].to(device),
            "noise": noise[lo:hi].to(device),
        }
        if self.unet_config.num_classes:
            y = self.labels[index]
            out["y"] = torch.where(drop[lo:hi].to(device), torch.full_like(y, self.num_classes), y)
        return out

    # ----------------------------------------------------------------- steps
    def train_step(self) -> dict[str, float]:
        """One optimizer step over the global batch; returns its metrics."""
        tc = self.config.train
        model = self.ddp or self.model
        model.train()
        lr = tc.lr * min(1.0, (self.step + 1) / tc.warmup_steps) if tc.warmup_steps else tc.lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        b = self.batch(self.step)
        micro = tc.microbatch or self.local_batch
        sums: dict[str, float] = {}
        starts = range(0, self.local_batch, micro)
        autocast = torch.autocast(self.ctx.device.type, dtype=torch.bfloat16, enabled=tc.bf16)
        for i, start in enumerate(starts):
            sl = slice(start, start + micro)
            kwargs = {"y": b["y"][sl]} if "y" in b else None
            last = i == len(starts) - 1
            with model.no_sync() if self.ddp is not None and not last else nullcontext():
                with autocast:
                    terms = self.diffusion.training_losses(
                        model, b["x0"][sl], b["t"][sl], kwargs, noise=b["noise"][sl]
                    )
                loss = (terms["loss"] * b["weights"][sl]).sum() / self.local_batch
                loss.backward()
            fault_point("train-step", self.step + 1)  # tests: a kill between backward and update
            self.sampler.update_with_local_losses(b["t"][sl], terms["loss"].detach())
            sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
            for key, value in terms.items():
                if key != "loss":
                    sums[key] = sums.get(key, 0.0) + float(value.detach().sum()) / self.local_batch
        if self.ctx.world_size > 1:  # each process summed its own slice: the global batch's means
            keys = sorted(sums)
            both = torch.tensor([sums[k] for k in keys], dtype=torch.float64, device=self.ctx.device)
            dist.all_reduce(both)
            sums = dict(zip(keys, (both / self.ctx.world_size).tolist(), strict=True))
        max_norm = tc.grad_clip if tc.grad_clip > 0 else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm))
        if not (math.isfinite(sums["loss"]) and math.isfinite(grad_norm)):
            raise NonFiniteLossError(
                f"non-finite loss at step {self.step + 1} (loss {sums['loss']}, grad norm {grad_norm}); "
                f"the weights were not updated and the last checkpoint in '{self.checkpoint_dir}' is intact"
            )
        self.optimizer.step()
        self.ema.update(self.model, self.step)
        self.step += 1
        return {**sums, "grad_norm": grad_norm, "lr": lr}

    @torch.no_grad()
    def probe_loss(self) -> float:
        """The objective of the current (raw) weights on a fixed batch: the first PROBE_IMAGES
        training images with t and noise from a fixed seed, in eval mode, t uniform (no
        importance weights). Unlike the last minibatch's loss it depends on the weights
        alone, so the CI regression can pin it."""
        n = min(PROBE_IMAGES, len(self.images))
        g = torch.Generator().manual_seed(derive_seed(self.config.train.seed, _PROBE_STREAM))
        t = torch.randint(0, self.diffusion.num_timesteps, (n,), generator=g)
        noise = torch.randn((n, *self.images.shape[1:]), generator=g)
        device = self.ctx.device
        x0 = self.images[:n].float() / 127.5 - 1.0
        kwargs = {"y": self.labels[:n]} if self.unet_config.num_classes else None
        was_training = self.model.training
        self.model.eval()
        try:
            terms = self.diffusion.training_losses(
                self.model, x0, t.to(device), kwargs, noise=noise.to(device)
            )
        finally:
            self.model.train(was_training)
        return float(terms["loss"].mean())

    def run(self) -> TrainResult:
        """Train until train.steps, checkpointing every train.checkpoint_every and at the end."""
        tc = self.config.train
        bar = Progress(
            f"train {self.config.cell}",
            tc.steps,
            "step",
            initial=min(self.step, tc.steps),
            bar=self.progress,
            enabled=self.ctx.is_main,
        )
        if self.ctx.is_main:
            for cb in self.callbacks:
                cb.on_start(self.step, self.checkpoint_dir)
        window: dict[str, float] = {}
        window_steps, window_start = 0, time.perf_counter()
        metrics: dict[str, float] = {}
        last_path = None
        while self.step < tc.steps:
            for key, value in self.train_step().items():
                window[key] = window.get(key, 0.0) + value
            window_steps += 1
            figures = {}
            if self.step % tc.log_every == 0 or self.step == tc.steps:
                elapsed = time.perf_counter() - window_start
                metrics = {k: v / window_steps for k, v in window.items()}
                metrics["images_per_s"] = window_steps * tc.batch_size / elapsed
                figures = {"loss": f"{metrics['loss']:.4g}", "images/s": f"{metrics['images_per_s']:.0f}"}
                if self.ctx.is_main:
                    for cb in self.callbacks:
                        cb.on_metrics(self.step, metrics)
                window, window_steps, window_start = {}, 0, time.perf_counter()
            bar.update(1, **figures)
            if self.step % tc.checkpoint_every == 0 or self.step == tc.steps:
                last_path = self.save()
        bar.close()
        if last_path is None:  # nothing left to train: point at the checkpoint we resumed
            found = load_latest(self.checkpoint_dir)
            last_path = found[0] if found else self.save()
        return TrainResult(step=self.step, checkpoint=last_path, metrics=metrics)


__all__ = ["Callback", "NonFiniteLossError", "TrainResult", "Trainer"]
