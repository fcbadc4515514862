"""One worker process per device, started by the stage command itself.

`ddpm-repro train`, `sample` and `evaluate` call `workers_to_start`; when it says more than
one, the command starts that many copies of itself with torchrun's environment (RANK,
LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) and waits for them, so the command in
dvc.yaml is the same for one CPU and eight GPUs. Under an outer launcher (torchrun, or this
one: WORLD_SIZE is set) nothing is started and the command runs as that launcher's worker.

The workers die with the launcher (Linux: PR_SET_PDEATHSIG), and when one worker fails the
others are stopped and its exit status is the command's, after its own one-line error.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time

import torch

from .errors import UserError


def resolve_nproc(setting: str, device: str) -> int:
    """train.nproc as a number: "auto" is every visible CUDA device when `device` (auto, cpu
    or cuda) may be CUDA, else 1; a number is taken as it is."""
    if setting != "auto":
        return int(setting)
    if device != "cpu" and torch.cuda.is_available():
        return max(1, torch.cuda.device_count())
    return 1


def under_launcher() -> bool:
    """True inside a worker of torchrun or of `launch`."""
    return "WORLD_SIZE" in os.environ


def workers_to_start(setting: str, device: str) -> int:
    """How many workers this command must start for train.nproc `setting` on `device`: 0 when
    it is itself a worker or runs alone."""
    if under_launcher():
        return 0
    n = resolve_nproc(setting, device)
    if n > 1 and device == "cuda" and n > torch.cuda.device_count():
        raise UserError(f"train.nproc={n} but only {torch.cuda.device_count()} CUDA devices are visible")
    return n if n > 1 else 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the child before exec: receive SIGKILL when the launcher dies, however it dies."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:  # not glibc Linux: the workers then end at their next collective
        pass


def launch(nproc: int, argv: list[str]) -> int:
    """Run `ddpm-repro <argv>` as `nproc` workers on this machine; return the exit status
    (0, or the first failing worker's). Each CPU worker gets cores // nproc threads unless
    OMP_NUM_THREADS is set, as torchrun does."""
    port = _free_port()
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // nproc))
    print(f"starting {nproc} worker processes ({argv[0]})", file=sys.stderr, flush=True)
    workers = []
    for rank in range(nproc):
        env = {
            **os.environ,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(nproc),
            "LOCAL_WORLD_SIZE": str(nproc),
            "GROUP_RANK": "0",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": threads,
        }
        cmd = [sys.executable, "-m", "ddpm_repro.cli", *argv]
        workers.append(subprocess.Popen(cmd, env=env, preexec_fn=_die_with_parent))
    try:
        return _wait(workers)
    finally:
        _stop(workers)


def _wait(workers: list[subprocess.Popen]) -> int:
    """Wait until all succeed (0) or one fails (its status)."""
    while True:
        codes = [w.poll() for w in workers]
        failed = [c for c in codes if c not in (None, 0)]
        if failed:
            return 128 - failed[0] if failed[0] < 0 else failed[0]  # killed by signal s: 128 + s
        if all(c == 0 for c in codes):
            return 0
        time.sleep(0.1)


def _stop(workers: list[subprocess.Popen], grace_s: float = 10.0) -> None:
    """SIGTERM the workers still running, SIGKILL after `grace_s`."""
    alive = [w for w in workers if w.poll() is None]
    for w in alive:
        w.terminate()
    deadline = time.monotonic() + grace_s
    for w in alive:
        try:
            w.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            w.kill()
            w.wait()
