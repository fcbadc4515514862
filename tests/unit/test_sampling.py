"""Generation: uint8 NHWC output, reproducibility, respacing/DDIM, guidance, files."""

import numpy as np
import pytest
import torch
from PIL import Image

from ddpm_repro.config import build_diffusion
from ddpm_repro.data import load_arrays, save_arrays
from ddpm_repro.models import UNet, preset
from ddpm_repro.sampling import GuidedModel, generate, save_grid

from ..conftest import tiny_config


def trained_like(model: torch.nn.Module) -> torch.nn.Module:
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize("method,steps", [("ancestral", "10"), ("ddim", "ddim5"), ("ancestral", "")])
def test_generate_is_uint8_nhwc_and_reproducible(method, steps):
    cfg = tiny_config(sample={"num_samples": 5, "batch_size": 2, "method": method, "steps": steps})
    model = trained_like(UNet(preset("tiny", out_channels=2)))
    diffusion = build_diffusion(cfg.diffusion)
    a = generate(model, diffusion, cfg.sample, (1, 8, 8), progress=False)
    b = generate(model, diffusion, cfg.sample, (1, 8, 8), progress=False)
    assert a.images.shape == (5, 8, 8, 1) and a.images.dtype == np.uint8
    assert np.array_equal(a.images, b.images) and np.all(a.labels == -1)
    other = generate(
        model,
        diffusion,
        cfg.sample.__class__(**{**cfg.sample.__dict__, "seed": 1}),
        (1, 8, 8),
        progress=False,
    )
    assert not np.array_equal(a.images, other.images)


def test_model_is_called_once_per_step_and_batch():
    cfg = tiny_config(sample={"num_samples": 5, "batch_size": 2, "steps": "4"})
    calls = []
    net = trained_like(UNet(preset("tiny", out_channels=2)))

    def model(x, t):
        calls.append(x.shape[0])
        return net(x, t)

    generate(model, build_diffusion(cfg.diffusion), cfg.sample, (1, 8, 8), progress=False)
    assert calls == [2] * 4 + [2] * 4 + [1] * 4  # three batches of at most 2, 4 steps each


def test_class_conditional_samples_carry_balanced_labels():
    cfg = tiny_config(sample={"num_samples": 7, "batch_size": 4, "guidance_scale": 3.0, "steps": "5"})
    model = trained_like(UNet(preset("tiny", out_channels=2, num_classes=3)))
    out = generate(
        model, build_diffusion(cfg.diffusion), cfg.sample, (1, 8, 8), num_classes=3, progress=False
    )
    assert out.labels.tolist() == [0, 1, 2, 0, 1, 2, 0]
    with pytest.raises(ValueError, match="labels must be"):
        generate(
            model,
            build_diffusion(cfg.diffusion),
            cfg.sample,
            (1, 8, 8),
            num_classes=3,
            labels=np.array([5] * 7),
            progress=False,
        )


def test_guidance_mixes_the_mean_channels_only():
    def fake(x, t, y):  # mean channel = label, variance channel = 10 * label
        v = y.float().reshape(-1, 1, 1, 1).expand_as(x)
        return torch.cat([v, 10 * v], dim=1)

    guided = GuidedModel(fake, scale=3.0, null_label=5, learned_variance=True)
    out = guided(torch.zeros(2, 1, 2, 2), torch.tensor([1, 1]), torch.tensor([1, 2]))
    # uncond (label 5) + 3 (cond - uncond): 5 + 3 (1 - 5) = -7 and 5 + 3 (2 - 5) = -4
    assert out[:, 0, 0, 0].tolist() == [-7.0, -4.0]
    assert out[:, 1, 0, 0].tolist() == [10.0, 20.0]
    plain = GuidedModel(fake, scale=1.0, null_label=5, learned_variance=True)
    assert torch.equal(
        plain(torch.zeros(1, 1, 2, 2), torch.tensor([1]), torch.tensor([2])),
        fake(torch.zeros(1, 1, 2, 2), torch.tensor([1]), torch.tensor([2])),
    )


def test_samples_and_grid_files(tmp_path):
    cfg = tiny_config(sample={"num_samples": 6, "steps": "3"})
    model = trained_like(UNet(preset("tiny", out_channels=2)))
    out = generate(model, build_diffusion(cfg.diffusion), cfg.sample, (1, 8, 8), progress=False)
    save_arrays(tmp_path / "s.npz", out)
    back = load_arrays(tmp_path / "s.npz")
    assert np.array_equal(back.images, out.images) and np.array_equal(back.labels, out.labels)
    save_grid(tmp_path / "grid.png", out.images, ncols=3, scale=2)
    with Image.open(tmp_path / "grid.png") as img:
        assert img.size == ((3 * 9 + 1) * 2, (2 * 9 + 1) * 2)
