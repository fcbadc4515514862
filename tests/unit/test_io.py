"""Atomic writes: whole files or nothing, with the permissions of a normal file."""

import os

import pytest

from ddpm_repro.io import atomic_write, write_json


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "m.json"
    write_json(path, {"a": 1})

    def fail(f):
        f.write(b"{partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        atomic_write(path, fail)
    assert path.read_text() == '{\n  "a": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def test_written_files_follow_the_umask_not_mkstemps_0600(tmp_path):
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "m.json", {})
    finally:
        os.umask(old)
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o644


@pytest.fixture
def full_disk(monkeypatch):
    """Every atomic write goes to /dev/full, whose writes fail with a real ENOSPC (root or not)."""
    import ddpm_repro.io as io_module

    real = io_module.tempfile.mkstemp

    def on_full_disk(**kwargs):
        fd, name = real(**kwargs)
        os.close(fd)
        return os.open("/dev/full", os.O_WRONLY), name

    monkeypatch.setattr(io_module.tempfile, "mkstemp", on_full_disk)


def test_a_full_disk_is_an_error_naming_the_file_and_the_old_file_stays(tmp_path, full_disk):
    path = tmp_path / "m.json"
    path.write_text('{"a": 1}\n')
    with pytest.raises(OSError, match=r"could not write '.*m.json': No space left on device"):
        write_json(path, {"a": 2})
    assert path.read_text() == '{"a": 1}\n' and sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def test_a_stage_on_a_full_disk_says_so_in_one_line_and_leaves_no_output(tmp_path, full_disk, capsys):
    from ddpm_repro import cli

    assert cli.main(["prepare", "--out", str(tmp_path / "prepared"), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "No space left on device" in err and "train.npz" in err
    out = tmp_path / "prepared"
    assert not out.exists() or not any(out.iterdir())
