"""The trainer: exact resume, checkpoints, microbatching, NaN handling, DDP."""

import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from ddpm_repro.training import (
    CheckpointError,
    NonFiniteLossError,
    Trainer,
    list_checkpoints,
    load_checkpoint,
)
from ddpm_repro.training.checkpoint import load_latest

from ..conftest import free_port, tiny_config


def state(trainer: Trainer) -> dict[str, torch.Tensor]:
    out = {f"model.{k}": v for k, v in trainer.model.state_dict().items()}
    out.update({f"ema.{k}": v for k, v in trainer.ema.state_dict().items()})
    return out


def assert_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def test_interrupted_and_resumed_run_is_bit_identical(tmp_path, digits_train):
    # Dropout on, importance sampling (which warms up mid-run), microbatches: everything
    # that carries state between steps must come back from the checkpoint.
    cfg = tiny_config()
    straight = Trainer(cfg, digits_train, tmp_path / "straight", progress=False)
    straight.run()
    assert straight.sampler.warmed_up()

    half = tiny_config(train={"steps": 6})
    first = Trainer(half, digits_train, tmp_path / "resumed", progress=False)
    first.run()
    assert not first.sampler.warmed_up()
    del first
    resumed = Trainer(cfg, digits_train, tmp_path / "resumed", progress=False)
    assert resumed.step == 6
    resumed.run()
    assert_identical(state(straight), state(resumed))
    torch.testing.assert_close(resumed.sampler.loss_history, straight.sampler.loss_history, rtol=0, atol=0)
    opt_a, opt_b = straight.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert all(torch.equal(opt_a[i]["exp_avg_sq"], opt_b[i]["exp_avg_sq"]) for i in opt_a)


def test_checkpoints_are_complete_loadable_and_pruned(tmp_path, digits_train):
    Trainer(tiny_config(), digits_train, tmp_path, progress=False).run()
    paths = list_checkpoints(tmp_path)
    assert [p.name for p in paths] == ["ckpt_00000012.pt", "ckpt_00000018.pt", "ckpt_00000024.pt"]
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]
    ckpt = load_checkpoint(paths[-1])  # weights_only=True inside
    assert ckpt["step"] == 24 and ckpt["config"]["diffusion"]["objective"] == "vlb" and ckpt["format"] == 2
    assert set(ckpt["sampler"]) == {"loss_history", "loss_counts"} and "torch" in ckpt["rng"]
    assert ckpt["unet"]["out_channels"] == 2 and ckpt["optimizer"]["state"]


def test_microbatching_matches_the_full_batch(tmp_path, digits_train):
    cfg = {"model": {"dropout": 0.0}}
    full = Trainer(
        tiny_config(**cfg, train={"steps": 5, "microbatch": 0}), digits_train, tmp_path / "a", progress=False
    )
    micro = Trainer(
        tiny_config(**cfg, train={"steps": 5, "microbatch": 8}), digits_train, tmp_path / "b", progress=False
    )
    full.run()
    micro.run()
    for k, v in full.model.state_dict().items():
        torch.testing.assert_close(micro.model.state_dict()[k], v, rtol=1e-4, atol=1e-5, msg=k)


def test_a_changed_model_refuses_the_old_checkpoint(tmp_path, digits_train, capsys):
    Trainer(tiny_config(train={"steps": 6}), digits_train, tmp_path, progress=False).run()
    with pytest.raises(ValueError, match=r"different settings \(diffusion.schedule, train.lr\)"):
        Trainer(
            tiny_config(diffusion={"schedule": "sqrt"}, train={"lr": 0.01}),
            digits_train,
            tmp_path,
            progress=False,
        )
    # More steps, another log interval: the same run, resumed.
    assert (
        Trainer(tiny_config(train={"steps": 9, "log_every": 3}), digits_train, tmp_path, progress=False).step
        == 6
    )
    with pytest.raises(ValueError, match=r"train.steps \(the checkpoint is at step 6\)"):
        Trainer(tiny_config(train={"steps": 4}), digits_train, tmp_path, progress=False)
    before = {p.name: p.read_bytes() for p in list_checkpoints(tmp_path)}
    fresh = Trainer(
        tiny_config(diffusion={"schedule": "sqrt"}),
        digits_train,
        tmp_path,
        progress=False,
        restart_on_change=True,
    )
    assert fresh.step == 0 and list_checkpoints(tmp_path) == []
    # nothing deleted: the old run is whole beside the new one, and the message says where
    aside = tmp_path.with_name(f"{tmp_path.name}.replaced-1")
    assert {p.name: p.read_bytes() for p in list_checkpoints(aside)} == before
    err = capsys.readouterr().err
    assert f"moved them to '{aside}'" in err and "diffusion.schedule" in err
    Trainer(tiny_config(diffusion={"schedule": "sqrt"}, train={"seed": 4}), digits_train, tmp_path,
            progress=False, restart_on_change=True).save()  # fmt: skip
    Trainer(tiny_config(), digits_train, tmp_path, progress=False, restart_on_change=True)
    assert tmp_path.with_name(f"{tmp_path.name}.replaced-2").is_dir()  # a second move takes the next name


def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous(tmp_path, digits_train, capsys):
    Trainer(tiny_config(train={"steps": 12}), digits_train, tmp_path, progress=False).run()
    newest = list_checkpoints(tmp_path)[-1]
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated
    with pytest.raises(CheckpointError, match="ckpt_00000012.pt' is corrupt or truncated"):
        load_checkpoint(newest)
    resumed = Trainer(tiny_config(train={"steps": 12}), digits_train, tmp_path, progress=False)
    assert resumed.step == 6
    assert "ckpt_00000012.pt' is corrupt" in capsys.readouterr().err
    for path in list_checkpoints(tmp_path):
        path.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="no usable checkpoint"):
        load_latest(tmp_path)


def test_a_nan_loss_stops_with_the_step_and_keeps_the_checkpoint(tmp_path, digits_train, monkeypatch):
    trainer = Trainer(tiny_config(train={"steps": 12}), digits_train, tmp_path, progress=False)
    real = trainer.diffusion.training_losses

    def poisoned(*args, **kwargs):
        terms = real(*args, **kwargs)
        if trainer.step == 8:  # the ninth step
            terms["loss"] = terms["loss"] * float("nan")
        return terms

    monkeypatch.setattr(trainer.diffusion, "training_losses", poisoned)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with pytest.raises(NonFiniteLossError, match="non-finite loss at step 9"):
        trainer.run()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt_00000006.pt"]
    ckpt = load_checkpoint(list_checkpoints(tmp_path)[-1])
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
    assert trainer.step == 8 and any(
        not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items()
    )


def _ddp_worker(rank: int, port: int, data, out_dir: str, results) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    from ddpm_repro.training.distributed import cleanup_distributed

    try:
        trainer = Trainer(
            tiny_config(model={"dropout": 0.0}, train={"steps": 6}), data, out_dir, progress=False
        )
        trainer.run()
        results[rank] = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    finally:
        cleanup_distributed()


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tmp_path, digits_train):
    # Each example's image, t and noise depend on its index in the global batch only, so the
    # processes split one batch; gradients are averaged by DDP. Tolerance: float32 sums in
    # a different order, amplified a little by six Adam steps.
    manager = mp.Manager()
    results = manager.dict()
    mp.start_processes(
        _ddp_worker,
        args=(free_port(), digits_train, str(tmp_path / "ddp"), results),
        nprocs=2,
        start_method="spawn",
    )
    single = Trainer(
        tiny_config(model={"dropout": 0.0}, train={"steps": 6}),
        digits_train,
        tmp_path / "one",
        progress=False,
    )
    single.run()
    for k, v in single.model.state_dict().items():
        torch.testing.assert_close(results[0][k], v, rtol=1e-4, atol=2e-5, msg=k)
        assert torch.equal(results[0][k], results[1][k]), k
    assert [p.name for p in list_checkpoints(tmp_path / "ddp")][-1] == "ckpt_00000006.pt"


class Recorder:
    def __init__(self) -> None:
        self.starts: list[tuple[int, Path]] = []
        self.metrics: list[tuple[int, dict]] = []
        self.checkpoints: list[int] = []

    def on_start(self, step, checkpoint_dir):
        self.starts.append((step, checkpoint_dir))

    def on_metrics(self, step, metrics):
        self.metrics.append((step, metrics))

    def on_checkpoint(self, step, path):
        assert path.is_file()
        self.checkpoints.append(step)


def test_callbacks_get_the_start_metrics_every_log_every_steps_and_each_checkpoint(tmp_path, digits_train):
    recorder = Recorder()
    Trainer(
        tiny_config(train={"steps": 12}), digits_train, tmp_path, callbacks=(recorder,), progress=False
    ).run()
    assert recorder.starts == [(0, tmp_path)]
    assert [s for s, _ in recorder.metrics] == [4, 8, 12]
    assert {"loss", "mse", "vb", "grad_norm", "lr", "images_per_s"} <= set(recorder.metrics[-1][1])
    assert recorder.checkpoints == [6, 12]
    # resumed to a longer run: on_start names the step it resumes from
    resumed = Recorder()
    Trainer(
        tiny_config(train={"steps": 16}), digits_train, tmp_path, callbacks=(resumed,), progress=False
    ).run()
    assert resumed.starts == [(12, tmp_path)] and resumed.checkpoints == [16]


def test_bf16_autocast_trains_on_cpu(tmp_path, digits_train):
    # The same seed in fp32 and bf16: if train.bf16 were ignored the weights would be
    # bit-identical; bf16 must change them, slightly, and keep fp32 master weights.
    runs = {}
    for bf16 in (False, True):
        trainer = Trainer(
            tiny_config(train={"steps": 3, "bf16": bf16}), digits_train, tmp_path / str(bf16), progress=False
        )
        runs[bf16] = (trainer.run(), [p.detach().clone() for p in trainer.model.parameters()])
    (fp32, w32), (bf16, w16) = runs[False], runs[True]
    assert bf16.step == 3 and all(torch.isfinite(p).all() for p in w16)
    assert all(p.dtype == torch.float32 for p in w16)  # master weights stay fp32
    assert any(not torch.equal(a, b) for a, b in zip(w32, w16, strict=True))  # bf16 really ran
    assert bf16.metrics["loss"] == pytest.approx(fp32.metrics["loss"], rel=0.1)


@pytest.mark.parametrize(
    "point,kill_at,last_whole",
    [("checkpoint-mid-write", 12, 6), ("checkpoint-mid-write", 18, 12), ("train-step", 15, 12)],
)
def test_a_killed_process_resumes_to_the_same_weights(tmp_path, digits_npz, point, kill_at, last_whole):
    # A real process, killed inside the checkpoint write (after the temp file is written,
    # before the rename) or between a step's backward and its update: the rerun resumes from
    # the last whole checkpoint and ends with the weights of an uninterrupted run.
    import subprocess
    import sys

    args = [sys.executable, "-m", "ddpm_repro.cli", "train", "--data", str(digits_npz), "--no-progress",
            "--set", "model.preset=tiny", "--set", "diffusion.timesteps=20", "--set", "train.steps=24",
            "--set", "train.batch_size=8", "--set", "train.checkpoint_every=6", "--set", "train.device=cpu",
            "--set", "model.dropout=0.1"]  # fmt: skip
    env = {**os.environ, "DDPM_REPRO_FAULT": f"{point}@{kill_at}"}
    killed = subprocess.run([*args, "--checkpoint-dir", str(tmp_path / "a")], env=env, capture_output=True)
    assert killed.returncode == 137
    left = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert [n for n in left if n.endswith(".pt")][-1] == f"ckpt_{last_whole:08d}.pt"  # the newest whole one
    # the partial write is left, never renamed; a kill between steps leaves none
    assert any(name.endswith(".tmp") for name in left) == (point == "checkpoint-mid-write")
    resumed = subprocess.run([*args, "--checkpoint-dir", str(tmp_path / "a")], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert not [p for p in (tmp_path / "a").iterdir() if p.suffix == ".tmp"]
    straight = subprocess.run(
        [*args, "--checkpoint-dir", str(tmp_path / "b")], capture_output=True, text=True
    )
    assert straight.returncode == 0, straight.stderr
    a = load_checkpoint(tmp_path / "a" / "ckpt_00000024.pt")
    b = load_checkpoint(tmp_path / "b" / "ckpt_00000024.pt")
    assert_identical({**a["model"], **{f"ema.{k}": v for k, v in a["ema"].items()}},
                     {**b["model"], **{f"ema.{k}": v for k, v in b["ema"].items()}})  # fmt: skip


def test_training_with_torch_compile_matches_eager(tmp_path, digits_train):
    # train.compile compiles the network in place (forward and backward through inductor);
    # two steps end at the eager run's weights up to float rounding, and the checkpoint keys
    # are the eager model's, so either can resume the other.
    def train(compile_: bool, out):
        config = tiny_config(model={"dropout": 0.0}, train={"steps": 2, "compile": compile_})
        trainer = Trainer(config, digits_train, out, progress=False)
        trainer.run()
        return trainer

    eager = train(False, tmp_path / "eager")
    compiled = train(True, tmp_path / "compiled")
    for k, v in eager.model.state_dict().items():
        torch.testing.assert_close(compiled.model.state_dict()[k], v, rtol=1e-4, atol=1e-5, msg=k)
    saved = load_checkpoint(list_checkpoints(tmp_path / "compiled")[-1])
    assert set(saved["model"]) == set(eager.model.state_dict())
