"""The README's 'model and sampler from Python' example runs, on a checkpoint of our own;
Pretrained names bad settings."""

import re
from pathlib import Path

import pytest

from ddpm_repro.config import ConfigError
from ddpm_repro.sampling import Pretrained
from ddpm_repro.training import Trainer

from ..conftest import tiny_config

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_model_example_runs(tmp_path, digits_train):
    config = tiny_config(train={"steps": 2}, diffusion={"timesteps": 100})  # the example asks 50 steps
    result = Trainer(config, digits_train, tmp_path, progress=False).run()
    block = re.search(
        r"### The model and sampler from Python\n\n```python\n(.*?)```", README.read_text(), re.S
    )
    assert block, "README lacks the Python example"
    folder = str(result.checkpoint.parent)
    code = block.group(1).replace('"checkpoints/cosine-hybrid"', repr(folder))
    assert folder in code, "the example's checkpoint path changed; update this test"
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)  # noqa: S102
    assert namespace["out"].shape == (2, 6, 32, 32)
    assert namespace["samples"].images.shape == (6, 8, 8, 1)


def test_pretrained_names_a_bad_sample_key_and_refuses_to_ignore_use_ema(tmp_path, digits_train):
    Trainer(tiny_config(train={"steps": 1}), digits_train, tmp_path, progress=False).run()
    model = Pretrained.load(tmp_path)
    with pytest.raises(ConfigError, match="sample.num_sample"):
        model.sample(num_sample=2)
    with pytest.raises(ValueError, match="use_ema is chosen when loading"):
        model.sample(use_ema=False)
    raw = Pretrained.load(tmp_path, use_ema=False)
    assert raw.sample(num_samples=2, steps="5").images.shape == (2, 8, 8, 1)
