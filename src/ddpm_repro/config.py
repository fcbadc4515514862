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

from .cell import Cell
from .diffusion import (
    SAMPLERS,
    SCHEDULES,
    AuxVariance,
    GaussianDiffusion,
    LossType,
    ModelMeanType,
    ModelVarType,
    get_named_beta_schedule,
    space_timesteps,
)
from .errors import UserError
from .models import PRESETS, UNetConfig, preset


class ConfigError(UserError):
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
    """The process and objective of one grid cell (README, "The pipeline": the cell table)."""

    schedule: str = "cosine"
    timesteps: int = 1000
    mean_type: ModelMeanType = ModelMeanType.EPSILON
    var_type: ModelVarType = ModelVarType.LEARNED_RANGE
    objective: LossType = LossType.HYBRID
    hybrid_lambda: float = 0.001
    aux_lambda: float = 0.001
    aux_variance: AuxVariance = AuxVariance.POSTERIOR
    timestep_sampler: str = "uniform"
    loss_entry: str = ""  # the `losses` entry this cell trains, when not named after its objective
    cell_seed: int | None = None  # a replicate cell's training seed (`-s<seed>`); it is train.seed too

    @property
    def entry(self) -> str:
        """The name of the `losses` entry this cell trains (the cell name's second part)."""
        return self.loss_entry or self.objective.value

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"diffusion.schedule: unknown {self.schedule!r}; valid: {', '.join(SCHEDULES)}")
        _non_negative(self, f"losses.{self.entry}", "hybrid_lambda", "aux_lambda")
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
    compile: bool = False  # torch.compile the network (in place: checkpoints are unchanged)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    # Worker processes that train, sample and evaluate start themselves (one per device):
    # "auto" is every visible CUDA device, or 1 on CPU; a number asks for that many.
    nproc: str = "auto"
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
        if self.nproc != "auto" and not (self.nproc.isdigit() and int(self.nproc) > 0):
            raise ConfigError(f"train.nproc must be auto or a positive integer, got {self.nproc!r}")


class SampleMethod(enum.Enum):
    """How `sample.method` draws: ANCESTRAL (DDPM Algorithm 2) or DDIM (Song et al. 2021, with `eta`)."""

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
class DataConfig:
    """Where the images come from (see data/sources.py)."""

    dataset: str = "digits"  # digits | cifar10 | mnist | folder
    root: str = "data/raw"  # download folder (cifar10, mnist) or the image folder
    image_size: int | None = None  # folder only: resize and centre-crop to this size
    test_fraction: float = 0.2  # digits and folder: share held out, seeded
    seed: int = 0

    def __post_init__(self) -> None:
        from .data.sources import DATASETS

        if self.dataset not in DATASETS:
            raise ConfigError(f"data.dataset: unknown {self.dataset!r}; valid: {', '.join(DATASETS)}")
        if not 0 < self.test_fraction < 1:
            raise ConfigError(f"data.test_fraction must be in (0, 1), got {self.test_fraction}")


@dataclass(frozen=True)
class LossSettings:
    """One entry of `losses:` (README, "The pipeline": the cell table): an objective and what it needs.

    An entry named after an objective (simple, hybrid, vlb, aux) trains that objective; any
    other name (e.g. DDPM Table 2's `mean-vlb-learned`) must set `objective`. Unset keys take
    the `diffusion` section's value; a key may be set in one of the two places only.
    """

    objective: LossType | None = None
    mean_type: ModelMeanType | None = None
    var_type: ModelVarType | None = None
    timestep_sampler: str | None = None
    hybrid_lambda: float | None = None
    aux_lambda: float | None = None
    aux_variance: AuxVariance | None = None


DEFAULT_LOSSES = {
    "simple": LossSettings(var_type=ModelVarType.FIXED_LARGE),
    "hybrid": LossSettings(var_type=ModelVarType.LEARNED_RANGE, hybrid_lambda=0.001),
    "vlb": LossSettings(var_type=ModelVarType.LEARNED_RANGE, timestep_sampler="loss-second-moment"),
    # vlb's sampler, so that the aux and vlb cells differ only in the objective
    "aux": LossSettings(
        var_type=ModelVarType.LEARNED_RANGE,
        timestep_sampler="loss-second-moment",
        aux_lambda=0.001,
        aux_variance=AuxVariance.POSTERIOR,
    ),
}


@dataclass(frozen=True)
class GridConfig:
    """The ablation grid: every schedule is crossed with every entry of `losses` named here."""

    schedules: tuple[str, ...] = ("linear", "cosine")
    losses: tuple[str, ...] = ("simple", "hybrid", "vlb", "aux")
    replicate_seeds: tuple[int, ...] = ()  # each adds every cell again, trained with this seed

    def __post_init__(self) -> None:
        for s in self.schedules:
            if s not in SCHEDULES:
                raise ConfigError(f"grid.schedules: unknown {s!r}; valid: {', '.join(SCHEDULES)}")
        _non_negative_all(self.replicate_seeds, "grid.replicate_seeds")
        if len(set(self.replicate_seeds)) != len(self.replicate_seeds):
            raise ConfigError(f"grid.replicate_seeds: a seed is listed twice: {list(self.replicate_seeds)}")

    @property
    def cells(self) -> list[str]:
        """The cell names, schedules outermost: "<schedule>-<loss>" (trained with train.seed),
        then each replicate seed's "<schedule>-<loss>-s<seed>", e.g. "linear-simple-s1"."""
        seeds = [None, *self.replicate_seeds]
        return [str(Cell(s, loss, seed)) for seed in seeds for s in self.schedules for loss in self.losses]


FID_MODES = ("never", "if-available", "required")


@dataclass(frozen=True)
class EvaluateConfig:
    """Evaluation sizes. The NLL scores the first `nll_images` test images (0: all of them):
    every one of the T terms when `nll_strata` is 0, else L_0, the prior and an unbiased
    estimate of the T - 1 KL terms from one timestep in each of `nll_strata` strata."""

    nll_images: int = 0
    nll_strata: int = 0
    nll_batch: int = 1024  # examples per model call (images x timesteps)
    nll_chunk: int = 16  # test images per resumable chunk (each with its own noise seed)
    clip_denoised: bool = True
    use_ema: bool = True
    seed: int = 0
    # Improved DDPM Fig. 8: the FD of `curve_samples` samples per sampling method at each
    # number of steps (T: the full chain), e.g. {ancestral: [10, 100, 1000], ddim: [10, 100]}
    curve: dict[str, tuple[int, ...]] = field(default_factory=dict)
    curve_samples: int = 64
    curve_losses: tuple[str, ...] = ()  # the `losses` entries whose cells get the curve; (): all
    curve_schedules: tuple[str, ...] = ()  # and the schedules; (): all
    # The uncertainty of sample quality: bootstrap rounds for the FD's s.e. and interval,
    # disjoint subsets of the samples for the KID's s.e.
    bootstrap_rounds: int = 200
    kid_subsets: int = 10
    # FID with pytorch-fid's Inception network: "never"; "if-available" (computed when the
    # weights are in torch.hub's cache, else "not computed"); "required" (fail up front).
    fid: str = "if-available"

    def __post_init__(self) -> None:
        _positive(self, "evaluate", "nll_batch", "nll_chunk", "curve_samples")
        if self.bootstrap_rounds < 2 or self.kid_subsets < 2:
            raise ConfigError(
                "evaluate.bootstrap_rounds and evaluate.kid_subsets must be >= 2, got "
                f"{self.bootstrap_rounds} and {self.kid_subsets}"
            )
        _non_negative(self, "evaluate", "nll_images", "nll_strata")
        if self.fid not in FID_MODES:
            raise ConfigError(f"evaluate.fid: unknown {self.fid!r}; valid: {', '.join(FID_MODES)}")
        methods = [m.value for m in SampleMethod]
        for method, steps in self.curve.items():
            if method not in methods:
                raise ConfigError(f"evaluate.curve: unknown method {method!r}; valid: {', '.join(methods)}")
            if any(n <= 0 for n in steps):
                raise ConfigError(f"evaluate.curve.{method}: {list(steps)} must be positive numbers of steps")

    @property
    def curve_points(self) -> list[tuple[SampleMethod, int]]:
        """`curve` flattened to (method, number of steps) pairs, in the order written."""
        return [(SampleMethod(m), n) for m, steps in self.curve.items() for n in steps]


@dataclass(frozen=True)
class ReferenceConfig:
    """The offline feature extractor: a small classifier trained on the training split."""

    epochs: int = 15
    batch_size: int = 64
    lr: float = 0.001
    feature_dim: int = 64
    seed: int = 0
    inception_download: bool = False  # let pytorch-fid fetch its weights (online machines)

    def __post_init__(self) -> None:
        _positive(self, "reference", "epochs", "batch_size", "lr", "feature_dim")


@dataclass(frozen=True)
class ConditionalCell:
    """One grid cell trained class-conditionally (stages train-cond@<schedule>-<loss>, ...)."""

    schedule: str = "cosine"
    loss: str = "hybrid"  # an entry of `losses`

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            valid = ", ".join(SCHEDULES)
            raise ConfigError(f"conditional.cells: unknown schedule {self.schedule!r}; valid: {valid}")


@dataclass(frozen=True)
class ConditionalConfig:
    """Class-conditional variants of grid cells, sampled with classifier-free guidance;
    `cells` maps "<schedule>-<loss>" to its schedule and loss (the DVC stages' names)."""

    cells: dict[str, ConditionalCell] = field(default_factory=dict)
    guidance_scale: float = 1.0  # eps_u + s (eps_c - eps_u); 1: conditional only

    def __post_init__(self) -> None:
        _non_negative(self, "conditional", "guidance_scale")
        for name, cell in self.cells.items():
            if name != f"{cell.schedule}-{cell.loss}":
                raise ConfigError(
                    f"conditional.cells.{name}: the name must be <schedule>-<loss> of its entry, "
                    f"here {cell.schedule}-{cell.loss}"
                )


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow. The store is MLFLOW_TRACKING_URI if set, else sqlite:///<repo>/mlflow.db."""

    enabled: bool = True
    experiment: str = ""  # "": ddpm-repro/<profile>
    timeout_s: float = 5.0  # per HTTP request to a tracking server; no retries
    log_checkpoint: bool = True  # the final checkpoint of each cell as the artifact checkpoint/

    def __post_init__(self) -> None:
        _positive(self, "tracking", "timeout_s")


@dataclass(frozen=True)
class Config:
    """Everything one grid cell needs, from params.yaml."""

    profile: str = "default"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    losses: dict[str, LossSettings] = field(default_factory=lambda: dict(DEFAULT_LOSSES))
    grid: GridConfig = field(default_factory=GridConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    conditional: ConditionalConfig = field(default_factory=ConditionalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def __post_init__(self) -> None:
        T = self.diffusion.timesteps
        for method, n in self.evaluate.curve_points:
            if n > T:
                raise ConfigError(f"evaluate.curve.{method.value}: {n} steps is more than T={T}")
        for name in self.evaluate.curve_losses:
            if name not in self.losses:
                valid = ", ".join(self.losses)
                raise ConfigError(
                    f"evaluate.curve_losses: unknown {name!r}; valid (entries of losses): {valid}"
                )
        for name in self.evaluate.curve_schedules:
            if name not in SCHEDULES:
                raise ConfigError(
                    f"evaluate.curve_schedules: unknown {name!r}; valid: {', '.join(sorted(SCHEDULES))}"
                )
        for name, cell in self.conditional.cells.items():
            if cell.loss not in self.losses:
                valid = ", ".join(self.losses)
                raise ConfigError(f"conditional.cells.{name}.loss: unknown {cell.loss!r}; valid: {valid}")
        if self.train.seed in self.grid.replicate_seeds and self.diffusion.cell_seed is None:
            raise ConfigError(
                f"grid.replicate_seeds: {self.train.seed} is train.seed, which the unsuffixed cells already "
                "train; list only the other seeds"
            )
        for name in self.grid.losses:
            if name not in self.losses:
                valid = ", ".join(self.losses)
                raise ConfigError(f"grid.losses: unknown {name!r}; valid (entries of losses): {valid}")

    @property
    def has_step_curve(self) -> bool:
        """Whether this cell's evaluate stage draws the step curve: a curve is set and the
        cell's `losses` entry is in evaluate.curve_losses and its schedule in
        evaluate.curve_schedules (an empty list takes every one)."""
        e = self.evaluate
        listed = not e.curve_losses or self.diffusion.entry in e.curve_losses
        scheduled = not e.curve_schedules or self.diffusion.schedule in e.curve_schedules
        return bool(e.curve_points) and listed and scheduled

    def entry_diffusion(self, entry: str) -> DiffusionConfig:
        """The diffusion settings that the `losses` entry `entry` trains with: the keys it
        sets over the diffusion section's, its objective (the entry's name when unset)."""
        if entry not in self.losses:
            raise ConfigError(f"no entry {entry!r} under losses; valid: {', '.join(self.losses)}")
        own = {f.name: getattr(self.losses[entry], f.name) for f in dataclasses.fields(LossSettings)}
        objective = own.pop("objective") or LossType(entry)
        own = {k: v for k, v in own.items() if v is not None}
        loss_entry = "" if entry == objective.value else entry
        return dataclasses.replace(self.diffusion, **own, objective=objective, loss_entry=loss_entry)

    @property
    def grid_cell(self) -> Cell:
        """This config's grid cell (schedule, losses entry, training seed, conditional or not)."""
        d = self.diffusion
        return Cell(d.schedule, d.entry, d.cell_seed, cond=self.model.class_cond)

    @property
    def cell(self) -> str:
        """This config's grid cell name, e.g. cosine-hybrid; "-cond" ends a class-conditional one."""
        return str(self.grid_cell)


def _non_negative_all(values: tuple[int, ...], key: str) -> None:
    for v in values:
        if v < 0:
            raise ConfigError(f"{key}: seeds must be >= 0, got {v}")


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
        loss_type=cfg.objective,
        hybrid_lambda=cfg.hybrid_lambda,
        aux_lambda=cfg.aux_lambda,
        aux_variance=cfg.aux_variance,
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
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        (_, inner) = typing.get_args(tp)
        return {str(k): _coerce(v, inner, _join(key, k)) for k, v in value.items()}
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


def config_from_dict(data: dict, cell: str | None = None) -> Config:
    """Validate a nested dict (as from YAML) into a `Config`. Missing keys take defaults.

    With a cell ("<schedule>-<loss entry>", e.g. "cosine-hybrid") the diffusion section is
    resolved for it: the keys of `diffusion` (shared by every cell), the keys the entry
    `losses.<loss entry>` sets (objective, variance type, sampler, lambdas), and the
    schedule. Without a cell, `diffusion` is taken as it is (e.g. a checkpoint's resolved one).
    """
    if not isinstance(data, dict):
        raise ConfigError(f"the params must be a mapping of sections, got {type(data).__name__}")
    data = dict(data)
    diffusion = dict(data.get("diffusion") or {})
    data["losses"] = losses = _merge_losses(data.get("losses") or {})
    if cell is not None:
        try:
            parsed = Cell.parse(cell)
        except UserError as exc:
            raise ConfigError(str(exc)) from None
        schedule, name = parsed.schedule, parsed.loss
        if name not in losses:
            raise ConfigError(f"cell {cell!r}: no entry {name!r} under losses; valid: {', '.join(losses)}")
        settings = {k: v for k, v in losses[name].items() if v is not None}
        objective = settings.pop("objective", name)
        for key in settings:
            if key in diffusion:
                raise ConfigError(
                    f"diffusion.{key} and losses.{name}.{key} are both set; set it in one place"
                )
        diffusion.update(settings, schedule=schedule, objective=objective)
        if name != objective:
            diffusion["loss_entry"] = name
        if parsed.seed is not None:  # a replicate: its seed is the training seed
            diffusion["cell_seed"] = parsed.seed
            data["train"] = {**(data.get("train") or {}), "seed": parsed.seed}
    data["diffusion"] = diffusion
    return _from_dict(Config, data, "")


def _merge_losses(raw: Any) -> dict[str, dict]:
    """DEFAULT_LOSSES with the params' `losses` entries merged over them, key by key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"losses must be a mapping of named entries, got {raw!r}")
    merged = {name: config_to_dict(s) for name, s in DEFAULT_LOSSES.items()}
    objectives = [t.value for t in LossType]
    for name, entry in raw.items():
        if not isinstance(entry, dict):
            raise ConfigError(f"losses.{name} must be a mapping, got {entry!r}")
        merged[str(name)] = {**merged.get(str(name), config_to_dict(LossSettings())), **entry}
        if str(name) not in objectives and merged[str(name)].get("objective") is None:
            raise ConfigError(
                f"losses.{name}: an entry not named after an objective must set objective "
                f"({', '.join(objectives)})"
            )
    return merged


def config_to_dict(cfg: Any) -> Any:
    """Plain Python types (enums as strings, tuples as lists), e.g. for checkpoints and MLflow."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: config_to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, enum.Enum):
        return cfg.value
    if isinstance(cfg, tuple | list):
        return [config_to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: config_to_dict(v) for k, v in cfg.items()}
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


def read_params(path: str | Path) -> dict:
    """The raw mapping of a params YAML file; errors name the file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file '{path}' not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"params file '{path}' is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"params file '{path}' must hold a mapping of sections")
    return data


def load_config(
    path: str | Path | None, overrides: list[str] | None = None, cell: str | None = None
) -> Config:
    """Read a params YAML file (None: the defaults), apply overrides, resolve the cell, validate."""
    data = read_params(path) if path is not None else {}
    try:
        return config_from_dict(apply_overrides(data, overrides or []), cell)
    except ConfigError as exc:
        raise ConfigError(f"{path or 'params'}: {exc}") from None
