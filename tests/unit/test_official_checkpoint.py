"""Importing the Improved DDPM authors' checkpoints (openai/improved-diffusion).

The released files cannot be downloaded here, so each test builds a state dict with the
original names and shapes from the original architecture's rules, written out below
independently of models/official.py, fills it with random values, and checks the import
against a functional forward pass that follows the original's conventions: GroupNorm
with 32 groups in float32, SiLU, [cos, sin] timestep embedding of t * 1000 / T under
rescale_timesteps, scale-shift norm, qkv split into heads before q/k/v, nearest-neighbour
upsampling then a conv, stride-2 conv downsampling, skips concatenated on the way up.
"""

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ddpm_repro.cli import main
from ddpm_repro.config import SampleConfig, build_diffusion, config_from_dict
from ddpm_repro.diffusion import respaced, space_timesteps
from ddpm_repro.models import UNet, count_parameters, preset
from ddpm_repro.models.official import (
    PUBLISHED,
    OfficialCheckpointError,
    OfficialSettings,
    map_official_state_dict,
    official_unet_config,
    settings_for,
)
from ddpm_repro.sampling import generate
from ddpm_repro.training import load_checkpoint, model_from_checkpoint
from ddpm_repro.training.official_checkpoint import convert_official_checkpoint


# ------------------------------------------------- the original architecture, as rules
@dataclass(frozen=True)
class Original:
    """An original UNetModel in its own terms: attention at downsample rates `attention_ds`
    (its parameters do not depend on the image size)."""

    channels: int = 128  # --num_channels
    num_res_blocks: int = 3
    channel_mult: tuple[int, ...] = (1, 2, 2, 2)  # script_util's choice for 32x32
    attention_ds: tuple[int, ...] = (2, 4)  # --attention_resolutions 16,8 at 32x32
    num_heads: int = 4
    out_channels: int = 6  # --learn_sigma True
    num_classes: int | None = None
    scale_shift: bool = True


def blocks(o: Original) -> dict[str, list[list[tuple]]]:
    """The layers of input_blocks, middle_block (one block) and output_blocks: lists of
    ("conv", c_in, c_out), ("res", c_in, c_out), ("attn", c), ("down", c) or ("up", c)."""
    ds, ch = 1, o.channels
    inputs, skips = [[("conv", 3, ch)]], [ch]
    for level, mult in enumerate(o.channel_mult):
        for _ in range(o.num_res_blocks):
            block = [("res", ch, mult * o.channels)]
            ch = mult * o.channels
            if ds in o.attention_ds:
                block.append(("attn", ch))
            inputs.append(block)
            skips.append(ch)
        if level < len(o.channel_mult) - 1:
            inputs.append([("down", ch)])
            skips.append(ch)
            ds *= 2
    middle = [[("res", ch, ch), ("attn", ch), ("res", ch, ch)]]
    outputs = []
    for level in reversed(range(len(o.channel_mult))):
        for i in range(o.num_res_blocks + 1):
            c_out = o.channel_mult[level] * o.channels
            block = [("res", ch + skips.pop(), c_out)]
            ch = c_out
            if ds in o.attention_ds:
                block.append(("attn", ch))
            if level > 0 and i == o.num_res_blocks:
                block.append(("up", ch))
                ds //= 2
            outputs.append(block)
    return {"input_blocks": inputs, "middle_block": middle, "output_blocks": outputs}


def layer_prefixes(o: Original):
    """(name prefix, layer) of every layer in the three block lists."""
    for group, group_blocks in blocks(o).items():
        for i, block in enumerate(group_blocks):
            for j, layer in enumerate(block):
                yield (f"{group}.{j}" if group == "middle_block" else f"{group}.{i}.{j}"), layer


def original_shapes(o: Original) -> dict[str, tuple[int, ...]]:
    """Every parameter name of the original model and its shape."""
    emb = 4 * o.channels
    shapes = {
        "time_embed.0.weight": (emb, o.channels),
        "time_embed.0.bias": (emb,),
        "time_embed.2.weight": (emb, emb),
        "time_embed.2.bias": (emb,),
    }
    if o.num_classes:
        shapes["label_emb.weight"] = (o.num_classes, emb)

    def conv(name, c_in, c_out, k):
        shapes[f"{name}.weight"] = (c_out, c_in, *k)
        shapes[f"{name}.bias"] = (c_out,)

    def norm(name, c):
        shapes[f"{name}.weight"] = shapes[f"{name}.bias"] = (c,)

    for p, layer in layer_prefixes(o):
        kind = layer[0]
        if kind == "conv":
            conv(p, layer[1], layer[2], (3, 3))
        elif kind == "res":
            c_in, c_out = layer[1:]
            norm(f"{p}.in_layers.0", c_in)
            conv(f"{p}.in_layers.2", c_in, c_out, (3, 3))
            shapes[f"{p}.emb_layers.1.weight"] = ((2 if o.scale_shift else 1) * c_out, emb)
            shapes[f"{p}.emb_layers.1.bias"] = ((2 if o.scale_shift else 1) * c_out,)
            norm(f"{p}.out_layers.0", c_out)
            conv(f"{p}.out_layers.3", c_out, c_out, (3, 3))
            if c_in != c_out:
                conv(f"{p}.skip_connection", c_in, c_out, (1, 1))
        elif kind == "attn":
            norm(f"{p}.norm", layer[1])
            conv(f"{p}.qkv", layer[1], 3 * layer[1], (1,))
            conv(f"{p}.proj_out", layer[1], layer[1], (1,))
        else:
            conv(f"{p}.{'op' if kind == 'down' else 'conv'}", layer[1], layer[1], (3, 3))
    norm("out.0", o.channels)
    conv("out.2", o.channels, o.out_channels, (3, 3))
    return shapes


def random_state(o: Original, seed: int = 0, device: str = "cpu") -> dict[str, torch.Tensor]:
    """Random values of a sensible size for every original parameter: no layer is zero,
    so each one (the zero-initialised ones included) shows in the output."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in original_shapes(o).items():
        if device == "meta":
            state[name] = torch.empty(shape, device="meta")
        elif len(shape) == 1:  # GroupNorm gains around 1, biases around 0
            state[name] = float(name.endswith(".weight")) + 0.1 * torch.randn(shape, generator=g)
        else:  # conv and linear weights scaled by 1/sqrt(fan-in); label embeddings unit
            fan_in = 1 if name == "label_emb.weight" else math.prod(shape[1:])
            state[name] = torch.randn(shape, generator=g) / math.sqrt(fan_in)
    return state


# ------------------------------------------- the original forward pass, functionally
def original_forward(state, o: Original, x, t, y=None, rescale_over: int | None = None):
    """The original model's output for original-named weights. rescale_over=T feeds the
    network t * 1000 / T (their rescale_timesteps); None feeds t as it is."""

    def gn(h, p):  # GroupNorm(32) in float32
        return F.group_norm(h.float(), 32, state[f"{p}.weight"], state[f"{p}.bias"]).type(h.dtype)

    def silu(h):
        return h * torch.sigmoid(h)

    def conv(h, p, **kw):
        return F.conv2d(h, state[f"{p}.weight"], state[f"{p}.bias"], **kw)

    t = t.float() * (1000.0 / rescale_over) if rescale_over else t
    half = o.channels // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)
    emb = F.linear(emb, state["time_embed.0.weight"], state["time_embed.0.bias"])
    emb = F.linear(silu(emb), state["time_embed.2.weight"], state["time_embed.2.bias"])
    if y is not None:
        emb = emb + state["label_emb.weight"][y]

    def res(h, p, c_in, c_out):
        a = conv(silu(gn(h, f"{p}.in_layers.0")), f"{p}.in_layers.2", padding=1)
        e = F.linear(silu(emb), state[f"{p}.emb_layers.1.weight"], state[f"{p}.emb_layers.1.bias"])
        e = e[:, :, None, None]
        if o.scale_shift:
            a = gn(a, f"{p}.out_layers.0") * (1 + e[:, :c_out]) + e[:, c_out:]
        else:
            a = gn(a + e, f"{p}.out_layers.0")
        a = conv(silu(a), f"{p}.out_layers.3", padding=1)
        return (h if c_in == c_out else conv(h, f"{p}.skip_connection")) + a

    def attn(h, p, c):
        n, _, height, width = h.shape
        flat = h.reshape(n, c, height * width)
        qkv = F.conv1d(gn(flat, f"{p}.norm"), state[f"{p}.qkv.weight"], state[f"{p}.qkv.bias"])
        # the 3C channels: head 0's (q, k, v), head 1's (q, k, v), ...
        d = c // o.num_heads
        per_head = qkv.reshape(n, o.num_heads, 3, d, height * width)
        q, k, v = per_head[:, :, 0], per_head[:, :, 1], per_head[:, :, 2]  # [N, heads, d, L]
        weights = torch.softmax(q.transpose(-1, -2) @ k / math.sqrt(d), dim=-1)  # [N, heads, L, L]
        out = (v @ weights.transpose(-1, -2)).reshape(n, c, height * width)
        out = F.conv1d(out, state[f"{p}.proj_out.weight"], state[f"{p}.proj_out.bias"])
        return (flat + out).reshape(h.shape)

    def run(h, p, layer):
        kind = layer[0]
        if kind == "conv":
            return conv(h, p, padding=1)
        if kind == "res":
            return res(h, p, *layer[1:])
        if kind == "attn":
            return attn(h, p, layer[1])
        if kind == "down":
            return conv(h, f"{p}.op", stride=2, padding=1)
        return conv(F.interpolate(h, scale_factor=2, mode="nearest"), f"{p}.conv", padding=1)

    layout = blocks(o)
    h, skips = x, []
    for i, block in enumerate(layout["input_blocks"]):
        for j, layer in enumerate(block):
            h = run(h, f"input_blocks.{i}.{j}", layer)
        skips.append(h)
    for j, layer in enumerate(layout["middle_block"][0]):
        h = run(h, f"middle_block.{j}", layer)
    for i, block in enumerate(layout["output_blocks"]):
        h = torch.cat([h, skips.pop()], dim=1)
        for j, layer in enumerate(block):
            h = run(h, f"output_blocks.{i}.{j}", layer)
    return conv(silu(gn(h, "out.0")), "out.2", padding=1)


# The CIFAR-10 architecture at width 32 (--num_channels 32): every structural feature of
# the released model (3 res blocks, attention at 16 and 8 with 4 heads, scale-shift norm,
# learned sigma) at a size that runs in milliseconds.
SMALL = Original(channels=32)
SMALL_COND = Original(channels=32, num_classes=10)


def small_unet_config(o: Original, timesteps: int = 4000, rescale: bool = True):
    settings = OfficialSettings(
        "iddpm-cifar10", model_channels=o.channels, timesteps=timesteps, rescale_timesteps=rescale
    )
    return official_unet_config(random_state(o, device="meta"), settings)


# --------------------------------------------------------------------- every key maps
def test_every_original_key_of_the_cifar10_model_maps_and_fills_ours():
    o = Original()
    shapes = original_shapes(o)
    # the reference parameter count of the released CIFAR-10 model (tests/unit/test_unet.py)
    assert sum(math.prod(s) for s in shapes.values()) == 52_546_438
    state = random_state(o)
    config = official_unet_config(state, PUBLISHED["cifar10_uncond_50M_500K.pt"])
    assert config.timestep_scale == 0.25 and config.num_classes is None
    mapped = map_official_state_dict(state, config)
    model = UNet(config)
    model.load_state_dict(mapped, strict=True)
    ours = model.state_dict()
    assert set(ours) == set(state)  # the same names on both sides
    for name, value in state.items():
        assert torch.equal(ours[name], value), name


@pytest.mark.parametrize("name", [n for n in PUBLISHED if n.startswith("imagenet64")])
def test_released_imagenet64_files_map(name):
    cond = "cond" in name and "uncond" not in name
    o = Original(
        channels=192 if cond else 128,
        channel_mult=(1, 2, 3, 4),  # script_util's choice for 64x64
        attention_ds=(4, 8),  # 16,8 at 64x64
        num_classes=1000 if cond else None,  # script_util's NUM_CLASSES
    )
    state = random_state(o, device="meta")  # names and shapes only
    config = official_unet_config(state, PUBLISHED[name])
    assert config.timestep_scale == (1.0 if cond else 0.25)
    mapped = map_official_state_dict(state, config)
    assert mapped.keys() == set(state)
    if cond:  # "270M parameters" in their README; ours has the one null-label row more
        total = sum(math.prod(s) for s in original_shapes(o).values())
        assert 265e6 < total < 275e6
        assert mapped["label_emb.weight"].shape == (1001, 768)


# --------------------------------------------------------------- errors name the keys
def test_a_wrong_preset_fails_naming_the_keys():
    state = random_state(Original(), device="meta")
    with pytest.raises(OfficialCheckpointError) as info:
        map_official_state_dict(state, preset("iddpm-imagenet64"), "'c.pt'", "preset 'iddpm-imagenet64'")
    message = str(info.value)
    assert message.startswith("'c.pt' does not fit preset 'iddpm-imagenet64'")
    # 32x32 has attention at input block 5 (16x16); 64x64 does not, and its widths differ
    assert "keys with no counterpart in preset 'iddpm-imagenet64'" in message
    assert "input_blocks.5.1.qkv.weight" in message
    assert (
        "shapes that differ" in message
        and "input_blocks.9.0.in_layers.2.weight (file [256, 256, 3, 3], expected [384, 256, 3, 3]);"
        in message
    )

    with pytest.raises(OfficialCheckpointError) as info:
        map_official_state_dict(state, preset("ddpm-cifar10"))
    message = str(info.value)
    # DDPM's model: 2 res blocks, additive embedding (C, not 2C), 3 output channels
    assert "input_blocks.3.0.in_layers.0.weight" in message  # a third res block has no place
    assert "emb_layers.1.weight (file [256, 512], expected [128, 512])" in message
    assert "out.2.weight (file [6, 128, 3, 3], expected [3, 128, 3, 3])" in message


def test_conditioning_and_unknown_keys_are_named():
    state = random_state(SMALL_COND, device="meta")
    unconditional = small_unet_config(SMALL).replace(num_classes=None)
    with pytest.raises(OfficialCheckpointError, match="class-conditional, set num_classes"):
        map_official_state_dict(state, unconditional)
    state = random_state(SMALL, device="meta")
    with pytest.raises(OfficialCheckpointError, match="unconditional, leave num_classes unset"):
        map_official_state_dict(state, unconditional.replace(num_classes=10))
    state["time_embed.1.weight"] = torch.empty(1, device="meta")
    del state["out.2.bias"]
    with pytest.raises(OfficialCheckpointError) as info:
        map_official_state_dict(state, unconditional)
    assert "1 keys of no known original layer: time_embed.1.weight" in str(info.value)
    assert "1 parameters of this UNet missing from the file: out.2.bias" in str(info.value)


# -------------------------------------------------------------------------- exactness
@pytest.mark.parametrize(
    "original,timesteps,rescale",
    [(SMALL, 4000, True), (SMALL, 1000, True), (SMALL_COND, 4000, False)],
    ids=["T4000-rescaled", "T1000-rescaled", "cond-T4000-raw"],
)
def test_our_unet_computes_what_the_original_does(original, timesteps, rescale):
    torch.manual_seed(0)
    state = random_state(original, seed=1)
    # at 16x16 with attention at 8 and 4: the same layers (attention at downsample rates 2
    # and 4), a quarter of the compute
    config = small_unet_config(original, timesteps, rescale).replace(
        image_size=16, attention_resolutions=(8, 4)
    )
    model = UNet(config).eval()
    model.load_state_dict(map_official_state_dict(state, config))
    x = torch.randn(4, 3, 16, 16)
    t = torch.tensor([0, 1, timesteps // 3, timesteps - 1])
    y = torch.tensor([0, 3, 9, 5]) if original.num_classes else None
    with torch.no_grad():
        ours = model(x, t, y)
        theirs = original_forward(state, original, x, t, y, rescale_over=timesteps if rescale else None)
        assert theirs.abs().mean() > 0.1  # the random weights give a non-trivial output
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=2e-5)
        if rescale and timesteps != 1000:  # the scale is not a no-op: without it, t is wrong
            raw = UNet(config.replace(timestep_scale=1.0)).eval()
            raw.load_state_dict(model.state_dict())
            assert not torch.allclose(raw(x, t, y), theirs, rtol=1e-3, atol=1e-3)


def test_the_null_label_row_is_zero():
    state = random_state(SMALL_COND)
    mapped = map_official_state_dict(state, small_unet_config(SMALL_COND))
    assert torch.equal(mapped["label_emb.weight"][:10], state["label_emb.weight"])
    assert torch.equal(mapped["label_emb.weight"][10], torch.zeros(128))


# ----------------------------------------------------------------- the converted file
def test_a_converted_file_loads_and_samples_with_respacing(tmp_path):
    source = tmp_path / "small.pt"
    torch.save(random_state(SMALL, seed=2), source)
    settings = settings_for(source, preset="iddpm-cifar10", model_channels=32, step=7)
    out = convert_official_checkpoint(source, tmp_path / "conv" / "ckpt_00000007.pt", settings)
    ckpt = load_checkpoint(out)  # our loader: weights_only, format checked
    assert ckpt["step"] == 7 and ckpt["source"]["file"] == "small.pt"
    assert ckpt["unet"]["timestep_scale"] == 0.25 and ckpt["unet"]["model_channels"] == 32
    config = config_from_dict(ckpt["config"])
    d = config.diffusion
    assert (d.schedule, d.timesteps, d.var_type.value, d.objective.value) == (
        "cosine",
        4000,
        "learned_range",
        "hybrid",
    )
    model = model_from_checkpoint(ckpt)
    assert count_parameters(model) == sum(math.prod(s) for s in original_shapes(SMALL).values())

    seen = []
    hook = model.register_forward_pre_hook(lambda _, args: seen.append(args[1].tolist()))
    samples = generate(
        model,
        build_diffusion(d),
        SampleConfig(num_samples=2, steps="4"),
        (3, 32, 32),
        progress=False,
    )
    hook.remove()
    assert samples.images.shape == (2, 32, 32, 3) and samples.images.dtype == np.uint8
    # the model gets the ORIGINAL timesteps of the kept steps (and scales them itself)
    assert [s[0] for s in seen] == sorted(space_timesteps(4000, "4"), reverse=True) == [3999, 2666, 1333, 0]
    assert respaced(build_diffusion(d), "4").timestep_map == (0, 1333, 2666, 3999)


def test_import_official_command(tmp_path, capsys):
    source = tmp_path / "my_cond_model.pt"
    torch.save(random_state(SMALL_COND, seed=3), source)
    out = tmp_path / "ckpt_00000000.pt"
    argv = ["import-official", str(source), "--out", str(out), "--preset", "iddpm-cifar10"]
    argv += ["--model-channels", "32", "--no-rescale-timesteps", "--timesteps", "1000"]
    assert main(argv) == 0
    assert "timestep scale 1" in capsys.readouterr().out
    ckpt = load_checkpoint(out)
    assert ckpt["unet"]["num_classes"] == 10 and ckpt["unet"]["timestep_scale"] == 1.0
    assert ckpt["config"]["model"]["class_cond"] and ckpt["config"]["diffusion"]["timesteps"] == 1000

    samples = tmp_path / "s.npz"
    argv = [
        "sample",
        "--checkpoint",
        str(tmp_path),
        "--out",
        str(samples),
        "--device",
        "cpu",
        "--no-progress",
    ]
    assert main([*argv, "--set", "sample.num_samples=2", "--set", "sample.steps=2"]) == 0
    assert np.load(samples)["labels"].tolist() == [0, 1]

    # a released file's name brings its settings; these weights are too narrow for them
    wrong = tmp_path / "cifar10_uncond_50M_500K.pt"
    torch.save(random_state(SMALL, device="cpu"), wrong)
    assert main(["import-official", str(wrong), "--out", str(tmp_path / "w.pt")]) == 2
    err = capsys.readouterr().err
    assert "does not fit preset 'iddpm-cifar10'" in err and "time_embed.0.weight (file [128, 32]" in err
    assert main(["import-official", str(tmp_path / "unknown.pt"), "--out", str(tmp_path / "u.pt")]) == 2
    assert "not a released checkpoint" in capsys.readouterr().err
