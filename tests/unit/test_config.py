"""params.yaml -> typed Config: unknown keys, wrong types and bad values are named."""

import pytest

from ddpm_repro.config import ConfigError, config_from_dict, config_to_dict, load_config
from ddpm_repro.diffusion import LossType, ModelVarType


def test_defaults_and_round_trip():
    cfg = config_from_dict({"diffusion": {"loss": "SIMPLE", "var_type": "fixed_large"}})
    assert cfg.diffusion.loss is LossType.SIMPLE and cfg.diffusion.var_type is ModelVarType.FIXED_LARGE
    assert config_from_dict(config_to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    "data,message",
    [
        ({"train": {"lr_rate": 1}}, "unknown key 'train.lr_rate'; valid keys under 'train': steps"),
        ({"trian": {}}, "unknown key 'trian'; valid keys at the top level"),
        ({"train": {"steps": 1.5}}, "train.steps must be an integer"),
        ({"train": {"steps": 0}}, "train.steps must be positive"),
        ({"train": {"bf16": "yes"}}, "train.bf16 must be true or false"),
        (
            {"diffusion": {"loss": "hybird"}},
            "diffusion.loss: 'hybird' is not one of simple, vlb, hybrid, aux",
        ),
        ({"diffusion": {"schedule": "cosin"}}, "diffusion.schedule: unknown 'cosin'"),
        ({"diffusion": {"timesteps": 10, "schedule": "linear"}}, "T=10 gives a last beta"),
        ({"diffusion": {"loss": "vlb", "var_type": "fixed_small"}}, "loss VLB trains the variance"),
        ({"model": {"preset": "huge"}}, "model.preset: unknown preset 'huge'"),
        ({"model": {"channel_mult": 2}}, "model.channel_mult must be a list"),
        ({"sample": {"steps": "ddimfast"}}, "sample.steps: bad respacing spec"),
        ({"sample": {"method": "dpm"}}, "sample.method: 'dpm' is not one of ancestral, ddim"),
        ({"train": 5}, "train must be a mapping"),
    ],
)
def test_bad_params_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data)


def test_load_config_with_overrides(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  steps: 10\ndiffusion:\n  schedule: linear\n")
    cfg = load_config(path, ["train.steps=20", "diffusion.loss=vlb", "sample.steps=ddim10"])
    assert cfg.train.steps == 20 and cfg.diffusion.loss is LossType.VLB and cfg.sample.steps == "ddim10"
    with pytest.raises(ConfigError, match=r"params.yaml: unknown key 'train\.stepz'"):
        load_config(path, ["train.stepz=3"])
    with pytest.raises(ConfigError, match="not of the form section.key=value"):
        load_config(path, ["train.steps"])


def test_missing_and_malformed_params_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="params file '.*nope.yaml' not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml' is not valid YAML"):
        load_config(bad)
