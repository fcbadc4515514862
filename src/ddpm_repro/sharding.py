"""Resumable work split across worker processes: numbered chunks, each saved as it finishes.

A job is a list of chunks 0..n-1 whose results are numpy arrays. Worker r of w computes
chunks r, r + w, r + 2w, ...; each finished chunk is written atomically to the job's folder,
so a killed job rerun with the same settings computes only the chunks that are missing.
The folder holds the job's settings (job.json): a job with other settings discards the old
chunks instead of mixing them in. The results never depend on the number of workers: a
chunk's content is a function of its index alone (its callers seed it by index and give
every chunk the same shape).

    job = ChunkedJob(".samples.npz.partial", {"seed": 0, ...}, ctx)
    parts = job.run(num_chunks, compute)  # rank 0: every chunk's arrays, in order; others: None
    ...write the final output...
    job.finish()                          # the folder goes
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch.distributed as dist

from .io import atomic_write, write_text
from .progress import Progress
from .training.checkpoint import fault_point
from .training.distributed import DistContext

Arrays = dict[str, np.ndarray]
RunChunks = Callable[[int, Callable[[int], Arrays]], "list[Arrays] | None"]


def run_in_process(num_chunks: int, compute: Callable[[int], Arrays]) -> list[Arrays]:
    """The plain way to run a chunked computation: every chunk here, nothing saved."""
    return [compute(k) for k in range(num_chunks)]


def partial_dir(output: str | Path) -> Path:
    """Where the chunks of the job that writes `output` live: `.<name>.partial/` beside it
    (ignored by git and DVC, so a resumed stage finds it)."""
    output = Path(output)
    return output.parent / f".{output.name}.partial"


class ChunkedJob:
    """A resumable chunked job in `folder`, identified by `settings` (JSON-serialisable)."""

    def __init__(
        self, folder: str | Path, settings: dict, ctx: DistContext, desc: str = "", progress: bool = True
    ) -> None:
        self.folder, self.ctx, self.desc, self.progress = Path(folder), ctx, desc, progress
        self.settings = json.loads(json.dumps(settings, sort_keys=True))  # as it reads back
        if ctx.is_main:
            self._prepare()
        self._barrier()

    def _barrier(self) -> None:
        if self.ctx.world_size > 1:
            dist.barrier()

    def _prepare(self) -> None:
        """Keep the chunks of an unfinished job with the same settings; drop anything else."""
        record = self.folder / "job.json"
        if self.folder.is_dir():
            same = record.is_file() and json.loads(record.read_text()) == self.settings
            if not same:
                shutil.rmtree(self.folder)
            else:
                for tmp in self.folder.glob(".*.tmp"):  # a write that was killed
                    tmp.unlink(missing_ok=True)
        if not record.is_file():
            write_text(record, json.dumps(self.settings, indent=2, sort_keys=True) + "\n")

    def sub(self, name: str, desc: str = "") -> ChunkedJob:
        """A job in a subfolder (one per step-curve point), with this job's settings."""
        return ChunkedJob(self.folder / name, self.settings, self.ctx, desc or name, self.progress)

    def chunk_path(self, k: int) -> Path:
        """The file of chunk k."""
        return self.folder / f"chunk_{k:06d}.npz"

    def done(self) -> int:
        """Chunks finished so far, by any worker."""
        return sum(1 for _ in self.folder.glob("chunk_*.npz"))

    def run(self, num_chunks: int, compute: Callable[[int], Arrays]) -> list[Arrays] | None:
        """Compute this worker's missing chunks, wait for the others; rank 0 returns every
        chunk's arrays in chunk order, the other ranks None."""
        bar = Progress(
            self.desc or self.folder.name,
            num_chunks,
            "chunk",
            initial=self.done(),
            bar=self.progress,
            enabled=self.ctx.is_main,
        )
        for k in range(self.ctx.rank, num_chunks, self.ctx.world_size):
            path = self.chunk_path(k)
            if path.is_file():
                continue
            arrays = compute(k)
            atomic_write(path, lambda f, a=arrays: np.savez(f, **a))
            fault_point("chunk", k)  # tests: a kill right after a chunk was saved
            bar.update(done=self.done())
        bar.update(done=self.done())
        self._barrier()
        bar.close()
        if not self.ctx.is_main:
            return None
        parts = []
        for k in range(num_chunks):
            with np.load(self.chunk_path(k)) as data:
                parts.append({key: data[key] for key in data.files})
        return parts

    def finish(self) -> None:
        """The final output is written: remove the chunks (rank 0, after every worker is done)."""
        self._barrier()
        if self.ctx.is_main:
            shutil.rmtree(self.folder, ignore_errors=True)
