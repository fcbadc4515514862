"""The scaling recipe of docs/scaling.md on CPU: the real `torchrun` launching the real
`ddpm-repro train`, two gloo processes, on one node and as two "machines" that meet through
a c10d rendezvous. Each ends with the weights of one process training the same global batch."""

import os
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest
import torch

from ddpm_repro.training import load_checkpoint

from ..conftest import free_port
from .conftest import REPO, VENV_BIN, pipeline_env

TORCHRUN = str(VENV_BIN / "torchrun")
STEPS = 6
# The smoke profile's cosine-vlb cell: loss-second-moment sampling, whose history is
# all-gathered between the processes; no dropout, so every process's forward pass is the
# single process's. The global batch of 16 is split 8 + 8.
TRAIN = [
    "-m", "ddpm_repro.cli", "train", "--params", str(REPO / "pipelines" / "smoke" / "params.yaml"),
    "--cell", "cosine-vlb", "--set", f"train.steps={STEPS}", "--set", "train.checkpoint_every=3",
    "--set", "train.log_every=3", "--no-progress",
]  # fmt: skip


def train_args(data: Path, out: Path) -> list[str]:
    return [*TRAIN, "--data", str(data), "--checkpoint-dir", str(out / "ckpt"),
            "--metrics", str(out / "train.json"), "--loss-curve", str(out / "loss.csv")]  # fmt: skip


def start(cmd: list[str], cwd: Path, out: Path, name: str) -> tuple[subprocess.Popen, Path]:
    """A launcher in its own process group (so a hang can be ended with its workers), its
    output in out/<name>.log, tracking to a scratch MLflow store out/mlflow.db, one thread
    per worker."""
    out.mkdir(parents=True, exist_ok=True)
    env = pipeline_env(MLFLOW_TRACKING_URI=f"sqlite:///{out / 'mlflow.db'}", OMP_NUM_THREADS="1")
    log = out / f"{name}.log"
    with open(log, "w") as stream:
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=stream, stderr=subprocess.STDOUT, start_new_session=True
        )
    return proc, log


def finish(*launched: tuple[subprocess.Popen, Path], timeout: float = 240) -> list[str]:
    """Wait for launchers started side by side; each must exit 0. Returns their outputs."""
    try:
        for proc, _ in launched:
            proc.wait(timeout=timeout)
    finally:
        for proc, _ in launched:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    outputs = [log.read_text() for _, log in launched]
    for (proc, _), output in zip(launched, outputs, strict=True):
        assert proc.returncode == 0, f"{' '.join(proc.args)}\n{output[-4000:]}"
    return outputs


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    ckpt = load_checkpoint(out / "ckpt" / f"ckpt_{STEPS:08d}.pt")
    return {
        **{f"model.{k}": v for k, v in ckpt["model"].items()},
        **{f"ema.{k}": v for k, v in ckpt["ema"].items()},
    }


def recorded_runs(store: Path) -> list[str]:
    with sqlite3.connect(store) as db:
        return [status for (status,) in db.execute("SELECT status FROM runs")]


def assert_same_training(got: Path, expected: dict[str, torch.Tensor]) -> None:
    # The tolerance of test_training.py's two-gloo test: float32 sums in another order,
    # amplified a little by six Adam steps.
    weights = final_weights(got)
    assert weights.keys() == expected.keys()
    for k, v in expected.items():
        torch.testing.assert_close(weights[k], v, rtol=1e-4, atol=2e-5, msg=k)
    assert sorted(p.name for p in (got / "ckpt").glob("ckpt_*.pt")) == [
        "ckpt_00000003.pt",
        "ckpt_00000006.pt",
    ]
    assert (got / "train.json").is_file()
    assert [line.split(",")[0] for line in (got / "loss.csv").read_text().splitlines()[1:]] == ["3", "6"]
    # only rank 0 tracks: one MLflow run, in the scratch store
    assert recorded_runs(got / "mlflow.db") == ["FINISHED"]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, digits_npz) -> dict[str, torch.Tensor]:
    """The final weights of the same command run as one plain process."""
    out = tmp_path_factory.mktemp("one")
    finish(start([str(VENV_BIN / "python"), *train_args(digits_npz, out)], out, out, "train"))
    return final_weights(out)


def test_torchrun_on_one_node_matches_one_process(tmp_path, digits_npz, one_process):
    out = tmp_path / "node"
    cmd = [TORCHRUN, "--standalone", "--nproc_per_node", "2", *train_args(digits_npz, out)]
    (log,) = finish(start(cmd, tmp_path, out, "torchrun"))
    assert f"trained cosine-vlb to step {STEPS}" in log
    assert_same_training(out, one_process)


def test_two_nodes_meeting_through_a_c10d_rendezvous_match_one_process(tmp_path, digits_npz, one_process):
    # Two launchers started side by side, as on two machines: each owns one process and
    # finds the other through the rendezvous endpoint (node 0's address on a real cluster).
    out = tmp_path / "nodes"
    endpoint = f"127.0.0.1:{free_port()}"

    def node(rank: int) -> list[str]:
        return [TORCHRUN, "--nnodes", "2", "--nproc_per_node", "1", "--node_rank", str(rank),
                "--rdzv_backend", "c10d", "--rdzv_endpoint", endpoint, "--rdzv_id", "scaling-test",
                *train_args(digits_npz, out)]  # fmt: skip

    logs = finish(*(start(node(rank), tmp_path, out, f"node{rank}") for rank in (0, 1)))
    assert sum(f"trained cosine-vlb to step {STEPS}" in log for log in logs) == 1  # rank 0 reports
    assert_same_training(out, one_process)
