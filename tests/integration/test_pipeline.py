"""The DVC pipeline end to end on the smoke profile, in a scratch copy of the repo."""

import csv
import json
import sqlite3
import urllib.parse
from pathlib import Path

import numpy as np
import pytest

from ddpm_repro.data import load_arrays

from .conftest import copy_of_run, copy_repo, run, stages_run

CELLS = [f"{s}-{loss}" for s in ("linear", "cosine") for loss in ("simple", "hybrid", "vlb", "aux")]
STAGES = ("train", "sample", "nll", "evaluate")  # the stages of every cell


def test_every_stage_wrote_its_outputs(smoke_repo):
    for cell in CELLS:
        d = smoke_repo / "reports" / "cells" / cell
        train, nll, evaluation = (
            json.loads((d / f"{name}.json").read_text()) for name in ("train", "nll", "eval")
        )
        assert train["cell"] == cell and train["steps"] == 30 and np.isfinite(train["final_loss"])
        assert nll["cell"] == cell and nll["nll_images"] == 8 and nll["nll_terms"] == 50
        assert nll["nll_estimate"] == "full bound" and nll["nll_strata_spacing"] is None
        assert 0 < nll["nll_bpd"] < 16 and "nll_per_image" not in nll  # not in DVC's metrics
        per_image = json.loads((d / "nll_per_image.json").read_text())["nll_per_image"]
        assert len(per_image) == 8 and np.mean(per_image) == pytest.approx(nll["nll_bpd"])
        assert (
            evaluation["fd_samples"] == 8
            and evaluation["fd_classifier"] >= 0
            and evaluation["is_classifier"] >= 1
        )
        assert (d / "loss.csv").read_text().startswith("step,loss")
        assert (d / "samples.png").stat().st_size > 0
        samples = load_arrays(smoke_repo / "samples" / f"{cell}.npz")
        assert samples.images.shape == (8, 8, 8, 1) and samples.images.dtype == np.uint8
    summary = json.loads((smoke_repo / "reports" / "summary.json").read_text())
    assert list(summary) == CELLS and all(
        set(v) >= {"final_loss", "nll_bpd", "fd_classifier"} for v in summary.values()
    )
    reference = json.loads((smoke_repo / "reports" / "reference.json").read_text())
    assert 0 <= reference["classifier_test_accuracy"] <= 1 and reference["test_images"] == 359
    report = (smoke_repo / "reports" / "report.md").read_text()
    assert "profile `smoke`" in report and report.count("| linear |") == 4 and report.count("| cosine |") == 4
    assert "FID (Inception): not computed" in report  # the smoke profile never runs Inception
    with (smoke_repo / "reports" / "report.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["cell"] for r in rows] == CELLS
    for r in rows:  # every number the smoke run computes is there, and FID says it was not computed
        assert all(float(r[k]) >= 0 for k in ("final_loss", "nll_bpd", "nll_bpd_se", "fd_classifier"))
        assert r["fid_inception"] == "not computed"
    assert (smoke_repo / "reports" / "report.tex").read_text().count("\\begin{tabular}") >= 2
    for plot in ("loss_curves", "nll_fd", "sampling_steps", "class_accuracy"):
        assert (smoke_repo / "reports" / "plots" / f"{plot}.png").stat().st_size > 0


def test_repro_writes_every_stage_s_time_to_the_timing_table(smoke_repo):
    md = (smoke_repo / "reports" / "timing.md").read_text()
    rows = {line.split(" | ")[0].strip("| "): line for line in md.splitlines() if line.startswith("| ")}
    stages = ["prepare", "reference", "report", "train-cond@cosine-hybrid"]
    stages += [f"{kind}@{cell}" for cell in CELLS for kind in ("train", "sample", "nll", "evaluate")]
    for stage in stages:  # DVC's own stage names, each with its seconds
        assert stage in rows, (stage, md)
        assert float(rows[stage].split(" | ")[1]) > 0
    for kind in ("train", "sample", "nll"):  # a throughput where the stage counts images
        assert rows[f"{kind}@linear-simple"].split(" | ")[2].strip(" |") != "—"
    assert "torch CPU capability" in md and "**total**" in md
    assert "The whole run took" in md  # the wall time: cells may have run side by side


def test_the_step_curve_has_every_configured_point(smoke_repo):
    # smoke params: evaluate.curve = {ancestral: [5, 50], ddim: [5]}, 8 samples per point (T = 50)
    for cell in CELLS:
        curve = json.loads((smoke_repo / "reports" / "cells" / cell / "eval.json").read_text())["step_curve"]
        assert [(p["method"], p["steps"], p["samples"]) for p in curve] == [
            ("ancestral", 5, 8),
            ("ancestral", 50, 8),
            ("ddim", 5, 8),
        ]
        assert all(p["fd_classifier"] >= 0 for p in curve)
    with (smoke_repo / "reports" / "steps.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 3 * len(CELLS)


def test_the_class_conditional_cell_reports_per_class_accuracy(smoke_repo):
    d = smoke_repo / "reports" / "cells" / "cosine-hybrid-cond"
    evaluation = json.loads((d / "eval.json").read_text())
    assert evaluation["cell"] == "cosine-hybrid-cond" and evaluation["guidance_scale"] == 2.0
    per_class = evaluation["per_class_accuracy"]
    assert sorted(per_class, key=int) == [str(k) for k in range(8)]  # 8 samples: labels 0..7
    assert all(0 <= v <= 1 for v in per_class.values())
    assert evaluation["class_accuracy"] == pytest.approx(np.mean(list(per_class.values())))
    samples = load_arrays(smoke_repo / "samples" / "cosine-hybrid-cond.npz")
    assert samples.labels.tolist() == list(range(8))
    report = (smoke_repo / "reports" / "report.md").read_text()
    assert "cosine-hybrid-cond" in report and "guidance" in report.lower()


def test_the_pipeline_is_up_to_date_after_a_run(smoke_repo):
    status = run(["dvc", "status", "--json"], smoke_repo)
    assert status.returncode == 0 and json.loads(status.stdout) == {}, status.stdout


def test_an_edit_to_seeding_py_makes_every_stage_that_draws_seeds_stale(smoke_repo, tmp_path):
    # seeding.py draws every training and sampling seed; DVC must see an edit to it
    repo = copy_of_run(smoke_repo, tmp_path / "repo")
    seeding = repo / "src" / "ddpm_repro" / "seeding.py"
    seeding.write_text(seeding.read_text() + "\n# an edit\n")
    status = run(["dvc", "status", "--json"], repo)
    assert status.returncode == 0, status.stderr
    stale = set(json.loads(status.stdout))
    expected = {f"{stage}@{cell}" for stage in STAGES for cell in CELLS} | {"reference"}
    assert expected <= stale, sorted(expected - stale)
    assert "prepare" not in stale and "report" not in stale  # neither imports it


def test_changing_one_objectives_key_reruns_only_its_cells(smoke_repo, tmp_path):
    repo = copy_of_run(smoke_repo, tmp_path / "repo", edit=("aux_lambda: 0.001", "aux_lambda: 0.002"))
    result = run(["dvc", "repro"], repo, DDPM_REPRO_TRACKING="0")
    assert result.returncode == 0, result.stderr[-2000:]
    ran = set(stages_run(result.stdout))
    expected = {f"{stage}@{s}-aux" for stage in STAGES for s in ("linear", "cosine")}
    assert ran == expected | {"report"}, sorted(ran)


def test_a_dvc_experiment_sweeps_one_key_and_diffs_only_its_cells(smoke_repo, tmp_path):
    repo = copy_of_run(smoke_repo, tmp_path / "repo", commit=True)
    result = run(["dvc", "exp", "run", "-n", "lambda2", "-S", "losses.aux.aux_lambda=0.002"], repo)
    assert result.returncode == 0, result.stderr[-2000:]
    ran = set(stages_run(result.stdout))
    assert {s for s in ran if "@" in s} == {
        f"{stage}@{s}-aux" for stage in STAGES for s in ("linear", "cosine")
    }
    diff = json.loads(run(["dvc", "metrics", "diff", "--json"], repo).stdout)
    summary = diff.pop("reports/summary.json")  # the run's summary: only the aux cells moved
    assert {key.split(".")[0] for key in summary} == {"linear-aux", "cosine-aux"}, sorted(summary)
    assert {path.split("/")[2] for path in diff} == {"linear-aux", "cosine-aux"}, sorted(diff)
    show = run(["dvc", "exp", "show", "--json"], repo)
    assert show.returncode == 0 and "lambda2" in show.stdout and "nll_bpd" in show.stdout


def test_an_interrupted_grid_resumes_where_it_stopped(tmp_path):
    # The first training to reach step 20 is killed in the middle of writing that checkpoint
    # (the fault hook exits as SIGKILL would); the next `dvc repro` redoes only what is missing
    # and that cell resumes from its last whole checkpoint (step 10).
    repo = copy_repo(tmp_path / "repo")
    params = (repo / "params.yaml").read_text()
    (repo / "params.yaml").write_text(params.replace("  - vlb\n  - aux\n", "").replace("  - cosine\n", ""))
    first = run(["dvc", "repro"], repo, DDPM_REPRO_TRACKING="0", DDPM_REPRO_FAULT="checkpoint-mid-write@20")
    assert first.returncode != 0
    started = stages_run(first.stdout)
    killed = started[-1]  # the stage running when the process died
    assert killed.startswith("train"), first.stdout
    cell = killed.split("@")[1] + ("-cond" if killed.startswith("train-cond@") else "")
    ckpts = repo / "checkpoints" / cell
    assert sorted(p.name for p in ckpts.glob("ckpt_*.pt")) == ["ckpt_00000010.pt"]
    second = run(["dvc", "repro"], repo, DDPM_REPRO_TRACKING="0")
    assert second.returncode == 0, second.stderr[-2000:]
    rerun = set(stages_run(second.stdout))
    assert not rerun & set(started[:-1]) and killed in rerun  # what finished is not redone
    assert f"resuming {cell} from step 10" in second.stderr
    assert run(["dvc", "status", "--json"], repo).stdout.strip() == "{}"


def test_mlflow_holds_one_run_per_cell_under_the_pipeline_run(smoke_repo):
    db = sqlite3.connect(smoke_repo / "mlflow.db")
    runs = dict(db.execute("select r.run_uuid, r.name from runs r"))
    tags = {}
    for run_id, key, value in db.execute("select run_uuid, key, value from tags"):
        tags.setdefault(run_id, {})[key] = value
    parents = [r for r, t in tags.items() if t.get("kind") == "pipeline"]
    assert len(parents) == 1
    (uri,) = db.execute("select artifact_uri from runs where run_uuid = ?", (parents[0],)).fetchone()
    report = Path(urllib.parse.urlparse(uri).path) / "report"  # the report is the parent run's artifact
    assert (report / "report.md").is_file() and (report / "plots" / "loss_curves.png").is_file()
    assert (report / "timing.md").is_file()
    parent_metrics = {k for (k,) in db.execute("select key from metrics where run_uuid = ?", (parents[0],))}
    assert "stage_seconds/train/linear-simple" in parent_metrics and "stage_seconds/report" in parent_metrics
    cells = {t["cell"]: r for r, t in tags.items() if "cell" in t}
    # one run per grid cell, one for the class-conditional cell, and the pipeline's parent run
    assert sorted(cells) == sorted([*CELLS, "cosine-hybrid-cond"]) and len(runs) == 10
    for cell, run_id in cells.items():
        t = tags[run_id]
        assert t["profile"] == "smoke" and t["mlflow.parentRunId"] == parents[0]
        assert (
            t["schedule"] == cell.split("-")[0]
            and t["loss"] == cell.split("-")[1]
            and len(t["git_commit"]) == 40
        )
        metrics = {k for (k,) in db.execute("select distinct key from metrics where run_uuid = ?", (run_id,))}
        assert {
            "train/loss",
            "final/final_loss",
            "sample/num_samples",
            "eval/nll_bpd",
            "eval/fd_classifier",
        } <= metrics
        params = dict(db.execute("select key, value from params where run_uuid = ?", (run_id,)))
        assert params["diffusion.schedule"] == cell.split("-")[0] and params["train.steps"] == "30"
    assert tags[cells["cosine-aux"]]["extension"].startswith("D3PM auxiliary loss")


@pytest.mark.parametrize(
    "dataset,message",
    [
        ("cifar10", "place cifar-10-python.tar.gz"),
        ("mnist", "place the four MNIST"),
    ],
)
def test_offline_torchvision_datasets_say_where_to_put_the_files(tmp_path, dataset, message):
    result = run(
        [
            "ddpm-repro",
            "prepare",
            "--set",
            f"data.dataset={dataset}",
            "--set",
            f"data.root={tmp_path / 'raw'}",
            "--out",
            str(tmp_path / "out"),
        ],
        tmp_path,
        timeout=120,
    )
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_default_params_define_the_eight_cell_grid(tmp_path):
    # The default pipeline's stages, resolved from params.yaml (the full run is `make run`'s job).
    repo = copy_repo(tmp_path / "repo", profile=None)
    stages = run(["dvc", "stage", "list", "--name-only"], repo, timeout=300)
    assert stages.returncode == 0, stages.stderr
    expected = (
        ["prepare", "reference"]
        + [f"{s}@{c}" for s in STAGES for c in CELLS]
        + ["report"]  # no class-conditional cells in the default profile (pipelines/digits-cond)
    )
    assert sorted(stages.stdout.split()) == sorted(expected)
    status = run(["dvc", "status", "--json"], repo, timeout=300)
    assert status.returncode == 0 and set(json.loads(status.stdout)) == set(expected)


def test_replicate_seeds_run_every_cell_again_and_the_report_averages_them(smoke_repo, tmp_path):
    # grid.replicate_seeds: [1] on the smoke run: the 8 cells again as <cell>-s1, 16 in all;
    # the unsuffixed cells are not rerun.
    repo = copy_of_run(smoke_repo, tmp_path / "repo", edit=("replicate_seeds: []", "replicate_seeds: [1]"))
    result = run(["ddpm-repro", "repro"], repo)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ran = stages_run(result.stdout)
    assert sorted(s for s in ran if s.startswith("train")) == sorted(f"train-seed@{c}-1" for c in CELLS)
    cells = sorted(p.name for p in (repo / "reports" / "cells").iterdir() if not p.name.endswith("-cond"))
    assert cells == sorted(CELLS + [f"{c}-s1" for c in CELLS])
    trained = json.loads((repo / "reports" / "cells" / "cosine-vlb-s1" / "train.json").read_text())
    first = json.loads((repo / "reports" / "cells" / "cosine-vlb" / "train.json").read_text())
    assert trained["cell"] == "cosine-vlb-s1" and trained["final_loss"] != first["final_loss"]
    md = (repo / "reports" / "report.md").read_text()
    assert "Cells with 2 training seeds (grid.replicate_seeds) show the mean over their seeds" in md
    records = list(csv.DictReader((repo / "reports" / "report.csv").open()))
    assert len(records) == 16 and {r["seed"] for r in records} == {"0", "1"}
    assert "paired over 2 seeds" in md


def ddpm_ablation_on_cpu(smoke_params: dict, ablation: dict) -> dict:
    """pipelines/ddpm-ablation's grid (its six Table 2 rows) at the smoke profile's CPU sizes."""
    params = {
        **smoke_params,
        "profile": "ddpm-ablation-cpu",
        "losses": ablation["losses"],
        "grid": ablation["grid"],
    }
    params["diffusion"] = {"timesteps": smoke_params["diffusion"]["timesteps"]}  # each row sets its mean
    params["evaluate"] = {**smoke_params["evaluate"], "curve": {}}
    params["conditional"] = {"cells": {}, "guidance_scale": 1.0}
    return params


def test_the_ddpm_ablation_report_sets_ddpm_tables_beside_its_cells(tmp_path):
    import yaml

    repo = copy_repo(tmp_path / "repo")
    ablation = yaml.safe_load((repo / "pipelines" / "ddpm-ablation" / "params.yaml").read_text())
    smoke = yaml.safe_load((repo / "params.yaml").read_text())
    (repo / "params.yaml").write_text(yaml.safe_dump(ddpm_ablation_on_cpu(smoke, ablation), sort_keys=False))
    result = run(["ddpm-repro", "repro"], repo, DDPM_REPRO_TRACKING="0")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    md = (repo / "reports" / "report.md").read_text()
    ddpm = md.split("## The parameterisation ablation beside DDPM", 1)[1].split("\n## ")[0]
    for published in (
        "| eps, L_simple | 9.46 | 3.17 | 3.75 |",
        "| mu~, L, fixed isotropic Sigma | 8.06 | 13.22 | — |",
    ):
        assert published in ddpm
    assert ddpm.count("| linear-") == 6
    claims = md.split("## The papers' claims on this run", 1)[1].split("\n## ")[0]
    ddpm_claims = [line for line in claims.splitlines() if "(DDPM Table 2" in line]
    assert len(ddpm_claims) == 3
    assert all(
        line.rstrip(" |").rsplit("| ", 1)[1] in ("holds", "contradicted", "not resolved")
        for line in ddpm_claims
    )
