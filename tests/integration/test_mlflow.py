"""Tracking against a real MLflow server, and a stage that survives an unreachable one."""

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from ..conftest import free_port
from .conftest import REPO, VENV_BIN, pipeline_env, run

TINY_CELL = [
    "--params",
    "pipelines/smoke/params.yaml",
    "--cell",
    "cosine-hybrid",
    "--set",
    "train.steps=4",
    "--no-progress",
]


@contextlib.contextmanager
def running_mlflow_server(tmp_path):
    """A real `mlflow server` on 127.0.0.1 with one worker, in its own process group;
    yields (url, process)."""
    port = free_port()
    proc = subprocess.Popen(
        [
            str(VENV_BIN / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--default-artifact-root",
            (tmp_path / "artifacts").as_uri(),
        ],
        env=pipeline_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, "mlflow server exited"
            assert time.monotonic() < deadline, "mlflow server did not start in 120 s"
            time.sleep(0.5)
        yield url, proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture
def mlflow_server(tmp_path):
    with running_mlflow_server(tmp_path) as (url, _):
        yield url


def train_tiny_cell(tmp_path, digits_npz, tracking_uri: str):
    """`ddpm-repro train` of a 4-step smoke cell, logging to `tracking_uri`."""
    out = [
        "--data", str(digits_npz), "--checkpoint-dir", str(tmp_path / "ckpt"),
        "--metrics", str(tmp_path / "train.json"), "--loss-curve", str(tmp_path / "loss.csv"),
    ]  # fmt: skip
    return run(["ddpm-repro", "train", *TINY_CELL, *out], REPO, MLFLOW_TRACKING_URI=tracking_uri, timeout=300)


def test_a_cell_logs_to_a_real_server(mlflow_server, tmp_path, digits_npz):
    result = train_tiny_cell(tmp_path, digits_npz, mlflow_server)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "MLflow unavailable" not in result.stderr

    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("ddpm-repro/smoke")
    (found,) = client.search_runs([exp.experiment_id], "tags.cell = 'cosine-hybrid'")
    assert found.data.tags["loss"] == "hybrid" and found.data.params["train.steps"] == "4"
    assert "train/loss" in found.data.metrics and "final/final_loss" in found.data.metrics
    history = client.get_metric_history(found.info.run_id, "train/loss")
    assert [m.step for m in history] == [4]
    assert [a.path for a in client.list_artifacts(found.info.run_id)] == ["checkpoint", "loss.csv"]
    # the logged checkpoint is whole and samples with the README's one-liner
    (logged,) = client.list_artifacts(found.info.run_id, "checkpoint")
    assert logged.path == "checkpoint/ckpt_00000004.pt"
    local = client.download_artifacts(found.info.run_id, logged.path, str(tmp_path / "downloaded"))
    assert Path(local).read_bytes() == (tmp_path / "ckpt" / "ckpt_00000004.pt").read_bytes()
    sampled = run(
        ["ddpm-repro", "sample", "--checkpoint", local, "--out", str(tmp_path / "s.npz"), "--no-progress",
         "--set", "sample.num_samples=2", "--set", "sample.steps=5"],
        REPO, MLFLOW_TRACKING_URI=mlflow_server,
    )  # fmt: skip
    assert sampled.returncode == 0, sampled.stderr[-2000:]
    assert np.load(tmp_path / "s.npz")["images"].shape == (2, 8, 8, 1)


def test_an_unreachable_server_costs_one_warning_and_nothing_else(tmp_path, digits_npz):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = train_tiny_cell(tmp_path, digits_npz, dead)
    assert result.returncode == 0, result.stderr[-2000:]
    warnings = [line for line in result.stderr.splitlines() if "MLflow unavailable" in line]
    assert len(warnings) == 1, result.stderr
    assert json.loads((tmp_path / "train.json").read_text())["steps"] == 4
    assert (tmp_path / "ckpt" / "ckpt_00000004.pt").is_file()


def test_a_server_that_dies_mid_run_costs_one_warning_and_the_outputs_are_whole(tmp_path, digits_npz):
    with running_mlflow_server(tmp_path) as (url, server):
        out = [
            "--data", str(digits_npz), "--checkpoint-dir", str(tmp_path / "ckpt"),
            "--metrics", str(tmp_path / "train.json"), "--loss-curve", str(tmp_path / "loss.csv"),
        ]  # fmt: skip
        cmd = ["ddpm-repro", "train", *TINY_CELL[:-3], "--set", "train.steps=200", "--no-progress", *out]
        train = subprocess.Popen(
            cmd, cwd=REPO, env=pipeline_env(MLFLOW_TRACKING_URI=url), stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 300
        while not (tmp_path / "ckpt" / "ckpt_00000010.pt").is_file():  # step 10 was logged before it
            assert train.poll() is None and time.monotonic() < deadline, "training ended before step 10"
            time.sleep(0.1)
        os.killpg(server.pid, signal.SIGKILL)  # the server dies mid-run, without a goodbye
        server.wait()
        _, stderr = train.communicate(timeout=300)
    assert train.returncode == 0, stderr[-2000:]
    assert len([line for line in stderr.splitlines() if "MLflow unavailable" in line]) == 1, stderr
    assert json.loads((tmp_path / "train.json").read_text())["steps"] == 200
    assert [int(r.split(",")[0]) for r in (tmp_path / "loss.csv").read_text().splitlines()[1:]] == list(
        range(10, 201, 10)
    )
    assert (tmp_path / "ckpt" / "ckpt_00000200.pt").is_file()
