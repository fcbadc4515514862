"""`ddpm-repro` commands as a user runs them: clear one-line errors before any work."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from ddpm_repro.data import load_arrays

from .conftest import REPO


def cli(*args, check=False):
    result = subprocess.run([sys.executable, "-m", "ddpm_repro.cli", *args], capture_output=True, text=True)
    if check:
        assert result.returncode == 0, result.stderr
    return result


TINY = [
    "--set",
    "model.preset=tiny",
    "--set",
    "diffusion.timesteps=20",
    "--set",
    "train.steps=4",
    "--set",
    "train.batch_size=8",
    "--set",
    "train.checkpoint_every=2",
    "--set",
    "train.device=cpu",
    "--set",
    "sample.num_samples=4",
    "--set",
    "sample.steps=5",
    "--no-progress",
]


def test_train_then_sample(tmp_path, digits_npz):
    ckpt = tmp_path / "ckpt"
    args = ("train", "--data", str(digits_npz), "--checkpoint-dir", str(ckpt), *TINY)
    out = cli(*args, "--metrics", str(tmp_path / "first.json"), check=True)
    assert "trained cosine-hybrid to step 4" in out.stdout
    # Run again: nothing left to train, and the final metrics are still the run's (from its log).
    cli(*args, "--metrics", str(tmp_path / "again.json"), check=True)
    first, again = (json.loads((tmp_path / f).read_text()) for f in ("first.json", "again.json"))
    assert again["steps"] == 4 and again["final_loss"] == pytest.approx(first["final_loss"], rel=1e-5)
    out = cli(
        "sample",
        "--checkpoint",
        str(ckpt),
        "--out",
        str(tmp_path / "s.npz"),
        "--grid",
        str(tmp_path / "g.png"),
        "--set",
        "sample.num_samples=3",
        "--no-progress",
        check=True,
    )
    samples = load_arrays(tmp_path / "s.npz")
    assert samples.images.shape == (3, 8, 8, 1) and samples.images.dtype == np.uint8
    assert (tmp_path / "g.png").stat().st_size > 0


@pytest.mark.parametrize(
    "args,message",
    [
        (["--set", "train.lr_rate=1"], "unknown key 'train.lr_rate'"),
        (
            ["--set", "diffusion.objective=aux", "--set", "diffusion.var_type=fixed_large"],
            "objective AUX trains the variance",
        ),
        (["--params", "missing.yaml"], "params file 'missing.yaml' not found"),
    ],
)
def test_bad_params_fail_before_any_work(tmp_path, digits_npz, args, message):
    result = cli("train", "--data", str(digits_npz), "--checkpoint-dir", str(tmp_path / "c"), *args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "c").exists()


def test_missing_inputs_are_named(tmp_path):
    result = cli("train", "--data", str(tmp_path / "nope.npz"), "--checkpoint-dir", str(tmp_path / "c"))
    assert result.returncode == 2 and "data file" in result.stderr and "nope.npz' not found" in result.stderr
    result = cli("sample", "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "s.npz"))
    assert result.returncode == 2 and "checkpoint" in result.stderr and "none.pt' not found" in result.stderr
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    result = cli("sample", "--checkpoint", str(bad), "--out", str(tmp_path / "s.npz"))
    assert result.returncode == 2 and "bad.pt' is corrupt or truncated" in result.stderr


def _subcommands() -> dict:
    import argparse

    from ddpm_repro.cli import build_parser

    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices


@pytest.mark.parametrize("command", sorted(_subcommands()))
def test_every_command_has_help_that_explains_each_option(command):
    result = cli(command, "--help", check=True)
    assert result.stdout.startswith(f"usage: ddpm-repro {command}")
    undocumented = [
        a.dest for a in _subcommands()[command]._actions if a.dest != "help" and not (a.help or "").strip()
    ]
    assert not undocumented, f"options of '{command}' without help text: {undocumented}"


def test_the_top_level_help_lists_every_command():
    out = cli("--help", check=True).stdout
    assert all(name in out for name in _subcommands())


def test_version():
    assert cli("--version", check=True).stdout.startswith("ddpm-repro ")


def test_a_dataset_smaller_than_the_batch_is_named(tmp_path):
    from ddpm_repro.data import ImageArrays, save_arrays

    small = tmp_path / "small.npz"
    save_arrays(small, ImageArrays(np.zeros((5, 8, 8, 1), dtype=np.uint8), np.zeros(5, dtype=np.int64)))
    result = cli("train", "--data", str(small), "--checkpoint-dir", str(tmp_path / "c"), *TINY)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "the training split has 5 images, fewer than train.batch_size=8" in result.stderr
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())


def test_preflight_lists_each_missing_piece_on_one_line_with_the_cost(tmp_path, monkeypatch, capsys):
    # The cifar10 profile on this CPU machine: no GPU, no CIFAR-10 archive, no Inception weights,
    # and (as here and in CI) no network; the hosts are asked through preflight.host_reachable.
    from ddpm_repro import cli as ddpm_cli
    from ddpm_repro import preflight

    monkeypatch.setattr(preflight, "host_reachable", lambda host, **_: False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.chdir(tmp_path)  # data.root is data/raw, relative: empty here
    params = str(REPO / "pipelines" / "cifar10" / "params.yaml")
    assert ddpm_cli.main(["preflight", "--params", params, "--tflops", "495", "--gpus", "8"]) == 2
    out, err = capsys.readouterr()
    problems = [
        line for line in err.splitlines() if line.startswith("preflight: ") and "problem(s)" not in line
    ]
    assert len(problems) == 3 - torch.cuda.is_available(), err
    assert sum("CIFAR-10 not found in data/raw" in p for p in problems) == 1
    assert sum("Inception weights are not at" in p and "evaluate.fid is required" in p for p in problems) == 1
    total = [line for line in out.splitlines() if line.startswith("| total |")]
    assert len(total) == 1 and float(total[0].split("|")[-2]) > 0  # GPU-hours on 8 GPUs, computed
    assert "hours on 8 GPU(s)" in out and "not measured" in out


def test_repro_refuses_a_params_file_the_stages_would_not_read(tmp_path, capsys, monkeypatch):
    from ddpm_repro import cli as ddpm_cli

    monkeypatch.chdir(tmp_path)
    assert ddpm_cli.main(["repro", "--params", str(REPO / "pipelines" / "smoke" / "params.yaml")]) == 2
    err = capsys.readouterr().err
    assert "dvc.yaml's stages read ./params.yaml" in err and err.count("\n") == 1


def test_repro_stops_before_any_stage_when_preflight_finds_a_problem(tmp_path, capsys, monkeypatch):
    from ddpm_repro import cli as ddpm_cli

    params = (REPO / "pipelines" / "smoke" / "params.yaml").read_text().replace("device: cpu", "device: cuda")
    (tmp_path / "params.yaml").write_text(params)
    if torch.cuda.is_available():
        pytest.skip("this check needs a machine without CUDA")  # the message under test is CPU-only
    monkeypatch.chdir(tmp_path)
    assert ddpm_cli.main(["repro", "--params", "params.yaml"]) == 2
    err = capsys.readouterr().err
    assert "train.device is 'cuda' but no CUDA device is available" in err and "nothing was run" in err
