"""The CI regression: the shared smoke run against pipelines/smoke/pins.json, and the named
changes it must catch, each shown to move a pinned metric beyond its tolerance."""

import json
import os

import pytest

from ddpm_repro import cli
from ddpm_repro.config import load_config
from ddpm_repro.regression import compare, load_pins, read_metrics

from .conftest import REPO, copy_of_run, run

PINS = REPO / "pipelines" / "smoke" / "pins.json"
SMOKE = REPO / "pipelines" / "smoke" / "params.yaml"


def regression(repo, *extra):
    return run(
        ["ddpm-repro", "regression", "--params", "params.yaml", "--cells-dir", "reports/cells", *extra], repo
    )


def test_the_smoke_run_matches_the_pins(smoke_repo):
    # `make repin` sets DDPM_REPRO_REPIN=1: this run's values become the pins (tolerances kept).
    if os.environ.get("DDPM_REPRO_REPIN") == "1":
        result = regression(smoke_repo, "--pins", str(PINS), "--update")
        assert result.returncode == 0, result.stderr
    result = regression(smoke_repo, "--pins", str(PINS))
    assert result.returncode == 0, "\n" + result.stdout + result.stderr
    assert "all 24 pinned metrics within tolerance" in result.stdout


def test_a_lambda_times_ten_is_caught_end_to_end(smoke_repo, tmp_path):
    repo = copy_of_run(smoke_repo, tmp_path / "repo", edit=("hybrid_lambda: 0.001", "hybrid_lambda: 0.01"))
    assert run(["dvc", "repro"], repo, DDPM_REPRO_TRACKING="0").returncode == 0
    result = regression(repo, "--pins", str(PINS))
    assert result.returncode == 1
    failed = [line for line in result.stdout.splitlines() if "**FAIL**" in line]
    assert failed and all("-hybrid |" in line for line in failed), result.stdout
    assert "| cell | metric | pinned | got | got − pinned | tolerance |" in result.stdout
    assert "re-pin: ddpm-repro regression --update" in result.stdout


def _run_cell(tmp_path, cell, data_dir, reference_dir, overrides=()):
    """train, sample, nll and evaluate one smoke cell in-process (so a test can patch the code)."""
    sets = [x for o in overrides for x in ("--set", o)]
    out = tmp_path / cell
    common = ["--params", str(SMOKE), "--no-progress"]
    train = ["train", *common, "--cell", cell, *sets, "--data", str(data_dir / "train.npz")]
    assert (
        cli.main([*train, "--checkpoint-dir", str(out / "ckpt"), "--metrics", str(out / "train.json")]) == 0
    )
    assert cli.main(["sample", *common, "--checkpoint", str(out / "ckpt"), "--out", str(out / "s.npz")]) == 0
    checkpoint = ["--checkpoint", str(out / "ckpt")]
    nll = ["nll", *common, *checkpoint, "--data", str(data_dir / "test.npz"), "--out", str(out / "nll.json")]
    assert cli.main(nll) == 0
    inputs = ["--samples", str(out / "s.npz"), "--reference", str(reference_dir)]
    assert cli.main(["evaluate", *common, *checkpoint, *inputs, "--out", str(out / "eval.json")]) == 0
    return read_metrics(tmp_path, [cell])[cell]


def _drop_the_decoder(monkeypatch):
    from ddpm_repro.diffusion.gaussian_diffusion import GaussianDiffusion

    original = GaussianDiffusion._vb_terms_bpd

    def without_decoder(self, p_out, x_start, x_t, t, min_prob=0.0):
        vb = original(self, p_out, x_start, x_t, t, min_prob)
        return vb * (t > 0)  # L_0 silently dropped from the loss and the bound

    monkeypatch.setattr(GaussianDiffusion, "_vb_terms_bpd", without_decoder)


MUTATIONS = {
    # name: (cell that runs, overrides, patch); the pins compared are those of linear-hybrid
    "wrong schedule": ("cosine-hybrid", (), None),
    "EMA off": ("linear-hybrid", ("train.ema_rate=0.0",), None),
    "lambda x10": ("linear-hybrid", ("losses.hybrid.hybrid_lambda=0.01",), None),
    "decoder term dropped": ("linear-hybrid", (), _drop_the_decoder),
}


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_each_named_change_moves_a_pinned_metric_beyond_its_tolerance(
    name, smoke_repo, tmp_path, monkeypatch
):
    cell, overrides, patch = MUTATIONS[name]
    monkeypatch.setenv("DDPM_REPRO_TRACKING", "0")
    if patch is not None:
        patch(monkeypatch)
    got = _run_cell(tmp_path, cell, smoke_repo / "data" / "prepared", smoke_repo / "reference", overrides)
    pins = load_pins(PINS)
    pins["cells"] = {"linear-hybrid": pins["cells"]["linear-hybrid"]}
    checks = compare(pins, {"linear-hybrid": got})
    moved = {c.metric: round((c.got - c.pinned) / c.pinned, 4) for c in checks if not c.ok}
    print(f"{name}: relative change of the metrics beyond tolerance {json.dumps(moved)}")
    assert moved, f"{name} was not caught: {checks}"


def test_the_pins_cover_the_smoke_grid_and_every_tolerance_says_where_it_came_from():
    pins = load_pins(PINS)
    assert sorted(pins["cells"]) == sorted(load_config(SMOKE).grid.cells)
    for tol in pins["tolerances"].values():
        assert tol["abs"] >= 0 and tol["rel"] >= 0 and tol["measured"]
