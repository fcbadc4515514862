"""`ddpm-repro repro`'s scheduler: which stages form a cell's chain, and that chains run side
by side, each as its own `dvc repro --single-item`, before one plain `dvc repro`."""

import json
import os
import stat
import sys

import pytest

from ddpm_repro import cli, repro

STAGES = [
    "prepare",
    "reference",
    *[f"{kind}@{cell}" for kind in ("train", "sample", "nll", "evaluate") for cell in ("a-x", "b-y")],
    "train-cond@b-y",
    "sample-cond@b-y",
    "report",
]


def test_cells_chain_their_stages_in_dvc_order_and_a_cond_variant_is_its_own_cell():
    shared, chains = repro.cell_chains(STAGES)
    assert shared == ["prepare", "reference"]
    assert chains == [
        ["train@a-x", "sample@a-x", "nll@a-x", "evaluate@a-x"],
        ["train@b-y", "sample@b-y", "nll@b-y", "evaluate@b-y"],
        ["train-cond@b-y", "sample-cond@b-y"],
    ]


def test_jobs_takes_auto_or_a_positive_integer():
    parser = cli.build_parser()
    assert parser.parse_args(["repro"]).jobs is None
    assert parser.parse_args(["repro", "--jobs", "auto"]).jobs is None
    assert parser.parse_args(["repro", "--jobs", "3", "--", "-f"]).jobs == 3
    for bad in ("0", "-1", "two"):
        with pytest.raises(SystemExit):
            parser.parse_args(["repro", "--jobs", bad])


@pytest.fixture
def fake_dvc(tmp_path, monkeypatch):
    """A `dvc` on PATH that logs each call (argv, start and end time, OMP_NUM_THREADS). A chain
    sleeps 0.5 s, so two chains overlap only if they were started side by side; the chain
    naming FAIL_STAGE fails at once with exit status 3."""
    log = tmp_path / "calls.jsonl"
    script = tmp_path / "bin" / "dvc"
    script.parent.mkdir()
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys, time\n"
        "args = sys.argv[1:]\n"
        "if args[:3] == ['stage', 'list', '--name-only']:\n"
        f"    print('\\n'.join({STAGES!r})); sys.exit(0)\n"
        "start = time.time()\n"
        "fail = os.environ.get('FAIL_STAGE')\n"
        "if '--single-item' in args and not (fail and fail in args): time.sleep(0.5)\n"
        f"with open({str(log)!r}, 'a') as f:\n"
        "    f.write(json.dumps({'args': args, 'start': start, 'end': time.time(),\n"
        "                        'threads': os.environ.get('OMP_NUM_THREADS')}) + '\\n')\n"
        "sys.exit(3 if fail and fail in args else 0)\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(repro, "available_cores", lambda: 2)

    def calls():
        return [json.loads(line) for line in log.read_text().splitlines()]

    env = {**os.environ, "PATH": f"{script.parent}:{os.environ['PATH']}"}
    env.pop("OMP_NUM_THREADS", None)
    return env, calls


def test_chains_run_side_by_side_then_one_plain_repro(fake_dvc):
    env, calls = fake_dvc
    assert repro.run_pipeline([], 2, env) == 0
    log = calls()
    assert log[0]["args"] == ["--wait-for-lock", "repro", "prepare", "reference"]
    assert log[-1]["args"] == ["--wait-for-lock", "repro"] and log[-1]["threads"] is None
    chains = log[1:-1]
    assert sorted(c["args"][3] for c in chains) == ["train-cond@b-y", "train@a-x", "train@b-y"]
    assert all(c["args"][2] == "--single-item" and c["threads"] == "1" for c in chains)
    first, second = sorted(chains, key=lambda c: c["start"])[:2]
    assert second["start"] < first["end"]  # the first two overlapped in time


def test_a_failed_chain_stops_new_chains_and_skips_the_final_repro(fake_dvc):
    env, calls = fake_dvc
    assert repro.run_pipeline([], 2, {**env, "FAIL_STAGE": "train@a-x"}) == 3
    started = [c["args"][3] for c in calls() if "--single-item" in c["args"]]
    assert "train-cond@b-y" not in started  # the third chain never started
    assert all(c["args"] != ["--wait-for-lock", "repro"] for c in calls())


def test_targets_or_flags_or_one_job_run_one_plain_dvc_repro(fake_dvc):
    env, calls = fake_dvc
    assert repro.run_pipeline(["report"], None, env) == 0
    assert repro.run_pipeline([], 1, env) == 0
    plain = ["--wait-for-lock", "repro"]
    assert [c["args"] for c in calls()] == [[*plain, "report"], plain]
