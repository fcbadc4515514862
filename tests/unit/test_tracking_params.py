"""Each cell's MLflow run logs the settings that cell used, and no other cell's."""

from pathlib import Path

import pytest

from ddpm_repro.config import config_from_dict, read_params
from ddpm_repro.tracking import applied_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "cell,present,absent",
    [
        ("cosine-simple", [], ["diffusion.hybrid_lambda", "diffusion.aux_lambda", "diffusion.aux_variance"]),
        ("linear-hybrid", ["diffusion.hybrid_lambda"], ["diffusion.aux_lambda", "diffusion.aux_variance"]),
        ("cosine-aux", ["diffusion.aux_lambda", "diffusion.aux_variance"], ["diffusion.hybrid_lambda"]),
    ],
)
def test_a_cell_logs_its_own_objectives_settings_only(cell, present, absent):
    params = applied_settings(config_from_dict(read_params(ROOT / "params.yaml"), cell=cell))
    assert (
        params["diffusion.schedule"] == cell.split("-")[0]
        and params["diffusion.objective"] == cell.split("-")[1]
    )
    assert params["train.lr"] == "0.001" and params["diffusion.timestep_sampler"]
    assert all(k in params for k in present) and not any(k in params for k in absent)
    assert not [k for k in params if k.startswith(("losses.", "grid.", "conditional."))]


def test_a_replicate_logs_its_training_seed_and_a_primary_cell_no_cell_seed():
    data = read_params(ROOT / "params.yaml")
    data["grid"]["replicate_seeds"] = [3]
    replicate = applied_settings(config_from_dict(data, cell="cosine-hybrid-s3"))
    primary = applied_settings(config_from_dict(data, cell="cosine-hybrid"))
    assert replicate["train.seed"] == "3" and replicate["diffusion.cell_seed"] == "3"
    assert primary["train.seed"] == "0" and "diffusion.cell_seed" not in primary
