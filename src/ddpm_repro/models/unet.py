"""The Improved DDPM UNet (Nichol & Dhariwal 2021, Appendix A), which contains the DDPM
model (Ho et al. 2020, Appendix B) as the configuration with additive time embedding,
one head and attention at 16x16.

`UNet(config)(x, t, y=None)`: x [N, C, H, W], t [N] (timesteps, int or float),
y [N] int labels in [0, num_classes] where num_classes is the null label used for
classifier-free guidance -> [N, C_out, H, W], C_out = 2 C with a learned variance.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .layers import (
    AttentionBlock,
    Downsample,
    ResBlock,
    Upsample,
    normalization,
    timestep_embedding,
    zero_module,
)


@dataclass(frozen=True)
class UNetConfig:
    """The UNet's hyper-parameters; `attention_resolutions` are feature-map sizes (e.g. 16, 8)."""

    image_size: int = 32
    in_channels: int = 3
    model_channels: int = 128
    out_channels: int = 3
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (16,)
    channel_mult: tuple[int, ...] = (1, 2, 2, 2)
    dropout: float = 0.0
    num_heads: int = 1
    use_scale_shift_norm: bool = True
    resblock_updown: bool = False
    conv_resample: bool = True
    num_classes: int | None = None
    norm_groups: int = 32
    use_checkpoint: bool = False
    # t is multiplied by this before its embedding. Our models see the integer t (1.0);
    # the Improved DDPM authors' models were trained with `rescale_timesteps`, which feeds
    # t * 1000 / T, so their imported checkpoints carry 1000 / T here (models/official.py).
    timestep_scale: float = 1.0

    def __post_init__(self) -> None:
        downsamples = len(self.channel_mult) - 1
        if self.image_size % (2**downsamples):
            raise ValueError(
                f"model.image_size={self.image_size} is not divisible by 2^{downsamples} "
                f"(channel_mult has {len(self.channel_mult)} levels)"
            )
        reachable = {self.image_size // 2**i for i in range(len(self.channel_mult))}
        missing = sorted(set(self.attention_resolutions) - reachable)
        if missing:
            raise ValueError(
                f"model.attention_resolutions {missing} are not feature-map sizes of this UNet "
                f"({sorted(reachable, reverse=True)})"
            )
        for mult in self.channel_mult:
            if (self.model_channels * mult) % self.norm_groups:
                raise ValueError(
                    f"model.model_channels * {mult} = {self.model_channels * mult} is not divisible "
                    f"by model.norm_groups={self.norm_groups}"
                )
        if not 0 <= self.dropout < 1:
            raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if not 0 < self.timestep_scale < float("inf"):
            raise ValueError(f"model.timestep_scale must be positive, got {self.timestep_scale}")

    def replace(self, **changes) -> UNetConfig:
        """A copy with `changes` applied, validated again by __post_init__."""
        return dataclasses.replace(self, **changes)


class _Sequential(nn.ModuleList):
    """Runs its layers in order, passing the embedding to those that take it."""

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class UNet(nn.Module):
    """The Improved DDPM / DDPM UNet; see the module docstring for the call signature."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = c = config
        emb_dim = c.model_channels * 4
        self.time_embed = nn.Sequential(
            nn.Linear(c.model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        # One extra row: label num_classes is "no label", for classifier-free guidance.
        self.label_emb = nn.Embedding(c.num_classes + 1, emb_dim) if c.num_classes else None

        def res(ch_in: int, ch_out: int, **kw) -> ResBlock:
            return ResBlock(ch_in, emb_dim, c.dropout, ch_out, c.use_scale_shift_norm, c.norm_groups, **kw)

        def attn(ch: int) -> AttentionBlock:
            return AttentionBlock(ch, c.num_heads, c.norm_groups)

        ch = c.model_channels
        self.input_blocks = nn.ModuleList([_Sequential([nn.Conv2d(c.in_channels, ch, 3, padding=1)])])
        skip_channels = [ch]
        resolution = c.image_size
        for level, mult in enumerate(c.channel_mult):
            for _ in range(c.num_res_blocks):
                layers: list[nn.Module] = [res(ch, mult * c.model_channels)]
                ch = mult * c.model_channels
                if resolution in c.attention_resolutions:
                    layers.append(attn(ch))
                self.input_blocks.append(_Sequential(layers))
                skip_channels.append(ch)
            if level != len(c.channel_mult) - 1:
                down = res(ch, ch, down=True) if c.resblock_updown else Downsample(ch, c.conv_resample)
                self.input_blocks.append(_Sequential([down]))
                skip_channels.append(ch)
                resolution //= 2

        self.middle_block = _Sequential([res(ch, ch), attn(ch), res(ch, ch)])

        self.output_blocks = nn.ModuleList()
        for level, mult in list(enumerate(c.channel_mult))[::-1]:
            for i in range(c.num_res_blocks + 1):
                layers = [res(ch + skip_channels.pop(), c.model_channels * mult)]
                ch = c.model_channels * mult
                if resolution in c.attention_resolutions:
                    layers.append(attn(ch))
                if level and i == c.num_res_blocks:
                    layers.append(
                        res(ch, ch, up=True) if c.resblock_updown else Upsample(ch, c.conv_resample)
                    )
                    resolution *= 2
                self.output_blocks.append(_Sequential(layers))

        self.out = nn.Sequential(
            normalization(ch, c.norm_groups),
            nn.SiLU(),
            zero_module(nn.Conv2d(ch, c.out_channels, 3, padding=1)),
        )

    def _run(self, block: _Sequential, h: Tensor, emb: Tensor) -> Tensor:
        if self.config.use_checkpoint and self.training and torch.is_grad_enabled():
            return checkpoint(block, h, emb, use_reentrant=False)
        return block(h, emb)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """x [N, C_in, H, W], t [N], y [N] or None -> [N, C_out, H, W]."""
        if (y is not None) != (self.label_emb is not None):
            raise ValueError(
                "class labels y must be given exactly when the model is class-conditional "
                f"(num_classes={self.config.num_classes})"
            )
        if self.config.timestep_scale != 1.0:  # skipped at 1.0, so our own models stay bit-identical
            t = t.float() * self.config.timestep_scale
        emb = self.time_embed(timestep_embedding(t, self.config.model_channels).to(x.dtype))
        if y is not None:
            emb = emb + self.label_emb(y)
        h, skips = x, []
        for block in self.input_blocks:
            h = self._run(block, h, emb)
            skips.append(h)
        h = self._run(self.middle_block, h, emb)
        for block in self.output_blocks:
            h = self._run(block, torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h)


def _learned(c: UNetConfig) -> UNetConfig:
    return c.replace(out_channels=2 * c.in_channels)


PRESETS: dict[str, UNetConfig] = {
    # DDPM's CIFAR-10 model (Ho et al. 2020, App. B): 35.7M parameters.
    "ddpm-cifar10": UNetConfig(
        image_size=32,
        model_channels=128,
        channel_mult=(1, 2, 2, 2),
        num_res_blocks=2,
        attention_resolutions=(16,),
        dropout=0.1,
        num_heads=1,
        use_scale_shift_norm=False,
    ),
    # Improved DDPM's CIFAR-10 model (sec. 3 and App. A), learned sigma.
    "iddpm-cifar10": _learned(
        UNetConfig(
            image_size=32,
            model_channels=128,
            channel_mult=(1, 2, 2, 2),
            num_res_blocks=3,
            attention_resolutions=(16, 8),
            dropout=0.3,
            num_heads=4,
            use_scale_shift_norm=True,
        )
    ),
    # Improved DDPM's ImageNet 64x64 model, learned sigma.
    "iddpm-imagenet64": _learned(
        UNetConfig(
            image_size=64,
            model_channels=128,
            channel_mult=(1, 2, 3, 4),
            num_res_blocks=3,
            attention_resolutions=(16, 8),
            dropout=0.0,
            num_heads=4,
            use_scale_shift_norm=True,
        )
    ),
    # The digits default (8x8, one channel): small enough to train on 2 CPU cores in minutes.
    "digits": UNetConfig(
        image_size=8,
        in_channels=1,
        out_channels=1,
        model_channels=32,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_resolutions=(4,),
        dropout=0.0,
        num_heads=2,
        norm_groups=8,
    ),
    # The smallest sensible model, for tests and the smoke profile.
    "tiny": UNetConfig(
        image_size=8,
        in_channels=1,
        out_channels=1,
        model_channels=16,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_resolutions=(4,),
        dropout=0.0,
        num_heads=1,
        norm_groups=4,
    ),
}


def preset(name: str, **overrides) -> UNetConfig:
    """A named `UNetConfig` with optional overrides (e.g. num_classes=10)."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; valid presets: {', '.join(PRESETS)}")
    return PRESETS[name].replace(**overrides)


def count_parameters(model: nn.Module) -> int:
    """The number of scalars in all of `model`'s parameters, frozen ones included."""
    return sum(p.numel() for p in model.parameters())
