"""The typed, validated view of params.yaml: the one place where strings become enums.

`load_config(path, overrides)` reads a params file, applies `section.key=value` overrides
and returns a frozen `Config`. Unknown keys, wrong types and bad values raise `ConfigError`
naming the key, before any work starts. `config_to_dict` / `config_from_dict` turn a
`Config` into plain Python types and back, which is how checkpoints carry their config.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .diffusion import (
    SAMPLERS,
    SCHEDULES,
    GaussianDiffusion,
    LossType,
    ModelMeanType,
    ModelVarType,
    get_named_beta_schedule,
    space_timesteps,
)
from .models import PRESETS, UNetConfig, preset


class ConfigError(ValueError):
    """A bad params file or value; the message names the key."""


@dataclass(frozen=True)
class ModelConfig:
    """The network: a named preset (models.PRESETS) with optional overrides."""

    preset: str = "digits"
    dropout: float | None = None  # None: the preset's
    model_channels: int | None = None
    num_res_blocks: int | None = None
    channel_mult: tuple[int, ...] | None = None
    attention_resolutions: tuple[int, ...] | None = None
    num_heads: int | None = None
    use_scale_shift_norm: bool | None = None
    resblock_updown: bool | None = None
    use_checkpoint: bool = False  # gradient checkpointing: less memory, ~30% more compute
    class_cond: bool = False  # condition on the dataset's labels (classifier-free guidance)

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ConfigError(f"model.preset: unknown preset {self.preset!r}; valid: {', '.join(PRESETS)}")


@dataclass(frozen=True)
class DiffusionConfig:
    """The process and objective of one grid cell (DESIGN.md, "One grid cell")."""

    schedule: str = "cosine"
    timesteps: int = 1000
    mean_type: ModelMeanType = ModelMeanType.EPSILON
    var_type: ModelVarType = ModelVarType.LEARNED_RANGE
    loss: LossType = LossType.HYBRID
    hybrid_lambda: float = 0.001
    aux_lambda: float = 0.001
    timestep_sampler: str = "uniform"

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"diffusion.schedule: unknown {self.schedule!r}; valid: {', '.join(SCHEDULES)}")
        if self.timestep_sampler not in SAMPLERS:
            raise ConfigError(
                f"diffusion.timestep_sampler: unknown {self.timestep_sampler!r}; valid: {', '.join(SAMPLERS)}"
            )
        try:
            build_diffusion(self)
        except ValueError as exc:
            raise ConfigError(f"diffusion: {exc}") from None


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation: Adam with weight decay 0 (both papers), warm-up, clipping, EMA."""

    steps: int = 1000
    batch_size: int = 64  # global, over all processes
    microbatch: int = 0  # 0: the whole local batch at once
    lr: float = 2e-4
    warmup_steps: int = 0
    grad_clip: float = 1.0  # 0: off
    ema_rate: float = 0.9999  # with warm-up min(rate, (1 + n) / (10 + n))
    class_drop_prob: float = 0.1  # label dropout for classifier-free guidance (class_cond only)
    bf16: bool = False
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    log_every: int = 50
    checkpoint_every: int = 500
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        _positive(
            self,
            "train",
            "steps",
            "batch_size",
            "lr",
            "log_every",
            "checkpoint_every",
            "keep_checkpoints",
        )
        _non_negative(self, "train", "microbatch", "warmup_steps", "grad_clip", "seed")
        if not 0 <= self.ema_rate < 1:
            raise ConfigError(f"train.ema_rate must be in [0, 1), got {self.ema_rate}")
        if not 0 <= self.class_drop_prob < 1:
            raise ConfigError(f"train.class_drop_prob must be in [0, 1), got {self.class_drop_prob}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"train.device must be auto, cpu or cuda, got {self.device!r}")


class SampleMethod(enum.Enum):
    ANCESTRAL = "ancestral"
    DDIM = "ddim"


@dataclass(frozen=True)
class SampleConfig:
    """Generation: `steps` is a respacing spec ("" = every step, "50", "ddim25")."""

    num_samples: int = 64
    batch_size: int = 256
    steps: str = ""
    method: SampleMethod = SampleMethod.ANCESTRAL
    eta: float = 0.0
    guidance_scale: float = 1.0  # eps_u + s (eps_c - eps_u); 1: conditional only
    use_ema: bool = True
    clip_denoised: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        _positive(self, "sample", "num_samples", "batch_size")
        _non_negative(self, "sample", "eta", "seed")
        if self.steps:
            try:
                space_timesteps(10**9, self.steps)
            except ValueError as exc:
                raise ConfigError(f"sample.steps: {exc}") from None


@dataclass(frozen=True)
class Config:
    """Everything one grid cell needs, from params.yaml."""

    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)


def _positive(obj: Any, section: str, *names: str) -> None:
    for name in names:
        if getattr(obj, name) <= 0:
            raise ConfigError(f"{section}.{name} must be positive, got {getattr(obj, name)}")


def _non_negative(obj: Any, section: str, *names: str) -> None:
    for name in names:
        if getattr(obj, name) < 0:
            raise ConfigError(f"{section}.{name} must be >= 0, got {getattr(obj, name)}")


# ----------------------------------------------------------------- building
def build_diffusion(cfg: DiffusionConfig) -> GaussianDiffusion:
    """The `GaussianDiffusion` a diffusion section describes."""
    return GaussianDiffusion(
        betas=get_named_beta_schedule(cfg.schedule, cfg.timesteps),
        model_mean_type=cfg.mean_type,
        model_var_type=cfg.var_type,
        loss_type=cfg.loss,
        hybrid_lambda=cfg.hybrid_lambda,
        aux_lambda=cfg.aux_lambda,
    )


def build_unet_config(cfg: Config, image_size: int, channels: int, num_classes: int | None) -> UNetConfig:
    """Resolve the model section against the data: input/output channels, image size, labels."""
    overrides = {
        f.name: getattr(cfg.model, f.name)
        for f in dataclasses.fields(ModelConfig)
        if f.name not in ("preset", "class_cond") and getattr(cfg.model, f.name) is not None
    }
    out_channels = channels * (2 if cfg.diffusion.var_type.is_learned else 1)
    try:
        return preset(
            cfg.model.preset,
            **overrides,
            image_size=image_size,
            in_channels=channels,
            out_channels=out_channels,
            num_classes=num_classes if cfg.model.class_cond else None,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


# ------------------------------------------------------------ dict <-> config
def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, key)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return _from_dict(tp, value, key)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        valid = [m.value for m in tp]
        if isinstance(value, str) and value.lower() in valid:
            return tp(value.lower())
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(valid)}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        (inner, _) = typing.get_args(tp)
        return tuple(_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str | int):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return str(value)
    raise TypeError(f"unsupported config type {tp} for {key}")  # a bug in this module


def _from_dict(cls: type, data: dict, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            where = f"under '{prefix}'" if prefix else "at the top level"
            raise ConfigError(f"unknown key '{_join(prefix, key)}'; valid keys {where}: {', '.join(names)}")
    kwargs = {k: _coerce(v, hints[k], _join(prefix, k)) for k, v in data.items()}
    return cls(**kwargs)


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def config_from_dict(data: dict) -> Config:
    """Validate a nested dict (as from YAML) into a `Config`. Missing keys take defaults."""
    if not isinstance(data, dict):
        raise ConfigError(f"the params must be a mapping of sections, got {type(data).__name__}")
    return _from_dict(Config, data, "")


def config_to_dict(cfg: Any) -> Any:
    """Plain Python types (enums as strings, tuples as lists), e.g. for checkpoints and MLflow."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: config_to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, enum.Enum):
        return cfg.value
    if isinstance(cfg, tuple | list):
        return [config_to_dict(v) for v in cfg]
    return cfg


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `section.key=value` strings (values parsed as YAML) to a nested dict copy."""
    import yaml

    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        *sections, last = key.split(".")
        node = data
        for section in sections:
            node = node.setdefault(section, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {section!r} is not a section")
        node[last] = yaml.safe_load(raw) if raw else ""
    return data


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Read a params YAML file (None: the defaults), apply overrides, validate."""
    import yaml

    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"params file '{path}' not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"params file '{path}' is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"params file '{path}' must hold a mapping of sections")
    try:
        return config_from_dict(apply_overrides(data, overrides or []))
    except ConfigError as exc:
        raise ConfigError(f"{path or 'params'}: {exc}") from None
