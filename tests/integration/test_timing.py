"""The per-stage timing table of `ddpm-repro repro`."""

import json
import os

from ddpm_repro import cli
from ddpm_repro.reporting.timing import machine, mlflow_metrics, read_timings, timing_markdown


def test_a_stage_command_appends_its_time_where_repro_asks(tmp_path, monkeypatch):
    log = tmp_path / "timings.jsonl"
    monkeypatch.setenv(cli.TIMINGS_ENV, str(log))
    monkeypatch.setenv("DVC_STAGE", "prepare")
    assert cli.main(["prepare", "--out", str(tmp_path / "prepared"), "--no-progress"]) == 0
    monkeypatch.delenv("DVC_STAGE")
    assert cli.main(["prepare", "--out", str(tmp_path / "again"), "--no-progress"]) == 0
    rows = read_timings(log)
    assert [r["stage"] for r in rows] == ["prepare", "prepare"]  # DVC's stage name, else the command
    assert all(r["seconds"] > 0 for r in rows)
    # without the variable (a stage run by hand) nothing is written; a failed command records nothing
    monkeypatch.delenv(cli.TIMINGS_ENV)
    assert cli.main(["prepare", "--out", str(tmp_path / "third"), "--no-progress"]) == 0
    monkeypatch.setenv(cli.TIMINGS_ENV, str(log))
    assert cli.main(["sample", "--checkpoint", str(tmp_path / "none"), "--out", str(tmp_path / "s.npz")]) == 2
    assert len(read_timings(log)) == 2


def test_the_table_gives_seconds_throughput_and_the_machine(tmp_path):
    rows = [
        {"stage": "train@linear-simple", "seconds": 80.0, "images": 64000},
        {"stage": "evaluate@linear-simple", "seconds": 20.0, "images": None},
    ]
    md = timing_markdown(rows, "Some CPU, 2 cores")
    assert "| train@linear-simple | 80.0 | 800.0 |" in md
    assert "| evaluate@linear-simple | 20.0 | — |" in md
    assert "| **total** | **100.0** | |" in md and "Some CPU, 2 cores" in md
    assert mlflow_metrics(rows) == {
        "stage_seconds/train/linear-simple": 80.0,
        "stage_seconds/evaluate/linear-simple": 20.0,
    }
    assert "torch CPU capability" in machine() and ("AMX" in machine())
    assert read_timings(tmp_path / "missing.jsonl") == []
    (tmp_path / "t.jsonl").write_text(json.dumps(rows[0]) + "\n\n")
    assert read_timings(tmp_path / "t.jsonl") == rows[:1]
    assert os.path.exists(tmp_path / "t.jsonl")
