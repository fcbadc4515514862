"""ddpm_repro.preflight: each check reports a real missing piece on one line, naming the path and the
fix, and nothing when everything is there; the projected cost is built from counted FLOPs."""

import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from ddpm_repro.config import build_unet_config, load_config
from ddpm_repro.evaluation.inception import inception_weights_path
from ddpm_repro.models import UNet, preset
from ddpm_repro.models.layers import AttentionBlock
from ddpm_repro.preflight import Problem, check, count_forward_flops, projected_cost

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"
SMOKE, DIGITS_COND, CIFAR10 = (PIPELINES / p / "params.yaml" for p in ("smoke", "digits-cond", "cifar10"))


def offline(host: str) -> bool:
    return False


def must_not_ask(host: str) -> bool:
    pytest.fail(f"asked whether {host} answers although nothing is missing")


@pytest.fixture
def empty_hub(tmp_path, monkeypatch) -> Path:
    """torch.hub's cache in an empty temporary TORCH_HOME; returns where the FID weights belong."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return inception_weights_path()


def cifar10(root: Path, *overrides: str):
    # device auto: the data and weight checks alone, on any machine
    return load_config(CIFAR10, [f"data.root={root}", "train.device=auto", *overrides])


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


# ------------------------------------------------------------------------------------ checks
@pytest.mark.parametrize("params", [SMOKE, DIGITS_COND], ids=["smoke", "digits-cond"])
def test_the_cpu_profiles_have_no_problem_and_ask_no_host(params):
    assert check(load_config(params, ["train.device=cpu"]), reachable=must_not_ask) == []


def test_offline_cifar10_lists_the_missing_archive_and_weights_one_line_each(tmp_path, empty_hub):
    root = tmp_path / "raw"
    problems = check(cifar10(root), reachable=offline)
    lines = [str(p) for p in problems]
    assert len(lines) == 2, lines
    assert lines == [f"{p.what}: {p.fix}" for p in problems] and all("\n" not in line for line in lines)
    data, weights = lines
    assert data == (
        f"CIFAR-10 not found in {root} (cifar-10-batches-py) and www.cs.toronto.edu is unreachable: "
        f"download cifar-10-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz) "
        f"into {root}, or run once online"
    )
    assert f"Inception weights are not at {empty_hub} and github.com is unreachable" in weights
    assert f"to {empty_hub}" in weights.split(": ", 1)[1]


@pytest.mark.parametrize("present", ["archive", "extracted"])
def test_cifar10_and_weights_on_disk_are_no_problem_offline(tmp_path, empty_hub, present):
    root = tmp_path / "raw"
    if present == "archive":
        touch(root / "cifar-10-python.tar.gz")
    else:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
            touch(root / "cifar-10-batches-py" / name)
    touch(empty_hub)
    assert check(cifar10(root), reachable=must_not_ask) == []


def test_an_incomplete_extracted_cifar10_is_missing(tmp_path, empty_hub):
    touch(tmp_path / "cifar-10-batches-py" / "data_batch_1")
    touch(empty_hub)
    (problem,) = check(cifar10(tmp_path), reachable=offline)
    assert problem.what.startswith(f"CIFAR-10 not found in {tmp_path}")


def test_online_everything_is_downloadable(tmp_path, empty_hub):
    asked = []
    assert check(cifar10(tmp_path), reachable=lambda host: asked.append(host) or True) == []
    assert sorted(asked) == ["github.com", "www.cs.toronto.edu"]


def test_weights_required_without_download_permission_is_a_problem_even_online(tmp_path, empty_hub):
    touch(tmp_path / "cifar-10-python.tar.gz")
    config = cifar10(tmp_path, "reference.inception_download=false")
    (problem,) = check(config, reachable=lambda host: True)
    assert "reference.inception_download is false" in problem.what and str(empty_hub) in problem.what


@pytest.mark.parametrize("fid", ["if-available", "never"])
def test_fid_that_is_not_required_never_gives_an_inception_problem(tmp_path, empty_hub, fid):
    touch(tmp_path / "cifar-10-python.tar.gz")
    assert check(cifar10(tmp_path, f"evaluate.fid={fid}"), reachable=offline) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_on_a_cpu_only_machine_is_reported():
    (problem,) = check(load_config(SMOKE, ["train.device=cuda"]), reachable=must_not_ask)
    assert "cuda" in problem.what and "no CUDA device" in problem.what and "train.device" in problem.fix


def test_more_processes_than_visible_gpus_is_reported(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    (problem,) = check(load_config(SMOKE, ["train.device=cuda", "train.nproc=4"]), reachable=must_not_ask)
    assert problem.what == "train.nproc is 4 but 2 CUDA device(s) are visible"
    for nproc in ("2", "auto"):
        assert check(load_config(SMOKE, ["train.device=cuda", f"train.nproc={nproc}"]), must_not_ask) == []


def test_mnist_names_each_missing_file_and_accepts_gzipped_or_extracted(tmp_path):
    config = load_config(SMOKE, ["data.dataset=mnist", f"data.root={tmp_path}"])
    raw = tmp_path / "MNIST" / "raw"
    touch(raw / "train-images-idx3-ubyte.gz")
    touch(raw / "train-labels-idx1-ubyte")
    (problem,) = check(config, reachable=offline)
    assert problem.what == (
        f"MNIST not found in {raw} (t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) and "
        "ossci-datasets.s3.amazonaws.com and yann.lecun.com are unreachable"
    )
    assert check(config, reachable=lambda host: host == "yann.lecun.com") == []  # one mirror suffices
    touch(raw / "t10k-images-idx3-ubyte")
    touch(raw / "t10k-labels-idx1-ubyte.gz")
    assert check(config, reachable=must_not_ask) == []


def test_an_image_folder_must_exist_hold_images_and_have_a_size(tmp_path):
    folder = tmp_path / "images"
    config = load_config(SMOKE, ["data.dataset=folder", f"data.root={folder}", "data.image_size=8"])
    assert [p.what for p in check(config)] == [f"image folder {folder} not found"]
    touch(folder / "cat" / "notes.txt")
    assert [p.what for p in check(config)] == [f"image folder {folder} holds no images"]
    touch(folder / "cat" / "1.PNG")
    assert check(config) == []
    no_size = load_config(SMOKE, ["data.dataset=folder", f"data.root={folder}"])
    assert check(no_size) == [Problem("data.image_size is not set", "set it (e.g. 64) for an image folder")]


# -------------------------------------------------------------------------------------- cost
def _hook_count(model: nn.Module, x: torch.Tensor, t: torch.Tensor) -> int:
    """FLOPs of one forward from each layer's shapes: 2 per multiply-add of every convolution
    and linear layer, and q k^T plus attn v (2 x 2 L^2 C) per attention block."""
    total = 0

    def hook(module: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv1d | nn.Conv2d):
            total += 2 * out.numel() * module.in_channels // module.groups * math.prod(module.kernel_size)
        elif isinstance(module, nn.Linear):
            total += 2 * out.numel() * module.in_features
        elif isinstance(module, AttentionBlock):
            b, c, *spatial = inputs[0].shape
            total += 4 * b * math.prod(spatial) ** 2 * c

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model(x, t)
    for handle in handles:
        handle.remove()
    return total


def test_the_digits_forward_flops_match_independent_counts():
    unet = build_unet_config(load_config(None), 8, 1, None)
    model = UNet(unet).eval()
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3, 700])
    with FlopCounterMode(display=False) as counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        model(x, t)  # a real CPU forward, batch 2
    counted = count_forward_flops(unet)
    assert counted == counter.get_total_flops() // 2 == _hook_count(model, x, t) // 2
    assert 0.03e9 < counted < 0.035e9  # benchmarks/README.md: 0.0325 GFLOP per digits forward


def test_the_imagenet64_model_is_counted_without_building_its_weights():
    flops = count_forward_flops.__wrapped__(preset("iddpm-imagenet64"))  # meta device, not from the cache
    assert 70e9 < flops < 90e9


def test_each_stage_is_its_formula_of_the_counted_forward():
    config = load_config(DIGITS_COND, ["sample.steps=ddim25", "conditional.guidance_scale=3.0"])
    table = projected_cost(config)
    f = count_forward_flops(build_unet_config(config, 8, 1, None))  # cosine-hybrid: learned variance
    s, e, T = config.sample, config.evaluate, config.diffusion.timesteps
    expected = {
        "train": 3 * f * config.train.batch_size * config.train.steps,
        "sample": f * s.num_samples * 25,
        "nll": f * e.nll_images * T,
        "evaluate: curve": f * e.curve_samples * (10 + 25 + 50 + 100 + 1000 + 10 + 25 + 50 + 100),
        "train-cond": 3 * f * config.train.batch_size * config.train.steps,
        "sample-cond": 2 * f * s.num_samples * 25,  # guidance: conditional and unconditional
        "nll-cond": f * e.nll_images * T,
    }
    got = {stage.stage: stage.flops_per_cell for stage in table.stages}
    assert {k: v for k, v in got.items() if "fid" not in k} == {k: (v,) for k, v in expected.items()}
    # pytorch-fid's Inception, ~11.4 GFLOP per image (torchvision: 5.71 G multiply-adds), per sample
    assert got["evaluate: fid"] == got["evaluate-cond: fid"]
    assert 10e9 * s.num_samples < got["evaluate: fid"][0] < 12e9 * s.num_samples
    unguided = load_config(DIGITS_COND, ["sample.steps=ddim25", "conditional.guidance_scale=1.0"])
    totals = {st.stage: st.total for st in projected_cost(unguided).stages}
    assert totals["sample-cond"] == f * s.num_samples * 25


def test_nll_cost_counts_the_whole_split_and_the_strata():
    f = count_forward_flops(build_unet_config(load_config(DIGITS_COND), 8, 1, None))
    T = load_config(DIGITS_COND).diffusion.timesteps

    def nll(*overrides):
        table = projected_cost(load_config(DIGITS_COND, list(overrides)))
        return next(st.flops_per_cell[0] for st in table.stages if st.stage == "nll")

    assert nll("evaluate.nll_images=0") == f * 359 * T  # round(1797 x 0.2) test images
    assert nll("evaluate.nll_images=0", "evaluate.nll_strata=49") == f * 359 * 50  # L_0 + 49 strata
    assert nll("evaluate.nll_images=5000") == f * 359 * T  # no more than the split holds
    assert nll("evaluate.nll_images=20", f"evaluate.nll_strata={T - 1}") == f * 20 * T  # every term


def test_projected_cost_is_linear_in_train_steps():
    one, two = (projected_cost(load_config(SMOKE, [f"train.steps={n}"])) for n in (30, 60))
    for a, b in zip(one.stages, two.stages, strict=True):
        assert a.stage == b.stage
        assert b.total == (2 * a.total if a.stage.startswith("train") else a.total), a.stage
    assert [st.stage for st in one.stages if "fid" in st.stage] == []  # the smoke profile: fid never


def test_hours_are_not_computed_without_tflops_and_follow_the_formula_with_them():
    config = load_config(SMOKE)
    bare = projected_cost(config)
    assert bare.hours(bare.total_flops) is None
    text = bare.format()
    assert "computed from counted FLOPs, not measured" in text.splitlines()[0] and "40%" in text
    assert "not computed" in text and all(line.count("|") in (0, 6) for line in text.splitlines())
    table = projected_cost(config, tflops=150.0, gpus=8, utilisation=0.5)
    assert table.total_flops == bare.total_flops
    assert math.isclose(table.hours(table.total_flops), table.total_flops / (150e12 * 0.5 * 8) / 3600)
    assert "not computed" not in table.format() and "50%" in table.format()
    with pytest.raises(ValueError):
        projected_cost(config, tflops=0.0)
