"""Where the default MLflow store goes, including for DVC's queued and temporary experiments."""

import subprocess

from ddpm_repro.tracking import store_root


def _git_init(path):
    path.mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=path, check=True)
    return path


def test_the_store_is_at_the_repository_root(tmp_path):
    repo = _git_init(tmp_path / "repo")
    (repo / "sub").mkdir()
    assert store_root(repo / "sub") == repo.resolve()


def test_a_queued_experiment_logs_to_the_repository_it_was_queued_from(tmp_path):
    # `dvc exp run --queue` / `--temp` runs a git copy in <repo>/.dvc/tmp/exps/<tmp>, deleted
    # after the run: a store there would lose the experiment's runs.
    repo = _git_init(tmp_path / "repo")
    copy = _git_init(repo / ".dvc" / "tmp" / "exps" / "tmpab12cd")
    assert store_root(copy) == repo.resolve()
