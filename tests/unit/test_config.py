"""params.yaml -> typed Config: unknown keys, wrong types and bad values are named."""

from pathlib import Path

import pytest
import yaml

from ddpm_repro.config import ConfigError, config_from_dict, config_to_dict, load_config
from ddpm_repro.diffusion import GaussianDiffusion, LossType, ModelVarType

REPO = Path(__file__).resolve().parents[2]


def test_defaults_and_round_trip():
    cfg = config_from_dict({"diffusion": {"objective": "SIMPLE", "var_type": "fixed_large"}})
    assert cfg.diffusion.objective is LossType.SIMPLE and cfg.diffusion.var_type is ModelVarType.FIXED_LARGE
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
            {"diffusion": {"objective": "hybird"}},
            "diffusion.objective: 'hybird' is not one of simple, vlb, hybrid, aux",
        ),
        ({"diffusion": {"schedule": "cosin"}}, "diffusion.schedule: unknown 'cosin'"),
        ({"diffusion": {"timesteps": 10, "schedule": "linear"}}, "T=10 gives a last beta"),
        (
            {"diffusion": {"objective": "hybrid", "var_type": "fixed_small"}},
            "objective HYBRID trains the variance",
        ),
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
    cfg = load_config(path, ["train.steps=20", "diffusion.objective=vlb", "sample.steps=ddim10"])
    assert cfg.train.steps == 20 and cfg.diffusion.objective is LossType.VLB and cfg.sample.steps == "ddim10"
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


def test_named_loss_entries_resolve_their_cell():
    # DDPM Table 2 style: an entry named for its settings sets its objective explicitly.
    data = {
        "losses": {
            "mean-vlb-fixed": {"objective": "vlb", "mean_type": "previous_x", "var_type": "fixed_large"}
        },
        "grid": {"losses": ["simple", "mean-vlb-fixed"]},
    }
    cfg = config_from_dict(data, cell="linear-mean-vlb-fixed")
    assert cfg.cell == "linear-mean-vlb-fixed" and cfg.diffusion.objective is LossType.VLB
    assert (
        cfg.diffusion.mean_type.value == "previous_x" and cfg.diffusion.var_type is ModelVarType.FIXED_LARGE
    )
    assert config_from_dict(data, cell="linear-simple").diffusion.var_type is ModelVarType.FIXED_LARGE
    # a checkpoint's resolved config reads back to the same cell
    assert config_from_dict(config_to_dict(cfg)).cell == "linear-mean-vlb-fixed"


def test_aux_variance_is_a_loss_setting_with_one_default_everywhere():
    cfg = config_from_dict({"losses": {"aux": {"aux_variance": "model"}}}, cell="cosine-aux")
    assert cfg.diffusion.aux_variance.value == "model"
    # the library, the config and every profile's params agree on the default form, and
    # aux samples t like vlb, so the two cells differ only in the objective
    default = config_from_dict({}, cell="cosine-aux").diffusion
    assert default.aux_variance is GaussianDiffusion.__init__.__kwdefaults__["aux_variance"]
    for params in [REPO / "params.yaml", *sorted((REPO / "pipelines").glob("*/params.yaml"))]:
        data = yaml.safe_load(params.read_text())
        if "aux" not in data.get("losses", {}):
            continue
        cfg = config_from_dict(data, cell="cosine-aux")
        assert cfg.diffusion.aux_variance is default.aux_variance, params
        vlb = config_from_dict(data, cell="cosine-vlb").diffusion
        assert cfg.diffusion.timestep_sampler == vlb.timestep_sampler == default.timestep_sampler, params


@pytest.mark.parametrize(
    "data,cell,message",
    [
        (
            {"losses": {"eps-x": {"var_type": "learned"}}},
            None,
            "losses.eps-x: an entry not named after an objective",
        ),
        (
            {"grid": {"losses": ["simple", "hybird"]}},
            None,
            "grid.losses: unknown 'hybird'; valid .*simple, hybrid",
        ),
        ({}, "linear-nope", "cell 'linear-nope': no entry 'nope' under losses"),
        (
            {"diffusion": {"var_type": "learned"}},
            "linear-hybrid",
            "diffusion.var_type and losses.hybrid.var_type are both set",
        ),
        (
            {"losses": {"aux": {"aux_variance": "wide"}}},
            None,
            "losses.aux.aux_variance: 'wide' is not one of",
        ),
        (
            {"conditional": {"cells": {"cosine-hybird": {"loss": "hybird"}}}},
            None,
            "conditional.cells.cosine-hybird.loss: unknown 'hybird'",
        ),
        ({"conditional": {"cells": {"x": {"schedule": "cosin"}}}}, None, "unknown schedule 'cosin'"),
        ({"conditional": {"cells": {"linear-vlb": {}}}}, None, "the name must be <schedule>-<loss>"),
        ({"conditional": {"guidance_scale": -1}}, None, "conditional.guidance_scale must be >= 0"),
        ({"evaluate": {"curve": {"plms": [10]}}}, None, "evaluate.curve: unknown method 'plms'"),
        (
            {"losses": {"hybrid": {"hybrid_lambda": -0.1}}},
            "linear-hybrid",
            "losses.hybrid.hybrid_lambda must be >= 0",
        ),
        ({"losses": {"aux": {"aux_lambda": -1}}}, "cosine-aux", "losses.aux.aux_lambda must be >= 0"),
        ({"evaluate": {"curve": {"ddim": [0]}}}, None, r"evaluate.curve.ddim: \[0\] must be positive"),
        ({"evaluate": {"curve": {"ancestral": [2000]}}}, None, "2000 steps is more than T=1000"),
        ({"evaluate": {"curve_losses": ["hybird"]}}, None, "evaluate.curve_losses: unknown 'hybird'"),
        ({"evaluate": {"curve_schedules": ["cosin"]}}, None, "evaluate.curve_schedules: unknown 'cosin'"),
        ({"evaluate": {"nll_strata": -1}}, None, "evaluate.nll_strata must be >= 0"),
        ({"evaluate": {"kid_subsets": 1}}, None, "evaluate.kid_subsets must be >= 2"),
    ],
)
def test_bad_grid_settings_name_the_key(data, cell, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data, cell=cell)


@pytest.mark.parametrize(
    "curve_losses,cell,expected",
    [
        ([], "linear-vlb", True),
        (["simple", "hybrid"], "cosine-hybrid", True),
        (["simple"], "cosine-aux", False),
    ],
)
def test_the_step_curve_is_drawn_for_the_listed_objectives_only(curve_losses, cell, expected):
    data = {"evaluate": {"curve": {"ancestral": [10, 1000]}, "curve_losses": curve_losses}}
    assert config_from_dict(data, cell=cell).has_step_curve is expected
    assert not config_from_dict({"evaluate": {"curve": {}}}, cell=cell).has_step_curve


@pytest.mark.parametrize("cell,expected", [("cosine-hybrid", True), ("linear-hybrid", False)])
def test_the_step_curve_is_drawn_for_the_listed_schedules_only(cell, expected):
    data = {"evaluate": {"curve": {"ancestral": [10, 1000]}, "curve_schedules": ["cosine"]}}
    assert config_from_dict(data, cell=cell).has_step_curve is expected


def test_replicate_seeds_add_every_cell_again_trained_with_that_seed():
    grid = {"schedules": ["cosine"], "losses": ["simple", "hybrid"], "replicate_seeds": [1, 2]}
    data = {"grid": grid, "train": {"seed": 0}}
    cfg = config_from_dict(data)
    assert cfg.grid.cells == [
        "cosine-simple", "cosine-hybrid", "cosine-simple-s1", "cosine-hybrid-s1", "cosine-simple-s2",
        "cosine-hybrid-s2",
    ]  # fmt: skip
    replicate = config_from_dict(data, cell="cosine-hybrid-s2")
    assert replicate.train.seed == 2 and replicate.cell == "cosine-hybrid-s2"
    primary = config_from_dict(data, cell="cosine-hybrid")
    assert primary.train.seed == 0 and primary.cell == "cosine-hybrid"


@pytest.mark.parametrize(
    "seeds,message",
    [
        ([0, 1], r"grid.replicate_seeds: 0 is train.seed, which the unsuffixed cells already train"),
        ([1, 1], r"grid.replicate_seeds: a seed is listed twice"),
        ([-1], r"grid.replicate_seeds: seeds must be >= 0"),
    ],
)
def test_bad_replicate_seeds_are_named(seeds, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"grid": {"replicate_seeds": seeds}})


def test_the_claims_profile_is_the_default_with_three_seeds_and_longer_training():
    root = Path(__file__).resolve().parents[2]
    default = config_to_dict(load_config(root / "params.yaml"))
    claims = config_to_dict(load_config(root / "pipelines" / "digits-claims" / "params.yaml"))
    assert claims["grid"]["replicate_seeds"] == [1, 2] and claims["train"]["steps"] == 2000
    for section in ("grid", "train"):
        for key in ("replicate_seeds", "steps"):
            claims[section].pop(key, None), default[section].pop(key, None)
    assert {**claims, "profile": "default"} == default
    assert len(load_config(root / "pipelines" / "digits-claims" / "params.yaml").grid.cells) == 24
