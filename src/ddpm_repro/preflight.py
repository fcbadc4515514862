"""Before a run: what would stop it (`check`) and what it would cost (`projected_cost`).

`check(config)` returns one `Problem` per thing found wrong that would fail a stage later: a
CUDA device asked for and missing, data neither on disk nor downloadable, Inception weights
required but unavailable. It reports only what it looked at; [] does not promise success.

`projected_cost(config)` turns the UNet's counted FLOPs into FLOPs per pipeline stage for the
whole grid, and into hours only when a throughput is given: nothing is measured or guessed.
"""

from __future__ import annotations

import functools
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch

from .config import Config, DataConfig, TrainConfig, build_unet_config
from .data.sources import IMAGE_SUFFIXES
from .diffusion import space_timesteps
from .errors import UserError
from .models import UNet, UNetConfig
from .training.distributed import pick_device

Reachable = Callable[[str], bool]


@dataclass(frozen=True)
class Problem:
    """One thing that would stop a run: what is wrong and how to fix it."""

    what: str
    fix: str

    def __str__(self) -> str:
        """The problem on one line, "<what>: <fix>"."""
        return f"{self.what}: {self.fix}"


def host_reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    """True if a TCP connection to host:port opens within `timeout` seconds (nothing is sent)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def check(config: Config, reachable: Reachable | None = None) -> list[Problem]:
    """Every problem found in `config`'s device, data and Inception weights; [] when none.

    `reachable(host)` says whether a download host answers (default: `host_reachable`); it is
    asked only about the hosts of files that are missing, so a complete offline set-up never
    touches the network.
    """
    reachable = reachable or host_reachable
    device, data = _check_device(config.train), _check_data(config.data, reachable)
    return [*device, *data, *_check_inception(config, reachable)]


def _check_device(train: TrainConfig) -> list[Problem]:
    try:
        device = pick_device(train.device)  # the trainer's own resolution of auto | cpu | cuda
    except ValueError as exc:
        return [Problem(str(exc), "run on a machine with a CUDA GPU, or set train.device: auto")]
    visible = torch.cuda.device_count() if device.type == "cuda" else 0
    if device.type != "cuda" or train.nproc == "auto" or int(train.nproc) <= visible:
        return []
    what = f"train.nproc is {train.nproc} but {visible} CUDA device(s) are visible"
    return [Problem(what, f"set train.nproc: auto (or at most {visible}), or make more GPUs visible")]


def _check_data(data: DataConfig, reachable: Reachable) -> list[Problem]:
    if data.dataset == "folder":
        return _check_folder(data, Path(data.root))
    if data.dataset == "cifar10":
        return _check_cifar10(Path(data.root), reachable)
    if data.dataset == "mnist":
        return _check_mnist(Path(data.root), reachable)
    return []  # digits: bundled with scikit-learn


def _check_cifar10(root: Path, reachable: Reachable) -> list[Problem]:
    from torchvision.datasets import CIFAR10  # its names are those data/sources.py's loader uses

    # CIFAR10.download skips the download when the archive or the extracted batches are there
    # (it also checks their MD5s, which we skip: a corrupt file still fails `prepare`).
    names = [n for n, _ in CIFAR10.train_list + CIFAR10.test_list] + [CIFAR10.meta["filename"]]
    if (root / CIFAR10.filename).is_file() or all((root / CIFAR10.base_folder / n).is_file() for n in names):
        return []
    fetch = f"{CIFAR10.filename} ({CIFAR10.url})"
    return _unless_online("CIFAR-10", root, CIFAR10.base_folder, [CIFAR10.url], fetch, reachable)


def _check_mnist(root: Path, reachable: Reachable) -> list[Problem]:
    from torchvision.datasets import MNIST

    raw = root / "MNIST" / "raw"  # MNIST.raw_folder; its download skips files there, gzipped or not
    gz = [n for n, _ in MNIST.resources if not (raw / n).is_file() and not (raw / n[:-3]).is_file()]
    if not gz:
        return []
    fetch = f"{', '.join(gz)} from {MNIST.mirrors[0]}"
    return _unless_online("MNIST", raw, ", ".join(gz), MNIST.mirrors, fetch, reachable)


def _unless_online(
    label: str, where: Path, missing: str, urls: list[str], fetch: str, reachable: Reachable
) -> list[Problem]:
    """[] if any of the urls' hosts answers (torchvision will download), else the problem."""
    hosts = [urlparse(u).hostname or u for u in urls]
    if any(reachable(h) for h in hosts):
        return []
    what = f"{label} not found in {where} ({missing}) and {' and '.join(hosts)}"
    what += " is unreachable" if len(hosts) == 1 else " are unreachable"
    return [Problem(what, f"download {fetch} into {where}, or run once online")]


def _check_folder(data: DataConfig, root: Path) -> list[Problem]:
    problems = []
    if data.image_size is None:  # load_dataset refuses a folder without it
        problems.append(Problem("data.image_size is not set", "set it (e.g. 64) for an image folder"))
    if not root.is_dir():
        problems.append(Problem(f"image folder {root} not found", "put the images there or set data.root"))
    elif not any(p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() for p in root.rglob("*")):
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        problems.append(Problem(f"image folder {root} holds no images", f"add image files ({suffixes})"))
    return problems


def _check_inception(config: Config, reachable: Reachable) -> list[Problem]:
    if config.evaluate.fid != "required":  # never and if-available do not stop a run
        return []
    from pytorch_fid.inception import FID_WEIGHTS_URL

    from .evaluation.inception import inception_weights_path

    path = inception_weights_path()  # the very file load_inception reads
    download = config.reference.inception_download
    host = urlparse(FID_WEIGHTS_URL).hostname or FID_WEIGHTS_URL
    if path.is_file() or (download and reachable(host)):
        return []
    why = f"{host} is unreachable" if download else "reference.inception_download is false"
    what = f"evaluate.fid is required but the Inception weights are not at {path} and {why}"
    fix = f"download {FID_WEIGHTS_URL} to {path} (TORCH_HOME moves it), or set evaluate.fid: if-available"
    return [Problem(what, fix)]


# ------------------------------------------------------------------------------------- cost
# (size, channels) of each dataset as data/sources.py loads it (MNIST unpadded); folder: RGB.
IMAGE_SHAPES = {"digits": (8, 1), "mnist": (28, 1), "cifar10": (32, 3)}
DATASET_IMAGES = {"digits": 1797}  # split by data.test_fraction
TEST_IMAGES = {"mnist": 10_000, "cifar10": 10_000}  # the official test splits


@functools.lru_cache(maxsize=16)
def count_forward_flops(unet: UNetConfig) -> int:
    """FLOPs of one UNet forward pass on one image: convolutions, matmuls and attention, 2 per
    multiply-add, counted by torch.utils.flop_counter on the meta device (no weights allocated,
    nothing computed). SDPA's math backend is forced there, so attention is counted as its two
    batched matmuls, the FLOPs of any fused kernel; no CPU-kernel formula is needed."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = UNet(unet).eval()
        x = torch.empty(1, unet.in_channels, unet.image_size, unet.image_size)
        t = torch.zeros(1, dtype=torch.long)
        y = torch.zeros(1, dtype=torch.long) if unet.num_classes else None
    with FlopCounterMode(display=False) as counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        model(x, t, y)
    return int(counter.get_total_flops())


@functools.lru_cache(maxsize=1)
def _inception_flops() -> int:
    """pytorch-fid's Inception to pool3 on one image (it resizes every input to 299x299), counted
    on torchvision's inception_v3: the FID variant keeps its convolutions and changes only
    pooling and weights. The classifier layer, which FID does not run, is removed."""
    from torch.utils.flop_counter import FlopCounterMode
    from torchvision.models import inception_v3

    with torch.device("meta"):
        net = inception_v3(weights=None, aux_logits=False, init_weights=False).eval()
        net.fc = torch.nn.Identity()
        x = torch.empty(1, 3, 299, 299)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(x)
    return int(counter.get_total_flops())


@dataclass(frozen=True)
class StageCost:
    """One pipeline stage over the cells that run it: the FLOPs of each cell, in grid order."""

    stage: str
    flops_per_cell: tuple[int, ...]

    @property
    def total(self) -> int:
        """The stage's FLOPs summed over its cells."""
        return sum(self.flops_per_cell)


@dataclass(frozen=True)
class CostTable:
    """Projected FLOPs per stage of a profile's whole grid; hours only with a throughput."""

    profile: str
    stages: tuple[StageCost, ...]
    forward_flops: int  # one UNet forward, one image (the first cell's)
    utilisation: float
    gpus: int
    tflops: float | None = None  # per GPU; None: hours are not computed

    @property
    def total_flops(self) -> int:
        """The FLOPs of every stage of every cell."""
        return sum(s.total for s in self.stages)

    def hours(self, flops: float) -> float | None:
        """Wall-clock hours for `flops` on `gpus` GPUs, each at tflops x utilisation (perfect
        scaling assumed); None without tflops."""
        if self.tflops is None:
            return None
        return flops / (self.tflops * 1e12 * self.utilisation * self.gpus) / 3600

    def format(self) -> str:
        """A Markdown table (stage, cells, FLOPs per cell, total FLOPs, hours) under a header line
        that says how the figures were obtained, and a footer that says what they count."""
        rate = f"{self.tflops:g} TFLOP/s per GPU" if self.tflops else "no --tflops given: hours not computed"
        lines = [
            f"Projected cost of profile {self.profile}: computed from counted FLOPs, not measured; "
            f"assumed utilisation {self.utilisation:.0%} ({rate}), {self.gpus} GPU(s).",
            f"| stage | cells | FLOPs per cell | total FLOPs | hours on {self.gpus} GPU(s) |",
            "|---|---:|---:|---:|---:|",
        ]
        for s in (*self.stages, StageCost("total", ())):
            total = s.total if s.flops_per_cell else self.total_flops
            per = " to ".join(sorted({f"{f:.3g}" for f in s.flops_per_cell}, key=float))
            cells = len(s.flops_per_cell) or ""
            lines.append(f"| {s.stage} | {cells} | {per} | {total:.3g} | {_hours(self.hours(total))} |")
        lines.append(
            f"UNet forward {self.forward_flops / 1e9:.4g} GFLOP/image (torch.utils.flop_counter, 2 per "
            "multiply-add); train = 3 forwards per image (4 with model.use_checkpoint); fid = pytorch-fid "
            "Inception per sample. Not counted: the reference stage, optimizer, EMA, data loading."
        )
        return "\n".join(lines)


def _hours(h: float | None) -> str:
    return "not computed" if h is None else f"{h:.3g}" if h < 100 else f"{h:,.0f}"


def _nll_images(config: Config) -> int:
    """How many test images the nll stage scores (evaluate.nll_images, 0: the whole split)."""
    d, wanted = config.data, config.evaluate.nll_images
    if d.dataset in TEST_IMAGES:
        split = TEST_IMAGES[d.dataset]
    elif d.dataset in DATASET_IMAGES:
        split = int(round(DATASET_IMAGES[d.dataset] * d.test_fraction))
    elif wanted:
        return wanted
    else:
        raise UserError(
            "evaluate.nll_images = 0 (the whole test split): the size of an image folder's split is not "
            "known here; set a number"
        )
    return min(wanted, split) if wanted else split


def projected_cost(
    config: Config, tflops: float | None = None, gpus: int = 1, utilisation: float = 0.4
) -> CostTable:
    """FLOPs per stage for the grid (config.grid.cells) and the conditional cells, from the
    counted FLOPs F of one forward pass on one image (`count_forward_flops`):

    - train: 3 F x batch_size x steps per cell, as a backward pass costs about two forwards
      (gradients for activations and for weights: Kaplan et al. 2020, sec. 2.1; counted here,
      benchmarks/README.md has 50.56 GFLOP per iddpm-cifar10 step against 16.77 per forward);
      4 F with model.use_checkpoint, which reruns the forward. Labels add only an embedding.
    - sample: F x num_samples x the steps of sample.steps ("" = T, "50", "ddim25", "25,25");
      x2 for conditional cells when conditional.guidance_scale != 1 (a doubled batch).
    - nll: F x nll_images x T (every term of the bound; K + 1 with evaluate.nll_strata = K;
      nll_images = 0 is the whole test split, fewer if the split is smaller).
    - curve: F x curve_samples x the sum of the curve points' steps (unconditional cells of
      the evaluate.curve_losses entries and evaluate.curve_schedules; an empty list is all).
    - fid: pytorch-fid's Inception forward x num_samples, unless evaluate.fid is never.

    Returns a CostTable; its hours are FLOPs / (tflops 1e12 x utilisation x gpus) / 3600,
    None when tflops is None.
    """
    if gpus < 1 or not 0 < utilisation <= 1 or (tflops is not None and tflops <= 0):
        raise UserError(
            f"need gpus >= 1, 0 < utilisation <= 1, tflops > 0; got {gpus}, {utilisation}, {tflops}"
        )
    if config.data.dataset == "folder":
        if config.data.image_size is None:
            raise UserError("data.image_size is required for an image folder")
        size, channels = config.data.image_size, 3  # load_image_folder converts to RGB
    else:
        size, channels = IMAGE_SHAPES[config.data.dataset]
    base = build_unet_config(config, size, channels, None)
    T, s, e = config.diffusion.timesteps, config.sample, config.evaluate

    def forward(loss: str) -> int:
        # Cells differ only in the output width, 2C with a learned variance. A cell's var_type
        # is its `losses` entry's, else the diffusion section's (as config_from_dict resolves it).
        var_type = config.losses[loss].var_type or config.diffusion.var_type
        return count_forward_flops(base.replace(out_channels=channels * (2 if var_type.is_learned else 1)))

    grid = [forward(loss) for _ in config.grid.schedules for loss in config.grid.losses]  # cells' order
    curves = [
        (not e.curve_losses or loss in e.curve_losses)
        and (not e.curve_schedules or schedule in e.curve_schedules)
        for schedule in config.grid.schedules
        for loss in config.grid.losses
    ]
    cond = [forward(c.loss) for c in config.conditional.cells.values()]
    train = (4 if config.model.use_checkpoint else 3) * config.train.batch_size * config.train.steps
    steps = len(space_timesteps(T, s.steps)) if s.steps else T
    guided = 2 if config.conditional.guidance_scale != 1 else 1
    fid = _inception_flops() * s.num_samples if e.fid != "never" else 0
    nll = _nll_images(config) * (e.nll_strata + 1 if 0 < e.nll_strata < T - 1 else T)
    rows = [
        ("train", [f * train for f in grid]),
        ("sample", [f * s.num_samples * steps for f in grid]),
        ("nll", [f * nll for f in grid]),
        (
            "evaluate: curve",
            [
                f * e.curve_samples * sum(n for _, n in e.curve_points) * curved
                for f, curved in zip(grid, curves, strict=True)
            ],
        ),
        ("evaluate: fid", [fid for _ in grid]),
        ("train-cond", [f * train for f in cond]),
        ("sample-cond", [f * s.num_samples * steps * guided for f in cond]),
        ("nll-cond", [f * nll for f in cond]),
        ("evaluate-cond: fid", [fid for _ in cond]),
    ]
    stages = tuple(StageCost(name, tuple(flops)) for name, flops in rows if any(flops))
    forward_flops = (grid or cond or [count_forward_flops(base)])[0]
    return CostTable(config.profile, stages, forward_flops, utilisation, gpus, tflops)
