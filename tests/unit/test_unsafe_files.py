"""Files from elsewhere cannot run code: every torch.load is weights_only, and a pickle that
would execute something is refused with an error naming the file."""

import os
import re
from pathlib import Path

import pytest
import torch

from ddpm_repro.training.checkpoint import CheckpointError, load_checkpoint

SRC = Path(__file__).resolve().parents[2] / "src" / "ddpm_repro"


class Payload:
    """Unpickling this calls os.system: the attack a weights_only load must refuse."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_malicious_checkpoint_is_refused_without_running_its_code(tmp_path):
    marker, path = tmp_path / "pwned", tmp_path / "ckpt_00000010.pt"
    torch.save({"step": 10, "model": Payload(marker)}, path)
    with pytest.raises(CheckpointError, match=r"ckpt_00000010.pt' is corrupt or truncated"):
        load_checkpoint(path)
    assert not marker.exists()


def test_a_malicious_inception_weights_file_is_refused_without_running_its_code(tmp_path, monkeypatch):
    from ddpm_repro.evaluation.inception import InceptionUnavailable, inception_weights_path, load_inception

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    marker, path = tmp_path / "pwned", inception_weights_path()
    path.parent.mkdir(parents=True)
    torch.save({"Conv2d_1a_3x3.conv.weight": Payload(marker)}, path)
    with pytest.raises(InceptionUnavailable, match="unreadable"):
        load_inception()
    assert not marker.exists()


def test_no_code_path_loads_without_weights_only():
    for py in SRC.rglob("*.py"):
        for call in re.findall(r"torch\.load\([^)]*\)", py.read_text()):
            assert "weights_only=True" in call, f"{py.relative_to(SRC)}: {call}"
