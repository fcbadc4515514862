"""Shared test set-up: no telemetry, no network, deterministic CPU math."""

import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
# Commands run by tests must not write into the developer's mlflow.db; the tests that
# check tracking turn it back on against a store of their own.
os.environ["DDPM_REPRO_TRACKING"] = "0"

import socket  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from ddpm_repro.config import Config, config_from_dict  # noqa: E402
from ddpm_repro.data import ImageArrays, save_arrays  # noqa: E402
from ddpm_repro.data.arrays import split  # noqa: E402
from ddpm_repro.data.digits import load_digits  # noqa: E402
from ddpm_repro.diffusion import (  # noqa: E402
    GaussianDiffusion,
    LossType,
    ModelMeanType,
    ModelVarType,
    get_named_beta_schedule,
)

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def make_diffusion():
    """Factory: make_diffusion(schedule="linear", T=100, mean=..., var=..., loss=...)."""

    def make(
        schedule: str = "linear",
        T: int = 100,
        mean: ModelMeanType = ModelMeanType.EPSILON,
        var: ModelVarType = ModelVarType.FIXED_LARGE,
        loss: LossType = LossType.SIMPLE,
        **kwargs,
    ) -> GaussianDiffusion:
        return GaussianDiffusion(
            betas=get_named_beta_schedule(schedule, T),
            model_mean_type=mean,
            model_var_type=var,
            loss_type=loss,
            **kwargs,
        )

    return make


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tiny_config(**sections) -> Config:
    """A seconds-long training config on the tiny preset; sections override keys."""
    base = {
        "model": {"preset": "tiny", "dropout": 0.1},
        "diffusion": {
            "schedule": "cosine",
            "timesteps": 20,
            "objective": "vlb",
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


@pytest.fixture(scope="session")
def digits_train() -> ImageArrays:
    """The default profile's training split of sklearn's bundled digits (1,438 images)."""
    return split(load_digits(), 0.2, seed=0)[0]


@pytest.fixture(scope="session")
def digits_npz(tmp_path_factory, digits_train):
    """digits_train saved as the pipeline's .npz."""
    path = tmp_path_factory.mktemp("data") / "train.npz"
    save_arrays(path, digits_train)
    return path
