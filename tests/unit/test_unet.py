"""The UNet: reference parameter counts, conditioning, checkpointing, attention layout."""

import pytest
import torch

from ddpm_repro.models import PRESETS, UNet, UNetConfig, count_parameters, preset
from ddpm_repro.models.layers import AttentionBlock, timestep_embedding


# Parameter counts of the reference implementation (openai/improved-diffusion) for the
# same configuration, as stated in issue 3: DDPM's CIFAR-10 model is the paper's 35.7M.
@pytest.mark.parametrize(
    "name,count",
    [("ddpm-cifar10", 35_746_307), ("iddpm-cifar10", 52_546_438), ("iddpm-imagenet64", 121_063_942)],
)
def test_presets_match_reference_parameter_counts(name, count):
    assert count_parameters(UNet(preset(name))) == count


@pytest.mark.parametrize("name", ["digits", "tiny"])
def test_small_presets_run_and_learned_sigma_doubles_channels(name):
    cfg = preset(name)
    x = torch.randn(3, cfg.in_channels, cfg.image_size, cfg.image_size)
    t = torch.tensor([0, 10, 999])
    assert UNet(cfg)(x, t).shape == x.shape
    learned = UNet(cfg.replace(out_channels=2 * cfg.in_channels))
    assert learned(x, t).shape == (3, 2 * cfg.in_channels, cfg.image_size, cfg.image_size)


def perturb(model: torch.nn.Module) -> None:
    """Move every weight off its initialisation (the zero-initialised convs hide t and y)."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))


def test_output_starts_at_zero_and_depends_on_t_once_trained():
    model = UNet(preset("tiny"))
    x = torch.randn(2, 1, 8, 8)
    assert torch.all(model(x, torch.tensor([1, 2])) == 0)  # zero-initialised output conv
    perturb(model)
    a, b = model(x, torch.tensor([1, 1])), model(x, torch.tensor([500, 500]))
    assert not torch.allclose(a, b)


def test_class_conditioning_with_a_null_label():
    model = UNet(preset("tiny", num_classes=10))
    assert model.label_emb.num_embeddings == 11  # label 10 means "no label"
    perturb(model)
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([5, 5])
    a, b = model(x, t, torch.tensor([3, 3])), model(x, t, torch.tensor([10, 10]))
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="class labels y must be given"):
        model(x, t)
    with pytest.raises(ValueError, match="class labels y must be given"):
        UNet(preset("tiny"))(x, t, torch.tensor([1, 1]))


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_gradient_checkpointing_gives_the_same_outputs_and_gradients(dropout):
    # with dropout, the recomputed forward must draw the masks the first pass drew
    torch.manual_seed(0)
    plain = UNet(preset("tiny", dropout=dropout))
    ckpt = UNet(preset("tiny", dropout=dropout, use_checkpoint=True))
    ckpt.load_state_dict(plain.state_dict())
    perturb(plain)
    ckpt.load_state_dict(plain.state_dict())
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3, 7])
    torch.manual_seed(1)
    out_a = plain(x, t)
    torch.manual_seed(1)
    out_b = ckpt(x, t)
    torch.testing.assert_close(out_a, out_b)
    out_a.square().sum().backward()
    out_b.square().sum().backward()
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_biggan_updown_and_additive_embedding_variants_change_the_network():
    # Each variant builds a different network (up/down in residual blocks; t added to the
    # features instead of scaling them), and its output, with the same trained-like weights
    # where the parameters match, depends on t and differs from the default's.
    torch.manual_seed(0)
    base_cfg = preset("tiny")
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([1, 500])
    base = UNet(base_cfg)
    perturb(base)
    outputs = {}
    for name, cfg in {
        "updown": base_cfg.replace(resblock_updown=True),
        "additive": base_cfg.replace(use_scale_shift_norm=False),
    }.items():
        model = UNet(cfg)
        assert set(model.state_dict()) != set(base.state_dict()) or any(
            a.shape != b.shape
            for a, b in zip(model.state_dict().values(), base.state_dict().values(), strict=True)
        ), name
        perturb(model)
        out = model(x, t)
        assert out.shape == x.shape and torch.isfinite(out).all()
        assert not torch.allclose(out[0], model(x, torch.tensor([500, 500]))[0]), name  # uses t
        outputs[name] = out
    assert not torch.allclose(outputs["updown"], outputs["additive"])


def test_attention_splits_heads_before_q_k_v():
    # The reference layout: qkv [B, 3C, L] -> [B*heads, 3C/heads, L] -> q, k, v per head.
    torch.manual_seed(0)
    block = AttentionBlock(8, num_heads=2, norm_groups=4)
    torch.nn.init.normal_(block.proj_out.weight)
    x = torch.randn(2, 8, 3, 3)
    b, c, length = 2, 8, 9
    qkv = block.qkv(block.norm(x.reshape(b, c, length))).reshape(b * 2, 3 * c // 2, length)
    q, k, v = qkv.split(c // 2, dim=1)
    weight = torch.softmax(torch.einsum("bct,bcs->bts", q, k) / (c // 2) ** 0.5, dim=-1)
    h = torch.einsum("bts,bcs->bct", weight, v).reshape(b, c, length)
    expected = (x.reshape(b, c, length) + block.proj_out(h)).reshape(x.shape)
    torch.testing.assert_close(block(x), expected)


def test_timestep_embedding_is_cos_then_sin():
    emb = timestep_embedding(torch.tensor([0.0, 2.0]), 6)
    freqs = torch.exp(-torch.log(torch.tensor(10000.0)) * torch.arange(3) / 3)
    torch.testing.assert_close(emb[1], torch.cat([torch.cos(2 * freqs), torch.sin(2 * freqs)]))
    assert torch.equal(emb[0, :3], torch.ones(3))


def test_bf16_autocast_forward_on_cpu_is_bf16_and_close_to_fp32():
    torch.manual_seed(0)
    model = UNet(preset("tiny"))
    perturb(model)  # the zero-initialised output conv would make every output exactly 0
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([1, 2])
    ref = model(x, t)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, t)
    assert out.dtype == torch.bfloat16  # autocast really ran the convolutions in bf16
    assert ref.abs().max() > 0.1 and torch.isfinite(out.float()).all()
    # bf16 keeps 8 bits of mantissa: within a few percent of fp32, not equal to it
    rel = (out.float() - ref).norm() / ref.norm()
    assert 0 < rel < 0.05


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"image_size": 12, "channel_mult": (1, 2, 2, 2)}, "not divisible by 2"),
        ({"attention_resolutions": (5,)}, r"attention_resolutions \[5\]"),
        ({"model_channels": 18}, "norm_groups"),
    ],
)
def test_bad_unet_configs_are_named(changes, message):
    with pytest.raises(ValueError, match=message):
        UNetConfig(**{**PRESETS["tiny"].__dict__, **changes})
