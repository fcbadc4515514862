"""Stages that start their own worker processes (train.nproc), sharded and resumable
sample / nll / evaluate, checkpoints that are moved aside and never deleted, and the status
lines of a long run."""

import json
import os
import random
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from subprocess import DEVNULL

import numpy as np
import pytest

from ddpm_repro import cli
from ddpm_repro.regression import compare, format_table, load_pins, read_metrics

from .conftest import REPO, VENV_BIN, copy_repo, pipeline_env, run, stages_run

SMOKE = REPO / "pipelines" / "smoke" / "params.yaml"
# The 2-worker run trains vlb on both schedules (the importance sampler's history is
# all-gathered between the processes) and the class-conditional cosine-hybrid cell (labels,
# guidance, a learned variance): every stage, in fewer cells, to keep CI short.
CELLS = [f"{s}-vlb" for s in ("linear", "cosine")]
WORKER_STAGES = ("train", "sample", "nll", "evaluate")
UNTRACKED = pipeline_env(DDPM_REPRO_TRACKING="0")


@pytest.fixture(scope="module")
def two_worker_repo(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The smoke pipeline with train.nproc: 2 and grid.losses [vlb], run by plain `dvc repro`."""
    repo = copy_repo(tmp_path_factory.mktemp("nproc2") / "repo")
    params = (repo / "params.yaml").read_text()
    assert "  nproc: auto" in params and "  - simple\n  - hybrid\n  - vlb\n  - aux\n" in params
    params = params.replace("  nproc: auto", "  nproc: 2")
    (repo / "params.yaml").write_text(
        params.replace("  - simple\n  - hybrid\n  - vlb\n  - aux\n", "  - vlb\n")
    )
    result = run(["dvc", "repro"], repo, DDPM_REPRO_TRACKING="0", DDPM_REPRO_LOG_INTERVAL="0")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return repo, result


def test_every_stage_starts_its_own_two_workers(two_worker_repo):
    _, result = two_worker_repo
    stages = [s for s in stages_run(result.stdout) if s.split("@")[0].removesuffix("-cond") in WORKER_STAGES]
    assert len(stages) == 4 * (len(CELLS) + 1)  # the grid and the class-conditional cell
    assert result.stderr.count("starting 2 worker processes") == len(stages)


def test_two_workers_give_the_same_samples_and_metrics_as_one(two_worker_repo, smoke_repo):
    repo, _ = two_worker_repo
    for cell in [*CELLS, "cosine-hybrid-cond"]:
        one, two = (np.load(r / "samples" / f"{cell}.npz") for r in (smoke_repo, repo))
        assert np.array_equal(one["images"], two["images"]), cell  # uint8, bit for bit
        assert np.array_equal(one["labels"], two["labels"]), cell
    # NLL, FD and the probe loss within the CI regression's tolerances of the pins
    pins = load_pins(REPO / "pipelines" / "smoke" / "pins.json")
    pins["cells"] = {cell: pins["cells"][cell] for cell in CELLS}
    checks = compare(pins, read_metrics(repo / "reports" / "cells", CELLS))
    assert len(checks) == 3 * len(CELLS) and all(c.ok for c in checks), format_table(checks)
    for cell in CELLS:  # the training metrics are the global batch's, not rank 0's half
        one, two = (
            json.loads((r / "reports" / "cells" / cell / "train.json").read_text())
            for r in (smoke_repo, repo)
        )
        assert two["final_loss"] == pytest.approx(one["final_loss"], rel=1e-3), cell


# ------------------------------------------------------------ SIGKILL and resume
def _command(kind: str, smoke_repo: Path, out: Path, nproc: int) -> list[str]:
    """A sample, nll or evaluate run of the smoke run's linear-hybrid cell, with enough
    chunks (12 to 24) that a kill lands in the middle of the work."""
    base = [str(VENV_BIN / "ddpm-repro"), kind, "--params", str(SMOKE), "--no-progress",
            "--checkpoint", str(smoke_repo / "checkpoints" / "linear-hybrid"),
            "--set", f"train.nproc={nproc}", "--out", str(out)]  # fmt: skip
    if kind == "sample":
        return [
            *base,
            "--set",
            "sample.num_samples=48",
            "--set",
            "sample.batch_size=4",
            "--set",
            "sample.steps=",
        ]
    if kind == "nll":
        test = smoke_repo / "data" / "prepared" / "test.npz"
        return [
            *base,
            "--data",
            str(test),
            "--set",
            "evaluate.nll_images=48",
            "--set",
            "evaluate.nll_chunk=4",
        ]
    samples = ["--samples", str(smoke_repo / "samples" / "linear-hybrid.npz")]
    return [*base, *samples, "--reference", str(smoke_repo / "reference"),
            "--set", "evaluate.curve_samples=32", "--set", "sample.batch_size=4"]  # fmt: skip


def _finish(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=UNTRACKED, capture_output=True, text=True, timeout=600)


def _chunks(out: Path) -> int:
    partial = out.parent / f".{out.name}.partial"
    return sum(1 for _ in partial.rglob("chunk_*.npz")) if partial.is_dir() else 0


def _killed_after(cmd: list[str], out: Path, chunks: int) -> None:
    """Start `cmd` and SIGKILL it, workers included, once `chunks` chunks are saved."""
    proc = subprocess.Popen(
        cmd, cwd=out.parent, env=UNTRACKED, stdout=DEVNULL, stderr=DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 300
    try:
        while _chunks(out) < chunks and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not out.exists() and _chunks(out) >= chunks


@pytest.mark.parametrize(("kind", "nproc"), [("sample", 2), ("nll", 1), ("evaluate", 2)])
def test_a_sigkill_resumes_to_the_same_output(kind, nproc, smoke_repo, tmp_path):
    expected = tmp_path / "whole" / "out"
    expected.parent.mkdir()
    done = _finish(_command(kind, smoke_repo, expected, 1))
    assert done.returncode == 0, done.stderr[-2000:]
    total = {"sample": 12, "nll": 12, "evaluate": 24}[kind]
    rng = random.Random(f"{kind}-{nproc}")  # two moments per command, the same in every run
    out = tmp_path / "killed" / "out"
    out.parent.mkdir()
    for moment in sorted(rng.sample(range(1, total - 2), 2)):
        _killed_after(_command(kind, smoke_repo, out, nproc), out, moment)
    resumed = _finish(_command(kind, smoke_repo, out, nproc))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _chunks(out) == 0  # the partial folder goes once the output is written
    if kind == "sample":
        a, b = np.load(expected), np.load(out)
        assert np.array_equal(a["images"], b["images"]) and np.array_equal(a["labels"], b["labels"])
    else:
        a, b = json.loads(expected.read_text()), json.loads(out.read_text())
        timing = {"nll_seconds", "eval_seconds"}
        assert {k: v for k, v in a.items() if k not in timing} == {
            k: v for k, v in b.items() if k not in timing
        }


def test_a_partial_job_with_other_settings_is_discarded_not_mixed_in(smoke_repo, tmp_path):
    out, fresh = tmp_path / "out.npz", tmp_path / "fresh.npz"
    _killed_after(_command("sample", smoke_repo, out, 1), out, 3)  # seed 0's chunks left behind
    for target in (out, fresh):
        cmd = [*_command("sample", smoke_repo, target, 1), "--set", "sample.seed=1"]
        assert _finish(cmd).returncode == 0
    assert np.array_equal(np.load(out)["images"], np.load(fresh)["images"])


# ------------------------------------------------------ checkpoints never deleted
def _train(tmp_path, *extra: str) -> int:
    data, ckpt = str(tmp_path / "train.npz"), str(tmp_path / "ckpt")
    args = ["train", "--params", str(SMOKE), "--cell", "linear-simple", "--no-progress"]
    return cli.main([*args, "--data", data, "--checkpoint-dir", ckpt, *extra])


def test_a_hand_run_with_another_microbatch_is_adopted_and_a_changed_seed_moves_it_aside(
    tmp_path, digits_npz, capsys, monkeypatch
):
    monkeypatch.setenv("DDPM_REPRO_TRACKING", "0")
    (tmp_path / "train.npz").symlink_to(digits_npz)
    # by hand, as pipelines/README.md suggests for memory: a smaller microbatch
    assert _train(tmp_path, "--set", "train.microbatch=8") == 0
    hand = {p.name: p.read_bytes() for p in (tmp_path / "ckpt").glob("ckpt_*.pt")}
    capsys.readouterr()
    # the train stage's own command (microbatch 0) adopts it: nothing retrained, nothing moved
    assert _train(tmp_path, "--restart-on-change") == 0
    assert "resuming linear-simple from step 30" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in (tmp_path / "ckpt").glob("ckpt_*.pt")} == hand
    assert not list(tmp_path.glob("ckpt.replaced-*"))
    # a seed is another run: the hand run is moved aside whole, and the message says where and why
    assert _train(tmp_path, "--restart-on-change", "--set", "train.seed=1") == 0
    err = capsys.readouterr().err
    aside = tmp_path / "ckpt.replaced-1"
    assert f"moved them to '{aside}'" in err and "train.seed" in err
    assert {p.name: p.read_bytes() for p in aside.glob("ckpt_*.pt")} == hand
    assert (aside / "metrics.csv").is_file() and (tmp_path / "ckpt" / "ckpt_00000030.pt").is_file()


# ------------------------------------------------------------- a visible long run
def test_without_a_terminal_the_trainer_prints_status_lines(tmp_path, digits_npz, capsys, monkeypatch):
    monkeypatch.setenv("DDPM_REPRO_TRACKING", "0")
    monkeypatch.setenv("DDPM_REPRO_LOG_INTERVAL", "0")  # a line per step; the default is 60 s
    (tmp_path / "train.npz").symlink_to(digits_npz)
    assert _train(tmp_path) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("train linear-simple:")]
    assert len(lines) == 30
    assert lines[9].startswith("train linear-simple: step 10/30 (33%), loss ")
    assert "images/s" in lines[9] and "step/s" in lines[9] and "ETA" in lines[9]
    assert "took" in lines[-1]


def test_a_cell_run_gets_system_metrics(tmp_path, digits_npz):
    store = tmp_path / "mlflow.db"
    args = ["ddpm-repro", "train", "--params", str(SMOKE), "--cell", "linear-simple", "--no-progress"]
    args += [
        "--set",
        "train.steps=200",
        "--data",
        str(digits_npz),
        "--checkpoint-dir",
        str(tmp_path / "ckpt"),
    ]
    result = run(
        args,
        tmp_path,
        MLFLOW_TRACKING_URI=f"sqlite:///{store}",
        MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL="0.5",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    with sqlite3.connect(store) as db:
        keys = {k for (k,) in db.execute("select distinct key from metrics")}
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= keys, sorted(keys)
