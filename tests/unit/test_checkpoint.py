"""The checkpoint format: its one writer checks the payload, its reader upgrades format 1."""

import pytest

from ddpm_repro.config import LossType, config_from_dict, config_to_dict
from ddpm_repro.training.checkpoint import (
    FORMAT_VERSION,
    REQUIRED_KEYS,
    CheckpointError,
    load_checkpoint,
    write_checkpoint,
)


def payload(**config) -> dict:
    return {**dict.fromkeys(REQUIRED_KEYS, {}), "format": FORMAT_VERSION, "step": 3, "config": config}


def test_the_writer_refuses_a_payload_without_a_required_key(tmp_path):
    incomplete = payload()
    del incomplete["ema"]
    with pytest.raises(ValueError, match=r"lacks \['ema'\]"):
        write_checkpoint(tmp_path / "ckpt.pt", incomplete)
    assert not (tmp_path / "ckpt.pt").exists()


def test_a_format_1_checkpoint_loads_with_its_diffusion_keys_renamed(tmp_path):
    old = payload(diffusion={"loss": "vlb", "variant": "mean-vlb-learned", "schedule": "linear"})
    old["format"] = 1
    write_checkpoint(tmp_path / "old.pt", old)
    loaded = load_checkpoint(tmp_path / "old.pt")
    assert loaded["format"] == FORMAT_VERSION
    d = config_from_dict(loaded["config"]).diffusion
    assert d.objective is LossType.VLB and d.loss_entry == "mean-vlb-learned" and d.schedule == "linear"
    assert config_to_dict(d)["objective"] == "vlb"


def test_an_unknown_format_is_refused_naming_the_file(tmp_path):
    future = payload()
    future["format"] = FORMAT_VERSION + 1
    write_checkpoint(tmp_path / "future.pt", future)
    with pytest.raises(CheckpointError, match=f"future.pt' has format {FORMAT_VERSION + 1}"):
        load_checkpoint(tmp_path / "future.pt")
