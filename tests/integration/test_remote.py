"""Sharing a run through a DVC remote: the checkpoints (and every other output) pushed from
one clone and pulled into another, then sampled there; a local-directory remote stands in
for S3, GCS or SSH (the same commands, another URL)."""

import json
import subprocess

import numpy as np

from .conftest import copy_of_run, run


def test_checkpoints_travel_through_a_local_dvc_remote(smoke_repo, tmp_path):
    source = copy_of_run(smoke_repo, tmp_path / "source", commit=True)
    remote = tmp_path / "remote"
    assert run(["dvc", "remote", "add", "-d", "shared", str(remote)], source).returncode == 0
    push = run(["dvc", "push"], source)
    assert push.returncode == 0, push.stderr[-2000:]

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(source), str(clone)], check=True)
    # the remote is in .dvc/config, uncommitted in source: a user sets it once per clone
    assert run(["dvc", "remote", "add", "-d", "shared", str(remote)], clone).returncode == 0
    pull = run(["dvc", "pull"], clone)
    assert pull.returncode == 0, pull.stderr[-2000:]

    cells = sorted(p.name for p in (source / "checkpoints").iterdir())
    assert cells and sorted(p.name for p in (clone / "checkpoints").iterdir()) == cells
    for cell in cells:
        for ckpt in (source / "checkpoints" / cell).glob("ckpt_*.pt"):
            assert (clone / "checkpoints" / cell / ckpt.name).read_bytes() == ckpt.read_bytes()
    status = run(["dvc", "status", "--json"], clone)
    assert status.returncode == 0 and json.loads(status.stdout) == {}, status.stdout

    # the README's one-liner on a pulled checkpoint folder
    out = tmp_path / "pulled.npz"
    sampled = run(
        ["ddpm-repro", "sample", "--checkpoint", "checkpoints/cosine-hybrid", "--out", str(out),
         "--set", "sample.num_samples=3", "--no-progress"],
        clone, DDPM_REPRO_TRACKING="0",
    )  # fmt: skip
    assert sampled.returncode == 0, sampled.stderr[-2000:]
    assert np.load(out)["images"].shape[0] == 3
