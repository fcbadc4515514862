"""The paper-scale profiles under pipelines/ (cifar10, imagenet64, ddpm-ablation): every cell of
each grid validates, each profile starts on CPU through the real CLI with overrides that only
shrink it, and the DDPM Table 2 rows resolve to the intended parameterizations."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ddpm_repro.cli import main
from ddpm_repro.config import config_to_dict, load_config, read_params
from ddpm_repro.data import ImageArrays, load_arrays, save_arrays
from ddpm_repro.models import preset
from ddpm_repro.training import list_checkpoints, load_checkpoint

from .conftest import REPO, run

PROFILES = ("cifar10", "imagenet64", "ddpm-ablation")

# The papers' settings each profile must carry (paper_tables.md; see the comments in each file).
PAPER = {
    "cifar10": {
        "data.dataset": "cifar10",
        "model.preset": "iddpm-cifar10",
        "model.dropout": 0.3,
        "diffusion.timesteps": 4000,
        "grid.schedules": ["linear", "cosine"],
        "grid.losses": ["simple", "hybrid", "vlb"],
        "train.steps": 500_000,
        "train.batch_size": 128,
        "train.lr": 1e-4,
        "train.warmup_steps": 0,
        "train.ema_rate": 0.9999,
        "train.device": "cuda",
        "sample.num_samples": 50_000,
        "evaluate.nll_images": 10_000,
    },
    "imagenet64": {
        "data.dataset": "folder",
        "data.image_size": 64,
        "model.preset": "iddpm-imagenet64",
        "model.dropout": 0.0,
        "diffusion.timesteps": 4000,
        "grid.schedules": ["linear", "cosine"],
        "grid.losses": ["simple", "hybrid", "vlb"],
        "train.steps": 200_000,
        "train.batch_size": 128,
        "train.lr": 1e-4,
        "train.warmup_steps": 0,
        "train.ema_rate": 0.9999,
        "train.device": "cuda",
        "sample.num_samples": 50_000,
    },
    "ddpm-ablation": {
        "data.dataset": "cifar10",
        "model.preset": "ddpm-cifar10",
        "model.dropout": 0.1,
        "diffusion.timesteps": 1000,
        "grid.schedules": ["linear"],
        "train.steps": 800_000,
        "train.batch_size": 128,
        "train.lr": 2e-4,
        "train.warmup_steps": 5000,
        "train.grad_clip": 1.0,
        "train.ema_rate": 0.9999,
        "train.device": "cuda",
        "sample.num_samples": 50_000,
        "evaluate.nll_images": 10_000,
    },
}

# DDPM Table 2, row by row: (mean_type, var_type, objective).
ABLATION_ROWS = {
    "linear-mean-vlb-learned": ("previous_x", "learned", "vlb"),
    "linear-mean-vlb-fixed": ("previous_x", "fixed_large", "vlb"),
    "linear-mean-mse": ("previous_x", "fixed_large", "simple"),
    "linear-eps-vlb-learned": ("epsilon", "learned", "vlb"),
    "linear-eps-vlb-fixed": ("epsilon", "fixed_large", "vlb"),
    "linear-eps-simple": ("epsilon", "fixed_large", "simple"),
}

# What the CPU start may change: the network's width and depth, the run's length and batch, the
# device. Everything else (T, schedule, objective, variance, lr, EMA, dropout, ...) stays the profile's.
SHRINK = {
    "model.model_channels": 32,
    "model.num_res_blocks": 1,
    "train.steps": 2,
    "train.batch_size": 4,
    "train.device": "cpu",
}
SHRINK_ARGS = [arg for key, value in SHRINK.items() for arg in ("--set", f"{key}={value}")]
# One thread: these models are tiny, and on 2 shared cores two OpenMP threads that wait on each
# other make a step ~10x slower, not faster.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "DDPM_REPRO_TRACKING": "0"}


def params(profile: str) -> Path:
    return REPO / "pipelines" / profile / "params.yaml"


def flat(tree: dict, prefix: str = "") -> dict:
    """{"section.key": value} of a nested mapping (lists are values)."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        out.update(flat(value, f"{name}.") if isinstance(value, dict) else {name: value})
    return out


@pytest.mark.parametrize("profile", PROFILES)
def test_profile_is_complete_and_carries_the_papers_settings(profile):
    raw = read_params(params(profile))
    assert set(raw) == set(read_params(REPO / "params.yaml")), "the same sections as the root params.yaml"
    assert raw["profile"] == profile
    settings = flat(config_to_dict(load_config(params(profile))))
    assert {key: settings[key] for key in PAPER[profile]} == PAPER[profile]
    assert f"\n## {profile}: " in (REPO / "pipelines" / "README.md").read_text()  # documented


@pytest.mark.parametrize("profile", PROFILES)
def test_every_cell_validates(profile):
    base = load_config(params(profile))
    assert base.grid.cells
    for cell in base.grid.cells:
        cfg = load_config(params(profile), cell=cell)
        d = cfg.diffusion
        assert cfg.cell == cell and cfg.profile == profile
        assert d.timesteps == PAPER[profile]["diffusion.timesteps"]
        if profile == "ddpm-ablation":
            assert d.timestep_sampler == "uniform"  # DDPM Algorithm 1: t ~ Uniform
            continue
        assert d.mean_type.value == "epsilon"
        expected = {  # Improved DDPM: L_simple fixed beta_t, learned-range Sigma otherwise
            "simple": ("fixed_large", "uniform"),
            "hybrid": ("learned_range", "uniform"),
            "vlb": ("learned_range", "loss-second-moment"),
        }[d.objective.value]
        assert (d.var_type.value, d.timestep_sampler) == expected
        if d.objective.value == "hybrid":
            assert d.hybrid_lambda == 0.001
    # The extension stays one grid edit away in the Improved DDPM profiles.
    if profile != "ddpm-ablation":
        for schedule in base.grid.schedules:
            assert load_config(params(profile), cell=f"{schedule}-aux").diffusion.objective.value == "aux"


def test_ablation_cells_are_ddpm_table_2():
    cfg = load_config(params("ddpm-ablation"))
    assert cfg.grid.cells == list(ABLATION_ROWS)
    assert "mean_type" not in read_params(params("ddpm-ablation"))["diffusion"]  # each row sets its own
    for cell, triple in ABLATION_ROWS.items():
        d = load_config(params("ddpm-ablation"), cell=cell).diffusion
        assert (d.mean_type.value, d.var_type.value, d.objective.value) == triple, cell
        assert d.schedule == "linear" and d.loss_entry == cell.removeprefix("linear-")


# ----------------------------------------------------------------- starting on CPU
@pytest.fixture(scope="module")
def cifar_npz(tmp_path_factory) -> Path:
    """Eight random CIFAR-shaped images with labels: the real data is not available offline."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("cifar") / "train.npz"
    save_arrays(path, ImageArrays(rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8), np.arange(8) % 10))
    return path


@pytest.fixture(scope="module")
def imagenet_folder(tmp_path_factory) -> Path:
    """A folder of 27 RGB images of mixed sizes in three class sub-folders, like a user's ImageNet."""
    root = tmp_path_factory.mktemp("imagenet64")
    rng = np.random.default_rng(1)
    sizes = [(64, 64), (96, 80), (70, 120)]
    for i in range(27):
        w, h = sizes[i % 3]
        folder = root / f"n0{i % 3}"
        folder.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


def check_checkpoint(profile: str, cell: str, ckpt_dir: Path) -> dict:
    """The run wrote a checkpoint whose config is the profile's own, shrunk only where SHRINK says."""
    (path,) = list_checkpoints(ckpt_dir)
    ckpt = load_checkpoint(path)
    assert ckpt["step"] == SHRINK["train.steps"]
    saved, own = flat(ckpt["config"]), flat(config_to_dict(load_config(params(profile), cell=cell)))
    assert set(saved) == set(own)
    assert {key for key in own if saved[key] != own[key]} == set(SHRINK)
    assert {key: saved[key] for key in SHRINK} == SHRINK
    d = ckpt["config"]["diffusion"]
    assert (d["schedule"], d["timesteps"]) == (cell.partition("-")[0], PAPER[profile]["diffusion.timesteps"])
    # The network keeps the preset's structure: only width and depth shrink.
    c = ckpt["config"]
    net = preset(c["model"]["preset"]).replace(out_channels=3 * (2 if "learned" in d["var_type"] else 1))
    unet, expected = ckpt["unet"], config_to_dict(net)
    assert {key for key in expected if unet[key] != expected[key]} == {"model_channels", "num_res_blocks"}
    assert unet["dropout"] == c["model"]["dropout"] == PAPER[profile]["model.dropout"]
    return ckpt


@pytest.mark.parametrize(
    "profile,cell",
    [("cifar10", "cosine-hybrid"), ("ddpm-ablation", "linear-mean-vlb-learned")],
)
def test_cifar_profiles_start_on_cpu(tmp_path, cifar_npz, profile, cell):
    ckpt_dir = tmp_path / "ckpt"
    argv = ["train", "--params", str(params(profile)), "--cell", cell, "--data", str(cifar_npz)]
    result = run(
        ["ddpm-repro", *argv, "--checkpoint-dir", str(ckpt_dir), *SHRINK_ARGS, "--no-progress"],
        tmp_path,
        timeout=300,
        **ONE_THREAD,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"trained {cell} to step 2" in result.stdout
    check_checkpoint(profile, cell, ckpt_dir)


def test_imagenet64_profile_prepares_a_folder_and_starts_on_cpu(tmp_path, imagenet_folder):
    prepared, ckpt_dir = tmp_path / "prepared", tmp_path / "ckpt"
    common = ["--params", str(params("imagenet64"))]
    result = run(
        ["ddpm-repro", "prepare", *common, "--set", f"data.root={imagenet_folder}", "--out", str(prepared)],
        tmp_path,
        timeout=300,
        **ONE_THREAD,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    train, test = load_arrays(prepared / "train.npz"), load_arrays(prepared / "test.npz")
    assert train.images.shape == (26, 64, 64, 3) and test.images.shape == (1, 64, 64, 3)
    cell = "cosine-vlb"  # T=4000, learned-range Sigma, importance-sampled t
    result = run(
        ["ddpm-repro", "train", *common, "--cell", cell, "--data", str(prepared / "train.npz")]
        + ["--checkpoint-dir", str(ckpt_dir), *SHRINK_ARGS, "--no-progress"],
        tmp_path,
        timeout=300,
        **ONE_THREAD,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = check_checkpoint("imagenet64", cell, ckpt_dir)
    assert ckpt["unet"]["image_size"] == 64 and ckpt["unet"]["channel_mult"] == [1, 2, 3, 4]


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("cell", [c for c in ABLATION_ROWS if c != "linear-mean-vlb-learned"])
def test_every_ablation_row_starts_on_cpu(tmp_path, cifar_npz, capsys, one_thread, cell):
    """The other DDPM Table 2 rows, through the same CLI in-process (no interpreter start-up)."""
    argv = ["train", "--params", str(params("ddpm-ablation")), "--cell", cell, "--data", str(cifar_npz)]
    assert main([*argv, "--checkpoint-dir", str(tmp_path), *SHRINK_ARGS, "--no-progress"]) == 0
    assert f"trained {cell} to step 2" in capsys.readouterr().out
    ckpt = check_checkpoint("ddpm-ablation", cell, tmp_path)
    assert ckpt["unet"]["out_channels"] == (6 if ABLATION_ROWS[cell][1] == "learned" else 3)
