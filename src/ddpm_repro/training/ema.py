"""Exponential moving average of the weights, with warm-up (the num_updates rule of
TensorFlow's ExponentialMovingAverage): at step n the rate is min(rate, (1 + n) / (10 + n)),
so short runs sample from weights that have moved."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class EMA:
    """Shadow copies (float32) of a model's parameters and buffers."""

    def __init__(self, model: nn.Module, rate: float) -> None:
        self.rate = rate
        self.shadow: dict[str, Tensor] = {
            k: v.detach().clone().float() for k, v in model.state_dict().items()
        }

    def rate_at(self, step: int) -> float:
        """The decay used at `step`: min(rate, (1 + step) / (10 + step))."""
        return min(self.rate, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """shadow <- r shadow + (1 - r) weights, r = rate_at(step); one fused op over all tensors."""
        r = self.rate_at(step)
        floats, float_shadows = [], []
        for key, value in model.state_dict().items():
            if value.is_floating_point():
                floats.append(value.detach().float())
                float_shadows.append(self.shadow[key])
            else:
                self.shadow[key].copy_(value)
        torch._foreach_lerp_(float_shadows, floats, 1.0 - r)

    def state_dict(self) -> dict[str, Tensor]:
        """The shadow weights themselves (float32, the model's state_dict keys); not a copy."""
        return self.shadow

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Replace the shadow with float32 copies of `state`; its keys must be the model's."""
        if set(state) != set(self.shadow):
            raise ValueError("EMA state does not match the model's parameters")
        self.shadow = {k: v.detach().clone().float() for k, v in state.items()}
