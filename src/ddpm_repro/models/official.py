"""Import the Improved DDPM authors' released checkpoints (github.com/openai/improved-diffusion)
into this project's UNet and checkpoint format.

Their files are bare state dicts of their `UNetModel`, written by `torch.save`. Our UNet
keeps their module tree (layers.py follows their layer order), so every parameter has a
counterpart of the same name; `NAME_MAP` writes the correspondence out, one rule per kind
of layer, so that it is checked rather than assumed and a rename on either side fails with
the keys named instead of loading wrongly. Two conventions differ and are converted:

- Labels: their `label_emb` has `num_classes` rows; ours has one more, the null label of
  classifier-free guidance. Their models never saw a null label, so that row is set to
  zero (the label then adds nothing to the embedding). Sample them with guidance_scale 1
  (the default), which never reads that row.
- Timesteps: with their `rescale_timesteps` flag (on by default in their script_util.py)
  the network is fed t * 1000 / T, t being the original (not respaced) timestep. The
  imported UNetConfig carries that factor as `timestep_scale`; our diffusion already calls
  the model with original timesteps after respacing (respace.py), as theirs does.

`map_official_state_dict` maps a state dict (pure torch, like the rest of models/);
`training.official_checkpoint.convert_official_checkpoint` turns a file into one of our
checkpoints that `ddpm-repro sample` and `evaluate` read.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..errors import UserError
from .unet import UNet, UNetConfig, preset

ORIGIN = "openai/improved-diffusion"


class OfficialCheckpointError(UserError):
    """An original checkpoint that does not fit the chosen UNet; the message names every key."""


@dataclass(frozen=True)
class NameRule:
    """Original parameter names matching `original` (a regex, matched in full) become
    `ours`, formatted with the named groups."""

    original: str
    ours: str
    layer: str


# A block of their `input_blocks`, `middle_block` or `output_blocks` and a layer in it:
# input_blocks.<i>.<j>, middle_block.<j>, output_blocks.<i>.<j>.
_IN_BLOCK = r"(?P<block>(?:input_blocks\.\d+|middle_block|output_blocks\.\d+)\.\d+)"
_P = r"(?P<p>weight|bias)"

NAME_MAP: tuple[NameRule, ...] = (
    NameRule(rf"time_embed\.(?P<i>[02])\.{_P}", "time_embed.{i}.{p}", "timestep MLP: Linear, SiLU, Linear"),
    NameRule(r"label_emb\.weight", "label_emb.weight", "class embedding (ours: + the null-label row)"),
    NameRule(rf"input_blocks\.0\.0\.{_P}", "input_blocks.0.0.{p}", "first 3x3 conv"),
    NameRule(
        rf"{_IN_BLOCK}\.in_layers\.(?P<i>[02])\.{_P}",
        "{block}.in_layers.{i}.{p}",
        "ResBlock in: GroupNorm (0), SiLU, 3x3 conv (2)",
    ),
    NameRule(
        rf"{_IN_BLOCK}\.emb_layers\.1\.{_P}",
        "{block}.emb_layers.1.{p}",
        "ResBlock embedding: SiLU, Linear (1) to C or [scale, shift] 2C",
    ),
    NameRule(
        rf"{_IN_BLOCK}\.out_layers\.(?P<i>[03])\.{_P}",
        "{block}.out_layers.{i}.{p}",
        "ResBlock out: GroupNorm (0), SiLU, Dropout, zero-init 3x3 conv (3)",
    ),
    NameRule(
        rf"{_IN_BLOCK}\.skip_connection\.{_P}",
        "{block}.skip_connection.{p}",
        "ResBlock 1x1 skip conv, where C changes",
    ),
    NameRule(
        rf"{_IN_BLOCK}\.(?P<layer>norm|qkv|proj_out)\.{_P}",
        "{block}.{layer}.{p}",
        "attention: GroupNorm, 1x1 qkv conv (heads split before q/k/v), zero-init 1x1 out",
    ),
    NameRule(rf"{_IN_BLOCK}\.op\.{_P}", "{block}.op.{p}", "Downsample: stride-2 3x3 conv"),
    NameRule(rf"{_IN_BLOCK}\.conv\.{_P}", "{block}.conv.{p}", "Upsample: nearest x2, then 3x3 conv"),
    NameRule(
        rf"out\.(?P<i>[02])\.{_P}", "out.{i}.{p}", "output: GroupNorm (0), SiLU, zero-init 3x3 conv (2)"
    ),
)

LABEL_EMB = "label_emb.weight"


def our_name(original: str) -> str | None:
    """Our parameter name for an original one, or None when no rule of `NAME_MAP` matches."""
    for rule in NAME_MAP:
        match = re.fullmatch(rule.original, original)
        if match:
            return rule.ours.format(**match.groupdict())
    return None


def map_official_state_dict(
    state: Mapping[str, Tensor],
    config: UNetConfig,
    source: str = "the state dict",
    target: str = "this UNet",
) -> dict[str, Tensor]:
    """Our UNet's state dict (float32) from an original one, for the UNet `config` describes.

    Every original key must map to a parameter of ours of the same shape (the label
    embedding: one row fewer) and every parameter of ours must be filled; otherwise
    raises OfficialCheckpointError listing every unknown key, every key without a
    counterpart, every shape mismatch and every missing parameter, so that a wrong preset
    fails with the keys named. `source` and `target` name the two sides in that message.
    """
    with torch.device("meta"):  # names and shapes only: no memory, no initialisation cost
        expected = {k: tuple(v.shape) for k, v in UNet(config).state_dict().items()}
    mapped: dict[str, Tensor] = {}
    seen: set[str] = set()
    unknown, no_place, mismatched = [], [], []
    for name, value in state.items():
        ours = our_name(name)
        if ours is None or not isinstance(value, Tensor):
            unknown.append(name if isinstance(value, Tensor) else f"{name} (not a tensor)")
            continue
        if ours not in expected:
            no_place.append(name)
            continue
        seen.add(ours)
        shape = expected[ours]
        if ours == LABEL_EMB:
            shape = (shape[0] - 1, *shape[1:])  # theirs has no null-label row
        if tuple(value.shape) != shape:
            mismatched.append(f"{name} (file {list(value.shape)}, expected {list(shape)})")
            continue
        value = value.detach().to(torch.float32)
        if ours == LABEL_EMB:
            value = torch.cat([value, torch.zeros_like(value[:1])])  # the null label: zero
        mapped[ours] = value.contiguous()
    missing = [k for k in expected if k not in seen]
    if unknown or no_place or mismatched or missing:
        problems = [
            ("keys of no known original layer", unknown, ", "),
            (f"keys with no counterpart in {target}", no_place, ", "),
            ("shapes that differ", mismatched, "; "),
            (f"parameters of {target} missing from the file", missing, ", "),
        ]
        lines = [f"  {len(keys)} {what}: {sep.join(keys)}" for what, keys, sep in problems if keys]
        hint = ""
        if LABEL_EMB in no_place:
            hint = f"\n  ({LABEL_EMB} is in the file: it is class-conditional, set num_classes)"
        elif LABEL_EMB in missing:
            hint = f"\n  ({LABEL_EMB} is not in the file: it is unconditional, leave num_classes unset)"
        raise OfficialCheckpointError(f"{source} does not fit {target}:\n" + "\n".join(lines) + hint)
    return {k: mapped[k] for k in expected}


@dataclass(frozen=True)
class OfficialSettings:
    """How an original checkpoint was trained, in their flags' terms (README of
    openai/improved-diffusion, "Models and Hyperparameters"; defaults from script_util.py).

    preset: our UNet preset of the same architecture; `model_channels` overrides its width
        (their --num_channels). num_classes is read from the file's label embedding.
    schedule, timesteps: --noise_schedule, --diffusion_steps.
    objective: hybrid (their default L_hybrid), vlb (--use_kl True) or simple.
    hybrid_lambda: 0.001 when their --rescale_learned_sigmas is True (the default: the
        L_vlb term is scaled by T / 1000), 1 / T when it is False.
    rescale_timesteps: their --rescale_timesteps (default True): the net saw t * 1000 / T.
    step: the training step, for the checkpoint's record.
    """

    preset: str
    model_channels: int | None = None
    schedule: str = "cosine"
    timesteps: int = 4000
    objective: str = "hybrid"
    hybrid_lambda: float = 0.001
    timestep_sampler: str = "uniform"
    rescale_timesteps: bool = True
    step: int = 0

    @property
    def timestep_scale(self) -> float:
        """What t is multiplied by before the network's embedding: 1000 / T under rescaling."""
        return 1000.0 / self.timesteps if self.rescale_timesteps else 1.0


# The released checkpoints this UNet can hold, with their README's flags. Not listed: the
# LSUN bedroom models (256x256, no preset) and the 256x256 upsampler (another network).
PUBLISHED: dict[str, OfficialSettings] = {
    "cifar10_uncond_50M_500K.pt": OfficialSettings("iddpm-cifar10", step=500_000),
    "cifar10_uncond_vlb_50M_500K.pt": OfficialSettings(
        "iddpm-cifar10", objective="vlb", timestep_sampler="loss-second-moment", step=500_000
    ),
    "imagenet64_uncond_100M_1500K.pt": OfficialSettings("iddpm-imagenet64", step=1_500_000),
    "imagenet64_uncond_vlb_100M_1500K.pt": OfficialSettings(
        "iddpm-imagenet64", objective="vlb", timestep_sampler="loss-second-moment", step=1_500_000
    ),
    # --num_channels 192 --class_cond True --rescale_learned_sigmas False --rescale_timesteps False
    "imagenet64_cond_270M_250K.pt": OfficialSettings(
        "iddpm-imagenet64",
        model_channels=192,
        hybrid_lambda=1 / 4000,
        rescale_timesteps=False,
        step=250_000,
    ),
}


def settings_for(path: str | Path, **overrides) -> OfficialSettings:
    """The settings of a released file, by its name, with any non-None `overrides`
    (fields of OfficialSettings) applied; a file of another name needs at least `preset`."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    base = PUBLISHED.get(Path(path).name)
    if base is None:
        if "preset" not in overrides:
            raise UserError(
                f"'{Path(path).name}' is not a released checkpoint of {ORIGIN} "
                f"({', '.join(PUBLISHED)}); give its preset and diffusion settings"
            )
        return OfficialSettings(**overrides)
    return dataclasses.replace(base, **overrides)


def load_official_state_dict(path: str | Path) -> dict[str, Tensor]:
    """An original checkpoint file's state dict, loaded with weights_only (no code runs)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"original checkpoint '{path}' not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated file, or a pickle that is not plain tensors
        raise OfficialCheckpointError(
            f"'{path}' is not a readable state dict ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(state, dict):
        raise OfficialCheckpointError(f"'{path}' holds a {type(state).__name__}, not a state dict")
    return state


def official_unet_config(state: Mapping[str, Tensor], settings: OfficialSettings) -> UNetConfig:
    """The UNetConfig of an original model: the preset, its width override, the number of
    classes the file's label embedding has, and the timestep scale."""
    overrides = {} if settings.model_channels is None else {"model_channels": settings.model_channels}
    label_emb = state.get(LABEL_EMB)
    num_classes = int(label_emb.shape[0]) if isinstance(label_emb, Tensor) else None
    return preset(
        settings.preset, **overrides, num_classes=num_classes, timestep_scale=settings.timestep_scale
    )
