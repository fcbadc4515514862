"""`ddpm-repro` prints the user's errors as one line (exit 2) and a bug as a traceback."""

import subprocess
import sys

import pytest

from ddpm_repro import cli
from ddpm_repro.config import ConfigError
from ddpm_repro.errors import NonFiniteLossError, UserError
from ddpm_repro.training.checkpoint import CheckpointError


@pytest.mark.parametrize(
    "error",
    [UserError("data file 'x.npz' lacks ['labels']"), ConfigError("train.lr: bad"), CheckpointError("c")],
)
def test_a_users_error_is_one_line_and_exit_2(monkeypatch, capsys, error):
    def handler(args):
        raise error

    monkeypatch.setattr(cli, "_prepare", handler)
    assert cli.main(["prepare", "--params", "params.yaml", "--out", "x"]) == 2
    err = capsys.readouterr().err
    assert err == f"ddpm-repro prepare: error: {error}\n"


def test_a_non_finite_loss_is_one_line_and_exit_1(monkeypatch, capsys):
    def handler(args):
        raise NonFiniteLossError("non-finite loss at step 9")

    monkeypatch.setattr(cli, "_prepare", handler)
    assert cli.main(["prepare", "--params", "params.yaml", "--out", "x"]) == 1
    assert capsys.readouterr().err == "ddpm-repro prepare: error: non-finite loss at step 9\n"


def test_a_bug_is_not_dressed_as_a_users_error(monkeypatch):
    def handler(args):
        raise ValueError("operands could not be broadcast together")  # the project's own bug

    monkeypatch.setattr(cli, "_prepare", handler)
    with pytest.raises(ValueError, match="broadcast"):
        cli.main(["prepare", "--params", "params.yaml", "--out", "x"])


def test_a_bug_prints_its_traceback_from_the_command_line(tmp_path):
    code = (
        "import sys\n"
        "from ddpm_repro import cli\n"
        "def bug(args):\n"
        "    raise ValueError('operands could not be broadcast together')\n"
        "cli._prepare = bug\n"
        "sys.exit(cli.main(['prepare', '--params', 'params.yaml', '--out', 'x']))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr and "in bug" in result.stderr


def test_every_error_class_the_cli_maps_to_exit_2_is_a_user_error():
    from ddpm_repro.models.official import OfficialCheckpointError

    for cls in (ConfigError, CheckpointError, OfficialCheckpointError):
        assert issubclass(cls, UserError) and issubclass(cls, ValueError)
