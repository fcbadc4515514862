"""Running dvc.yaml with independent cells side by side.

DVC runs one stage at a time, but it lets several `dvc repro` processes share a repository:
it holds the repository lock only while it reads and writes dvc.lock, and locks each stage's
own dependencies and outputs while the stage runs. `run_pipeline(jobs)` uses that:

1. the stages that every cell needs (those listed before the first `<stage>@<cell>` stage,
   here prepare and reference), in one `dvc repro`;
2. each cell's chain (train, sample, nll, evaluate, and the -cond variants' own chains) in its
   own `dvc repro`, `jobs` chains at a time, each with cores // jobs threads;
3. a plain `dvc repro` of the whole pipeline: the report, and a check that nothing was missed.

On 2 CPU cores, two one-thread cells at once do more work per second than one two-thread
cell: the small model's kernels do not keep two threads busy (benchmarks/README.md, "Parallel
cells"). Each cell's numbers do not depend on the order cells run in; thread counts change
only the float rounding, as a different CPU would.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Sequence

from .errors import UserError


def available_cores() -> int:
    """The CPU cores this process may run on (the affinity mask, else os.cpu_count())."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def auto_jobs(chains: int) -> int:
    """How many cell chains to run at once: one per core on a CPU-only machine (each stage then
    runs one thread), one where a GPU is visible (a stage's workers already use every GPU)."""
    import torch

    if torch.cuda.is_available():
        return 1
    return max(1, min(chains, available_cores()))


def list_stages(env: dict[str, str]) -> list[str]:
    """dvc.yaml's stage names in DVC's order (`dvc stage list --name-only`)."""
    result = subprocess.run(["dvc", "stage", "list", "--name-only"], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise UserError(f"dvc stage list failed: {result.stderr.strip() or result.stdout.strip()}")
    return [line.strip() for line in result.stdout.splitlines() if line.strip()]


def cell_chains(stages: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """Split stage names into (shared, chains).

    shared: the stages before the first `name@key` stage (prepare, reference);
    chains: for each key, its stages in dvc.yaml order, e.g. [train@cosine-simple,
    sample@cosine-simple, nll@cosine-simple, evaluate@cosine-simple]. A `-cond` stage
    (train-cond@cosine-hybrid) belongs to the chain of key `cosine-hybrid-cond`: the
    class-conditional variant is its own cell. Chains keep the order of their first stage.
    """
    shared: list[str] = []
    chains: dict[str, list[str]] = {}
    for name in stages:
        if "@" not in name:
            if not chains:
                shared.append(name)
            continue
        prefix, key = name.split("@", 1)
        if prefix.endswith("-cond"):
            key += "-cond"
        chains.setdefault(key, []).append(name)
    return shared, list(chains.values())


def _dvc_repro(args: Sequence[str], env: dict[str, str]) -> int:
    """`dvc --wait-for-lock repro ARGS`: its exit status; output goes to ours."""
    return subprocess.run(["dvc", "--wait-for-lock", "repro", *args], env=env).returncode


def _run_chains(chains: list[list[str]], jobs: int, env: dict[str, str]) -> int:
    """Run each chain in its own `dvc repro`, `jobs` at a time. After a failure no new chain
    starts; the running ones finish. Returns 0 or the first failing chain's exit status."""
    queue = list(chains)
    lock = threading.Lock()
    failures: list[int] = []

    def worker() -> None:
        while True:
            with lock:
                if failures or not queue:
                    return
                chain = queue.pop(0)
            # --single-item: only the chain's own stages, in order. Without it DVC would also
            # check prepare, whose output the other chains hold read-locked while they train.
            rc = _dvc_repro(["--single-item", *chain], env)
            if rc != 0:
                with lock:
                    failures.append(rc)
                print(f"ddpm-repro repro: {chain[0]} and its chain failed (exit {rc})", file=sys.stderr)

    threads = [threading.Thread(target=worker) for _ in range(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return failures[0] if failures else 0


def run_pipeline(dvc_args: Sequence[str], jobs: int | None, env: dict[str, str]) -> int:
    """`dvc repro DVC_ARGS`, with the cells' chains run `jobs` at a time first (None: auto).

    The parallel phase runs only for a plain `dvc repro` of the whole pipeline: with targets
    or flags, DVC_ARGS go to one `dvc repro` unchanged. Returns DVC's exit status."""
    if dvc_args or jobs == 1:
        return _dvc_repro(dvc_args, env)
    shared, chains = cell_chains(list_stages(env))
    jobs = auto_jobs(len(chains)) if jobs is None else min(jobs, max(1, len(chains)))
    if jobs > 1:
        threads = max(1, available_cores() // jobs)
        print(f"ddpm-repro repro: {len(chains)} cells, {jobs} at a time, {threads} thread(s) each")
        if shared and (rc := _dvc_repro(shared, env)) != 0:
            return rc
        cell_env = {**env, "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS") or str(threads)}
        if rc := _run_chains(chains, jobs, cell_env):
            return rc
    return _dvc_repro([], env)
