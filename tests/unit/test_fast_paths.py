"""The fast paths compute what the plain ones do: bf16 autocast, the fused attention kernel,
the bf16 matmul attention and the CPU dropout (correctness only; their speed is measured by
benchmarks/bench.py). torch.compile: tests/integration/test_training.py."""

import pytest
import torch

from ddpm_repro.config import build_diffusion, config_from_dict
from ddpm_repro.models import UNet, preset
from ddpm_repro.models.layers import AttentionBlock, Dropout, matmul_attention

# bf16 keeps 8 bits of mantissa (relative rounding 2^-9 ~ 0.2% per op); through a whole UNet
# and the loss the mean loss moves by well under 2%.
BF16_RTOL = 2e-2


def _randomised(model: torch.nn.Module) -> torch.nn.Module:
    """Give the zero-initialised output layers weights, so every path affects the output."""
    torch.manual_seed(0)
    for p in model.parameters():
        if not p.detach().abs().sum():
            torch.nn.init.normal_(p, std=0.05)
    return model


def _plain_attention(block: AttentionBlock, x: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v written out, with the Improved DDPM head split."""
    b, c, h, w = x.shape
    heads, d = block.num_heads, c // block.num_heads
    qkv = block.qkv(block.norm(x.reshape(b, c, h * w))).reshape(b * heads, 3 * d, h * w)
    q, k, v = qkv.split(d, dim=1)
    weight = torch.softmax(torch.einsum("bct,bcs->bts", q, k) / d**0.5, dim=-1)
    out = torch.einsum("bts,bcs->bct", weight, v).reshape(b, c, h * w)
    return (x.reshape(b, c, h * w) + block.proj_out(out)).reshape(x.shape)


def test_fused_attention_matches_plain_attention_in_values_and_gradients():
    # the CIFAR-10 model's 16x16 attention: 256 positions, 4 heads
    block = _randomised(AttentionBlock(64, num_heads=4, norm_groups=32))
    x = torch.randn(2, 64, 16, 16, requires_grad=True)
    fused = block(x)
    (grad_fused,) = torch.autograd.grad(fused.square().sum(), x)
    plain = _plain_attention(block, x)
    (grad_plain,) = torch.autograd.grad(plain.square().sum(), x)
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_fused, grad_plain, rtol=1e-4, atol=1e-4)


def test_bf16_attention_stays_within_bf16_tolerance_of_fp32():
    block = _randomised(AttentionBlock(64, num_heads=4, norm_groups=32))
    x = torch.randn(2, 64, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = block(x).float()
    torch.testing.assert_close(low, _plain_attention(block, x), rtol=BF16_RTOL, atol=5e-2)


def test_matmul_attention_is_scaled_dot_product_attention():
    q, k, v = torch.randn(3, 2, 4, 64, 32).unbind(0)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(matmul_attention(q, k, v), expected, rtol=1e-5, atol=1e-5)


def test_bf16_attention_gradients_stay_within_bf16_tolerance_of_fp32():
    block = _randomised(AttentionBlock(64, num_heads=4, norm_groups=32))
    x = torch.randn(2, 64, 16, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = block(x).float()
    (grad_low,) = torch.autograd.grad(low.square().sum(), x)
    (grad_plain,) = torch.autograd.grad(_plain_attention(block, x).square().sum(), x)
    torch.testing.assert_close(grad_low, grad_plain, rtol=BF16_RTOL, atol=5e-2)


# 10^6 draws: the drop rate's standard error is sqrt(0.3 * 0.7 / 10^6) = 4.6e-4
DROP_P, DROP_N, DROP_SE = 0.3, 1_000_000, 4.6e-4


def test_cpu_dropout_drops_at_rate_p_and_scales_what_it_keeps():
    torch.manual_seed(0)
    x = (torch.rand(DROP_N) + 1.0).requires_grad_()  # no zeros of its own
    y = Dropout(DROP_P).train()(x)
    dropped = y == 0
    assert abs(dropped.float().mean().item() - DROP_P) < 5 * DROP_SE
    torch.testing.assert_close(y[~dropped], x[~dropped] / (1 - DROP_P), rtol=1e-6, atol=0.0)
    (grad,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(grad, (~dropped).float() / (1 - DROP_P), rtol=1e-6, atol=0.0)


def test_cpu_dropout_masks_follow_torchs_seed_and_differ_call_to_call():
    layer, x = Dropout(DROP_P).train(), torch.ones(4, 8, 16, 16)
    torch.manual_seed(3)
    first, second = layer(x), layer(x)
    torch.manual_seed(3)
    assert torch.equal(layer(x), first)
    assert not torch.equal(first, second)


def test_dropout_is_the_identity_in_eval_mode_and_at_zero_and_keeps_the_dtype():
    x = torch.randn(2, 8, 4, 4, dtype=torch.bfloat16)
    assert Dropout(DROP_P).eval()(x) is x
    assert Dropout(0.0).train()(x) is x
    assert Dropout(DROP_P).train()(x).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="dropout"):
        Dropout(1.0)


@pytest.mark.parametrize("loss,var_type", [("simple", "fixed_large"), ("hybrid", "learned_range")])
def test_bf16_autocast_gives_the_fp32_loss_within_bf16_tolerance(loss, var_type):
    config = config_from_dict({"diffusion": {"objective": loss, "var_type": var_type, "timesteps": 1000}})
    diffusion = build_diffusion(config.diffusion)
    learned = var_type == "learned_range"
    model = _randomised(UNet(preset("digits", out_channels=2 if learned else 1)))
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(64, 1, 8, 8, generator=g) * 2 - 1
    t = torch.randint(0, 1000, (64,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    fp32 = diffusion.training_losses(model, x0, t, noise=noise)["loss"].mean()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = diffusion.training_losses(model, x0, t, noise=noise)["loss"].mean()
    assert bf16.dtype == torch.float32  # the loss itself is computed in float32
    torch.testing.assert_close(bf16, fp32, rtol=BF16_RTOL, atol=0.0)
