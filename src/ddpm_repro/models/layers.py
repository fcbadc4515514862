"""Building blocks of the Improved DDPM UNet (Nichol & Dhariwal 2021, Appendix A; layer
order and initialisation as in their public code, so that its checkpoints load exactly).

Feature maps are [N, C, H, W]; the embedding `emb` is [N, E].
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps t [N] -> [N, dim]:
    [cos(t f_0..f_{d/2-1}), sin(...)], f_i = max_period^(-i / (d/2)) (Transformer sec. 3.5;
    cos before sin, as the Improved DDPM code)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def zero_module(module: nn.Module) -> nn.Module:
    """Zero a module's parameters: residual branches start as the identity."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 whatever the input dtype (stable under bf16)."""

    def forward(self, x: Tensor) -> Tensor:
        """x [N, C, ...] in any float dtype -> normalised, same shape and dtype as x."""
        return super().forward(x.float()).type(x.dtype)


def normalization(channels: int, groups: int) -> nn.Module:
    """The UNet's normalisation layer: `GroupNorm32` with `groups` groups over `channels`."""
    return GroupNorm32(groups, channels)


class Dropout(nn.Module):
    """Inverted dropout (Srivastava et al. 2014): in training, x * keep / (1 - p) with
    keep ~ Bernoulli(1 - p) per element; the identity in eval mode or with p = 0.

    On CPU the keep mask is drawn from 32 random bits per element (keep where the bits are
    at least round(p * 2^32), so the drop rate is p to within 2^-33) by numpy's PCG64,
    seeded from torch's default generator: seeded runs and resumed checkpoints draw the same
    masks, and a mask costs a fraction of torch's `bernoulli_` on CPU
    (benchmarks/README.md, "Dropout on CPU"). Elsewhere, and under torch.compile, it is
    `F.dropout`."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout must be in [0, 1), got {p}")
        self.p = p

    def extra_repr(self) -> str:
        """The repr's "p=...", as torch's Dropout prints it."""
        return f"p={self.p}"

    def forward(self, x: Tensor) -> Tensor:
        """x [any shape], float -> same shape and dtype."""
        if not self.training or self.p == 0:
            return x
        if x.device.type != "cpu" or torch.compiler.is_compiling():  # compiled: inductor's own
            return F.dropout(x, self.p, training=True)
        n, seed = x.numel(), int(torch.randint(0, 2**63 - 1, ()))
        bits = np.random.PCG64(seed).random_raw((n + 1) // 2).view("<u4")[:n]
        keep = torch.from_numpy(bits >= min(round(self.p * 2**32), 2**32 - 1)).view(x.shape)
        return x * keep.to(x.dtype).mul_(1.0 / (1.0 - self.p))


class Downsample(nn.Module):
    """Halve H and W: a stride-2 3x3 conv (or 2x2 average pooling when conv is off)."""

    def __init__(self, channels: int, use_conv: bool = True) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2)

    def forward(self, x: Tensor) -> Tensor:
        """[N, C, H, W] -> [N, C, H/2, W/2]."""
        return self.op(x)


class Upsample(nn.Module):
    """Double H and W by nearest neighbour, then a 3x3 conv (when conv is on)."""

    def __init__(self, channels: int, use_conv: bool = True) -> None:
        super().__init__()
        self.use_conv = use_conv
        if use_conv:
            self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """[N, C, H, W] -> [N, C, 2H, 2W]."""
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class ResBlock(nn.Module):
    """A residual block conditioned on the embedding.

    h = conv(SiLU(GN(x))); with scale-shift (AdaGN, Improved DDPM App. A):
    h = GN(h) (1 + scale) + shift, [scale, shift] = Linear(SiLU(emb)); otherwise (DDPM)
    h = GN(h + Linear(SiLU(emb))). Then SiLU, dropout, a zero-initialised conv, plus the skip.
    With up/down, H and W are resampled inside the block (BigGAN, Brock et al. 2019).
    """

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float,
        out_channels: int | None = None,
        use_scale_shift_norm: bool = True,
        norm_groups: int = 32,
        up: bool = False,
        down: bool = False,
    ) -> None:
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(
            normalization(channels, norm_groups),
            nn.SiLU(),
            nn.Conv2d(channels, out_channels, 3, padding=1),
        )
        self.updown = up or down
        if up:
            self.h_upd, self.x_upd = Upsample(channels, False), Upsample(channels, False)
        elif down:
            self.h_upd, self.x_upd = Downsample(channels, False), Downsample(channels, False)
        self.emb_layers = nn.Sequential(
            nn.SiLU(),
            nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels),
        )
        self.out_layers = nn.Sequential(
            normalization(out_channels, norm_groups),
            nn.SiLU(),
            Dropout(dropout),
            zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1)),
        )
        self.skip_connection = (
            nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)
        )

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """x [N, C, H, W], emb [N, E] -> [N, out_channels, H', W'], H' = 2H with up, H/2 with
        down, else H."""
        if self.updown:
            norm_act, conv = self.in_layers[:-1], self.in_layers[-1]
            h = conv(self.h_upd(norm_act(x)))
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).type(h.dtype)[..., None, None]
        if self.use_scale_shift_norm:
            out_norm, out_rest = self.out_layers[0], self.out_layers[1:]
            scale, shift = torch.chunk(emb_out, 2, dim=1)
            h = out_rest(out_norm(h) * (1 + scale) + shift)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


def matmul_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """softmax(q k^T / sqrt(d)) v (Vaswani et al. 2017, eq. 1) as two batched matmuls in the
    inputs' dtype: q, k, v [..., L, d] -> [..., L, d]; the softmax accumulates in float32.
    In bf16 on an AMD EPYC CPU this measured ~3x as fast as `scaled_dot_product_attention`,
    which ran no faster there in bf16 than in float32."""
    weights = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)
    return torch.softmax(weights, dim=-1) @ v


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the H*W positions, with a residual connection.

    The 3C qkv channels are split into heads first and then into q, k, v within each head
    (the Improved DDPM code's order, which its checkpoints rely on). q, k and v are made
    contiguous [N, heads, L, C/heads] so that `scaled_dot_product_attention` can take its
    fused kernels; on CPU in bf16, `matmul_attention` instead (benchmarks/README.md,
    "Attention in bf16 on CPU").
    """

    def __init__(self, channels: int, num_heads: int = 1, norm_groups: int = 32) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"attention: {channels} channels do not split into {num_heads} heads")
        self.num_heads = num_heads
        self.norm = normalization(channels, norm_groups)
        self.qkv = nn.Conv1d(channels, channels * 3, 1)
        self.proj_out = zero_module(nn.Conv1d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        """x [N, C, H, W] -> x + attention output, [N, C, H, W]."""
        b, c, *spatial = x.shape
        flat = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(flat))  # [B, 3C, L]: per head, its q, k and v channels
        qkv = qkv.reshape(b, self.num_heads, 3, c // self.num_heads, qkv.shape[-1])
        q, k, v = qkv.permute(2, 0, 1, 4, 3).contiguous().unbind(0)  # each [B, heads, L, C/heads]
        if q.device.type == "cpu" and q.dtype == torch.bfloat16:
            h = matmul_attention(q, k, v)
        else:
            h = F.scaled_dot_product_attention(q, k, v)
        h = h.transpose(-1, -2).reshape(b, c, -1)
        return (flat + self.proj_out(h)).reshape(b, c, *spatial)
