"""Fixtures shared by the integration tests: the digits data, once per session."""

import pytest

from ddpm_repro.config import config_from_dict
from ddpm_repro.data import ImageArrays, save_arrays
from ddpm_repro.data.digits import load_digits, split


@pytest.fixture(scope="session")
def digits_train() -> ImageArrays:
    return split(load_digits(), 0.2, seed=0)[0]


@pytest.fixture(scope="session")
def digits_npz(tmp_path_factory, digits_train):
    path = tmp_path_factory.mktemp("data") / "train.npz"
    save_arrays(path, digits_train)
    return path


def tiny_config(**sections):
    """A seconds-long training config on the tiny preset; sections override keys."""
    base = {
        "model": {"preset": "tiny", "dropout": 0.1},
        "diffusion": {
            "schedule": "cosine",
            "timesteps": 20,
            "loss": "vlb",
            "var_type": "learned_range",
            "timestep_sampler": "loss-second-moment",
        },
        "train": {
            "steps": 24,
            "batch_size": 32,
            "microbatch": 16,
            "lr": 1e-3,
            "warmup_steps": 5,
            "ema_rate": 0.99,
            "log_every": 4,
            "checkpoint_every": 6,
            "keep_checkpoints": 3,
            "device": "cpu",
            "seed": 3,
        },
        "sample": {"num_samples": 6, "batch_size": 4, "steps": "10"},
    }
    for name, values in sections.items():
        base[name] = {**base[name], **values}
    return config_from_dict(base)
