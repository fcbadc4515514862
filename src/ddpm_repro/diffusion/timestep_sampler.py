"""Timestep samplers for training: uniform, and Improved DDPM's importance sampling of
L_vlb (sec. 3.3): p_t proportional to sqrt(E[L_t^2]), from a history of 10 losses per t.

`sample` returns t [N] and weights [N] = 1 / (T p_t); multiplying each example's loss by its
weight keeps the estimate of sum_t L_t unbiased. Randomness comes from a passed generator.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


class UniformSampler:
    """t ~ Uniform{0..T-1}; every weight is 1."""

    def __init__(self, num_timesteps: int) -> None:
        self.num_timesteps = num_timesteps

    def weights(self) -> Tensor:
        """Unnormalised sampling weights [T] (float64)."""
        return torch.ones(self.num_timesteps, dtype=torch.float64)

    def sample(
        self,
        batch_size: int,
        device: torch.device | str = "cpu",
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Draw t [batch_size] (int64) and importance weights 1/(T p_t) [batch_size] (float32)."""
        p = self.weights()
        p = p / p.sum()
        t = torch.multinomial(p, batch_size, replacement=True, generator=generator)
        weights = 1.0 / (self.num_timesteps * p[t])
        return t.to(device), weights.to(device=device, dtype=torch.float32)

    def update_with_local_losses(self, t: Tensor, losses: Tensor) -> None:
        """Record this process's per-example losses (a no-op for the uniform sampler)."""

    def state_dict(self) -> dict[str, Tensor]:
        """The state a checkpoint carries: none for the uniform sampler."""
        return {}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore from `state_dict`; only an empty dict is accepted."""
        if state:
            raise ValueError(f"UniformSampler has no state, got keys {sorted(state)}")


class LossSecondMomentResampler(UniformSampler):
    """p_t proportional to sqrt(E[L_t^2]) over the last `history_per_term` losses of each t,
    mixed with a uniform distribution of weight `uniform_prob` (Improved DDPM sec. 3.3).

    Until every t has a full history the sampler stays uniform. Under torch.distributed
    the losses of every process are all-gathered, so all ranks hold the same state.
    """

    def __init__(self, num_timesteps: int, history_per_term: int = 10, uniform_prob: float = 0.001) -> None:
        super().__init__(num_timesteps)
        self.history_per_term = history_per_term
        self.uniform_prob = uniform_prob
        self.loss_history = torch.zeros(num_timesteps, history_per_term, dtype=torch.float64)
        self.loss_counts = torch.zeros(num_timesteps, dtype=torch.int64)

    def warmed_up(self) -> bool:
        """Whether every t has a full history of `history_per_term` losses."""
        return bool((self.loss_counts == self.history_per_term).all())

    def weights(self) -> Tensor:
        """p_t [T] (float64): sqrt(E[L_t^2]) normalised, mixed with `uniform_prob` of uniform
        (Improved DDPM sec. 3.3); all ones until warmed up."""
        if not self.warmed_up():
            return torch.ones(self.num_timesteps, dtype=torch.float64)
        w = torch.sqrt((self.loss_history**2).mean(dim=1))
        w = w / w.sum()
        return w * (1 - self.uniform_prob) + self.uniform_prob / self.num_timesteps

    def update_with_local_losses(self, t: Tensor, losses: Tensor) -> None:
        """Gather (t, loss) pairs from every process and record them.

        Args:
            t: int [N] timesteps of this process's batch; losses: [N] their losses (detached).
        """
        t = t.detach().reshape(-1)
        losses = losses.detach().reshape(-1).to(torch.float64)
        if dist.is_available() and dist.is_initialized():
            t, losses = _all_gather_varlen(t, losses)
        self.update_with_all_losses(t.cpu().tolist(), losses.cpu().tolist())

    def update_with_all_losses(self, ts: list[int], losses: list[float]) -> None:
        """Record losses from every process: a FIFO of `history_per_term` per t."""
        for t, loss in zip(ts, losses, strict=True):
            n = int(self.loss_counts[t])
            if n == self.history_per_term:
                self.loss_history[t, :-1] = self.loss_history[t, 1:].clone()
                self.loss_history[t, -1] = loss
            else:
                self.loss_history[t, n] = loss
                self.loss_counts[t] += 1

    def state_dict(self) -> dict[str, Tensor]:
        """Copies of loss_history [T, history_per_term] (float64) and loss_counts [T] (int64)."""
        return {"loss_history": self.loss_history.clone(), "loss_counts": self.loss_counts.clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore from `state_dict`; wrong keys or shapes (another T) raise ValueError."""
        expected = {"loss_history": self.loss_history.shape, "loss_counts": self.loss_counts.shape}
        if set(state) != set(expected):
            raise ValueError(f"sampler state has keys {sorted(state)}, expected {sorted(expected)}")
        for key, shape in expected.items():
            if tuple(state[key].shape) != tuple(shape):
                raise ValueError(
                    f"sampler state {key} has shape {tuple(state[key].shape)}, expected {tuple(shape)}"
                )
        self.loss_history = state["loss_history"].to(torch.float64).clone()
        self.loss_counts = state["loss_counts"].to(torch.int64).clone()


def _all_gather_varlen(t: Tensor, losses: Tensor) -> tuple[Tensor, Tensor]:
    """All-gather two [n_rank] tensors whose length differs between ranks."""
    world = dist.get_world_size()
    device = t.device if dist.get_backend() != "nccl" else torch.device("cuda", torch.cuda.current_device())
    size = torch.tensor([t.numel()], device=device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    max_n = int(max(s.item() for s in sizes))
    padded_t = torch.zeros(max_n, dtype=torch.int64, device=device)
    padded_l = torch.zeros(max_n, dtype=torch.float64, device=device)
    padded_t[: t.numel()] = t.to(device)
    padded_l[: t.numel()] = losses.to(device)
    all_t = [torch.zeros_like(padded_t) for _ in range(world)]
    all_l = [torch.zeros_like(padded_l) for _ in range(world)]
    dist.all_gather(all_t, padded_t)
    dist.all_gather(all_l, padded_l)
    n = [int(s.item()) for s in sizes]
    return (
        torch.cat([x[:k] for x, k in zip(all_t, n, strict=True)]),
        torch.cat([x[:k] for x, k in zip(all_l, n, strict=True)]),
    )


SAMPLERS = {"uniform": UniformSampler, "loss-second-moment": LossSecondMomentResampler}


def create_named_schedule_sampler(name: str, num_timesteps: int) -> UniformSampler:
    """A timestep sampler by name: one of `SAMPLERS`."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown timestep sampler {name!r}; valid samplers: {', '.join(SAMPLERS)}")
    return SAMPLERS[name](num_timesteps)
