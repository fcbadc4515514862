"""Fixtures shared by the integration tests: one smoke pipeline run, once per session, and
scratch copies of the repository."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def pipeline_env(**extra: str) -> dict[str, str]:
    """The environment a user's shell has after `make setup`: the venv first on PATH."""
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DDPM_REPRO_TRACKING": "1",  # each scratch repo has its own store
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(extra)
    return env


def copy_repo(dest: Path, profile: str | None = "smoke") -> Path:
    """A scratch copy of the working tree (what git would clone, plus uncommitted files),
    without generated reports or dvc.lock, with a profile's params as params.yaml."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in files:
        if name.startswith("reports/") or name == "dvc.lock" or not (REPO / name).is_file():
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
    if profile:
        shutil.copy(REPO / "pipelines" / profile / "params.yaml", dest / "params.yaml")
    git = ["git", "-c", "user.email=test@ddpm-repro", "-c", "user.name=test"]
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "scratch copy"], cwd=dest, check=True)
    return dest


def run(cmd: list[str], cwd: Path, timeout: float = 900, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd, cwd=cwd, env=pipeline_env(**env), capture_output=True, text=True, timeout=timeout
    )


def stages_run(dvc_stdout: str) -> list[str]:
    """The stages a `dvc repro` (or `dvc exp run`) ran, in order, from its output."""
    return [line.split("'")[1] for line in dvc_stdout.splitlines() if line.startswith("Running stage")]


def copy_of_run(
    smoke_repo: Path, dest: Path, edit: tuple[str, str] | None = None, commit: bool = False
) -> Path:
    """A copy of the smoke run's repository (outputs and DVC cache included); `edit` replaces
    one text of its params.yaml, which must be there; `commit` commits the run (dvc.lock)."""
    shutil.copytree(smoke_repo, dest, symlinks=True)
    if edit:
        params = (dest / "params.yaml").read_text()
        assert edit[0] in params, f"{edit[0]!r} is not in the smoke params"
        (dest / "params.yaml").write_text(params.replace(edit[0], edit[1]))
    if commit:
        git = ["git", "-c", "user.email=test@ddpm-repro", "-c", "user.name=test"]
        subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
        subprocess.run([*git, "commit", "-qm", "the smoke run"], cwd=dest, check=True)
    return dest


@pytest.fixture(scope="session")
def smoke_repo(tmp_path_factory) -> Path:
    """One run of the whole smoke pipeline (`ddpm-repro repro`), shared by every test that reads it."""
    repo = copy_repo(tmp_path_factory.mktemp("smoke") / "repo")
    result = run(["ddpm-repro", "repro"], repo)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return repo
