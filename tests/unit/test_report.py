"""The report stage's files (report.md, report.csv, steps.csv, report.tex, plots) from
fixture rows, the inputs read from disk, and the paper numbers shipped in the package."""

import csv
import json
import re
from importlib import resources

import pytest

from ddpm_repro.config import Config, config_from_dict
from ddpm_repro.errors import UserError
from ddpm_repro.reporting import collect_cells, collect_conditional, write_report
from ddpm_repro.reporting.markdown import _nll_method
from ddpm_repro.reporting.paper import CIFAR10, D3PM, DDPM, IMAGENET64, paper_row, paper_tables
from ddpm_repro.stage_outputs import EVAL, NLL, TRAIN

from .test_report_claims import DDPM_ENTRIES, SETTINGS, grid_rows

CELLS = [r["cell"] for r in grid_rows()]
CONDITIONAL = {
    "cell": "cosine-hybrid",
    "schedule": "cosine",
    "loss": "hybrid",
    "guidance_scale": 2.0,
    "class_accuracy": 0.875,
    "per_class_accuracy": {str(k): 0.8 + 0.01 * k for k in range(10)},
    "nll_bpd": 4.3,
    "fd_classifier": 9.0,
}
REFERENCE = {"classifier_test_accuracy": 0.955, "fd_test_vs_train": 3.3, "is_test": 8.8, "test_images": 359}


def missing_rows() -> list[dict]:
    """The grid with holes: linear-simple has nothing but its name, no cell has a step
    curve or an Inception FID (with the evaluate stage's note why)."""
    rows = grid_rows()
    for r in rows:
        del r["step_curve"], r["fid_inception"]
        r["fid_note"] = "Inception weights not found at /nowhere"
    rows[0] = {"cell": "linear-simple", "schedule": "linear", "loss": "simple", **SETTINGS["simple"]}
    return rows


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    return out, write_report(Config(), grid_rows(), out, REFERENCE, CONDITIONAL)


@pytest.fixture(scope="module")
def holes(tmp_path_factory):
    out = tmp_path_factory.mktemp("holes")
    return out, write_report(Config(), missing_rows(), out)


def table_rows(markdown: str, heading: str) -> dict[str, list[str]]:
    """The first table under `heading` in report.md: its body rows by first cell."""
    section = markdown.split(f"## {heading}\n", 1)[1]
    lines = [line for line in section.split("\n## ")[0].splitlines() if line.startswith("|")]
    header, body = lines[0], lines[2:]
    cells = [[c.strip() for c in line.strip("|").split(" | ")] for line in [header, *body]]
    return {" ".join(c[:2]) if c[0] in ("linear", "cosine") else c[0]: c for c in cells}


def test_the_paper_data_ships_in_the_package_with_its_sources():
    assert resources.files("ddpm_repro.reporting").joinpath("paper_tables.json").is_file()
    tables = paper_tables()
    assert {t["source"]["table"] for t in tables.values()} == {"Table 1", "Table 2", "Table 3", "Tables 1-2"}
    # Hand-checked against /work/shared/reference/paper_tables.md (the papers' tables):
    # Improved DDPM Table 2, CIFAR-10, T=4K cosine L_vlb: NLL 2.94, FID 11.47.
    assert paper_row(CIFAR10, 4000, schedule="cosine", objective="vlb") == {
        "iters": 500000,
        "T": 4000,
        "schedule": "cosine",
        "objective": "vlb",
        "nll": 2.94,
        "fid": 11.47,
    }
    # Improved DDPM Table 1, ImageNet 64, 200K its, T=4K cosine L_hybrid: 3.62 / 28.0 (not the 1.5M row).
    assert paper_row(IMAGENET64, 4000, schedule="cosine", objective="hybrid")["fid"] == 28.0
    # Table 2 at T=1K linear L_simple: 3.73 / 3.29; at T=4K: 3.37 / 2.90.
    assert paper_row(CIFAR10, 1000, schedule="linear", objective="simple")["nll"] == 3.73
    assert paper_row(CIFAR10, 4000, schedule="linear", objective="simple")["nll"] == 3.37
    # D3PM Table 3, Gauss L_lambda=0.001: IS 8.54, FID 8.34, NLL 3.975.
    d3pm = paper_row(D3PM, transition="Gauss", objective="aux")
    assert (d3pm["is"], d3pm["fid"], d3pm["nll"]) == (8.54, 8.34, 3.975)
    assert paper_row(CIFAR10, 4000, schedule="linear", objective="vlb") is None
    # DDPM Table 2: mu~ with L and a fixed Sigma IS 8.06 / FID 13.22; Table 1: L_simple NLL <= 3.75.
    mean_fixed = paper_row(DDPM, mean_type="previous_x", var="fixed", objective="vlb")
    assert (mean_fixed["is"], mean_fixed["fid"]) == (8.06, 13.22)
    assert paper_row(DDPM, mean_type="epsilon", var="fixed", objective="simple")["nll"] == 3.75
    assert paper_row(DDPM, mean_type="epsilon", var="learned", objective="vlb")["note"] == "unstable"


def test_write_report_returns_every_file_it_wrote(full):
    out, paths = full
    names = {p.relative_to(out).as_posix() for p in paths}
    assert names == {
        "report.md",
        "report.csv",
        "steps.csv",
        "report.tex",
        "summary.json",
        "plots/loss_curves.png",
        "plots/nll_fd.png",
        "plots/sampling_steps.png",
        "plots/class_accuracy.png",
    }
    for p in paths:
        assert p.stat().st_size > 0
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_paper_numbers_stand_beside_ours_in_the_right_rows(full):
    out, _ = full
    md = (out / "report.md").read_text()
    main = table_rows(md, "Results")
    # columns: schedule, objective, train loss, NLL, FD [95%], KID, IS, FID, C10 NLL, C10 FID, IN64 NLL,
    # IN64 FID
    assert main["cosine L_vlb"][3:6] == ["3.800 ± 0.020", "25.00 [24.40, 25.60]", "25.00 ± 0.30"]
    assert main["cosine L_vlb"][8:] == [
        "2.94 (T=4K)",
        "11.47 (T=4K)",
        "3.57 (T=4K)",
        "56.7 (T=4K)",
    ]
    assert main["linear L_simple"][8:] == ["3.73", "3.29", "3.99", "32.5"]  # the T=1K rows match our T
    assert main["linear L_vlb"][8:] == ["—"] * 4
    assert main["cosine L_aux (extension)"][8:] == ["—"] * 4
    d3pm = table_rows(md, "The auxiliary loss beside D3PM")
    assert d3pm["linear-vlb"][6:] == ["Gauss, L_vb", "3.966", "7.75", "15.30"]
    assert d3pm["cosine-aux (extension)"][6:] == ["Gauss, L_lambda=0.001", "3.975", "8.54", "8.34"]
    # the caption says which x_0-distribution and which timestep samplers ran
    assert "under the 'posterior' x_0-distribution" in md
    assert "'loss-second-moment' for aux and 'loss-second-moment' for vlb" in md
    assert "Not the papers' setting" in md and "profile `default`" in md and "T = 1000" in md


def test_the_claims_and_the_conditional_run_are_shown(full):
    out, _ = full
    md = (out / "report.md").read_text()
    claims = table_rows(md, "The papers' claims on this run")
    assert [c[-1] for key, c in claims.items() if key != "claim"] == ["holds"] * 5
    conditional = md.split("## Class-conditional run", 1)[1]
    assert "cosine-hybrid, guidance scale 2.00" in conditional and "0.875" in conditional
    assert "| accuracy | 0.800 | 0.810 |" in conditional and "![" in conditional
    assert "![Sample quality vs sampling steps (Improved DDPM Fig. 8)](plots/sampling_steps.png)" in md


def test_missing_numbers_are_not_computed_never_a_number(holes):
    out, paths = holes
    md = (out / "report.md").read_text()
    linear_simple = table_rows(md, "Results")["linear L_simple"]
    assert linear_simple[2:8] == ["not computed"] * 6
    assert table_rows(md, "Results")["cosine L_vlb"][7] == "not computed"  # no FID anywhere
    assert "FID (Inception): not computed (Inception weights not found at /nowhere)." in md
    assert "Sample quality vs sampling steps (Improved DDPM Fig. 8): not computed." in md
    assert "Not computed: no class-conditional run" in md
    assert {p.name for p in paths} >= {"loss_curves.png", "nll_fd.png"}
    assert not {"sampling_steps.png", "class_accuracy.png"} & {p.name for p in paths}
    record = next(csv.DictReader((out / "report.csv").open()))
    assert (
        record["cell"] == "linear-simple" and record["nll_bpd"] == record["fd_classifier"] == "not computed"
    )
    assert (out / "steps.csv").read_text() == (
        "cell,schedule,loss,method,steps,samples,fd_classifier,fd_classifier_se,fd_ratio,fd_ratio_se\n"
    )


def test_report_csv_and_steps_csv_parse_back(full):
    out, _ = full
    records = list(csv.DictReader((out / "report.csv").open()))
    assert [r["cell"] for r in records] == CELLS
    by_cell = {r["cell"]: r for r in records}
    assert (
        float(by_cell["cosine-vlb"]["nll_bpd"]) == pytest.approx(3.80, abs=1e-12)
        and by_cell["cosine-vlb"]["profile"] == "default"
    )
    points = list(csv.DictReader((out / "steps.csv").open()))
    assert len(points) == 8 * 8  # 5 ancestral + 3 DDIM per cell
    first = points[0]
    assert (first["cell"], first["method"], first["steps"]) == ("linear-simple", "ancestral", "10")
    assert float(first["fd_ratio"]) == 3.5 and float(first["fd_ratio_se"]) == 0.05


def test_latex_is_escaped_booktabs_with_balanced_environments(full):
    out, _ = full
    tex = (out / "report.tex").read_text()
    # five tables: results, d3pm, ddpm (linear-simple is DDPM's eps L_simple), claims, per class
    assert tex.count(r"\begin{tabular}") == tex.count(r"\end{tabular}") == 5
    assert tex.count(r"\begin{table}") == tex.count(r"\end{table}") == 5
    assert tex.count(r"\toprule") == tex.count(r"\midrule") == tex.count(r"\bottomrule") == 5
    body = "\n".join(line for line in tex.splitlines() if not line.startswith("%"))
    assert "L\\_simple" in body and not re.search(r"(?<!\\)_", body)  # every underscore escaped
    assert "$\\pm$" in body and "±" not in body
    tabulars = re.findall(r"^\\begin\{tabular\}\{([^\n]*)\}$(.*?)\\end\{tabular\}", tex, re.S | re.M)
    assert len(tabulars) == 5
    for spec, rows in tabulars:
        columns = len(re.sub(r"\{[^}]*\}", "", spec))  # l, r, p{width}: one letter each
        for line in rows.splitlines():
            if line.endswith(r"\\"):
                assert line.count(" & ") == columns - 1, line


def stage_output(output, **values) -> str:
    """A stage output file's JSON with every declared key (None unless given)."""
    return json.dumps({**dict.fromkeys(output.required), **values})


def test_collect_cells_and_conditional_read_the_stage_outputs(tmp_path):
    cells_dir = tmp_path / "reports" / "cells"
    (cells_dir / "linear-simple").mkdir(parents=True)
    (cells_dir / "linear-simple" / "train.json").write_text(
        stage_output(TRAIN, cell="linear-simple", final_loss=0.1)
    )
    (cells_dir / "linear-simple" / "nll.json").write_text(stage_output(NLL, nll_bpd=4.5))
    (cells_dir / "linear-simple" / "eval.json").write_text(stage_output(EVAL))
    (cells_dir / "linear-simple" / "loss.csv").write_text(
        "step,loss,mse,vb,aux,grad_norm,lr,images_per_s\n50,0.7,0.7,,,2.9,0.0002,800\n"
    )
    (cells_dir / "linear-simple" / "samples.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    config = config_from_dict({"grid": {"schedules": ["linear", "cosine"], "losses": ["simple", "vlb"]}})
    rows = collect_cells(cells_dir, config)
    assert [r["cell"] for r in rows] == ["linear-simple", "linear-vlb", "cosine-simple", "cosine-vlb"]
    assert rows[0]["final_loss"] == 0.1 and rows[0]["nll_bpd"] == 4.5 and rows[0]["fid_inception"] is None
    assert rows[0]["loss_curve"]["loss"] == [0.7] and rows[0]["loss_curve"]["vb"] == [None]
    assert rows[3] == {
        "cell": "cosine-vlb",
        "schedule": "cosine",
        "loss": "vlb",
        "seed": 0,
        **SETTINGS["vlb"],
    }
    assert collect_conditional(tmp_path / "reports" / "conditional", config) is None
    conditional_dir = tmp_path / "reports" / "conditional"
    conditional_dir.mkdir()
    (conditional_dir / "eval.json").write_text(
        stage_output(EVAL, **{k: v for k, v in CONDITIONAL.items() if k in EVAL.required | EVAL.optional})
    )
    conditional = collect_conditional(conditional_dir, config)
    assert conditional["schedule"] == "cosine" and conditional["per_class_accuracy"]["9"] == pytest.approx(
        0.89
    )
    out = tmp_path / "reports"
    write_report(config, rows, out, conditional=conditional)
    md = (out / "report.md").read_text()
    assert "![linear-simple](cells/linear-simple/samples.png)" in md  # relative to report.md
    assert "| L_vlb | not computed | not computed |" in md  # no samples.png for linear-vlb nor cosine-vlb


def test_a_renamed_key_in_a_cell_output_fails_instead_of_showing_not_computed(tmp_path):
    folder = tmp_path / "cells" / "cosine-vlb"
    folder.mkdir(parents=True)
    values = json.loads(stage_output(NLL, nll_bpd=4.5))
    values["nll_bits"] = values.pop("nll_bpd")
    (folder / "nll.json").write_text(json.dumps(values))
    with pytest.raises(
        UserError, match=r"nll.json': missing keys \['nll_bpd'\]; undeclared keys \['nll_bits'\]"
    ):
        collect_cells(
            tmp_path / "cells", config_from_dict({"grid": {"schedules": ["cosine"], "losses": ["vlb"]}})
        )


def test_only_an_extension_objective_is_labelled_so():
    from ddpm_repro.diffusion import LossType
    from ddpm_repro.reporting.tables import objective_label

    assert [t for t in LossType if t.is_extension] == [LossType.AUX]
    assert objective_label({"loss": "aux", "objective": "aux"}) == "L_aux (extension)"
    assert objective_label({"loss": "vlb", "objective": "vlb"}) == "L_vlb"
    # a renamed entry is labelled by its objective, with its name beside it
    assert objective_label({"loss": "mean-vlb-learned", "objective": "vlb"}) == "L_vlb (mean-vlb-learned)"


def test_renamed_entries_keep_their_paper_columns_and_claims(tmp_path):
    # The same grid, its `losses` entries renamed: the report keys on what each entry trains.
    from .test_report_claims import SETTINGS

    renamed = {loss: f"my-{loss}" for loss in SETTINGS}
    config = config_from_dict(
        {
            "losses": {renamed[k]: {**v, "objective": k} for k, v in SETTINGS.items()},
            "grid": {"schedules": ["linear", "cosine"], "losses": list(renamed.values())},
        }
    )
    rows = grid_rows()
    for r in rows:
        r["loss"], r["cell"] = renamed[r["loss"]], f"{r['schedule']}-{renamed[r['loss']]}"
    write_report(config, rows, tmp_path)
    md = (tmp_path / "report.md").read_text()
    results = table_rows(md, "Results")
    assert results["cosine L_vlb (my-vlb)"][-4:] == [
        "2.94 (T=4K)",
        "11.47 (T=4K)",
        "3.57 (T=4K)",
        "56.7 (T=4K)",
    ]
    assert results["linear L_simple (my-simple)"][-4] == "3.73"  # Improved DDPM Table 2 at T = 1K
    claims = table_rows(md, "The papers' claims on this run")
    assert len(claims) == 1 + 5 and all(c[-1] == "holds" for c in list(claims.values())[1:])
    assert "cosine-my-aux (extension)" in table_rows(md, "The auxiliary loss beside D3PM")


def test_the_ddpm_ablation_cells_stand_beside_ddpm_tables_1_and_2(tmp_path):
    from .test_report_claims import ddpm_rows

    config = config_from_dict(
        {
            "losses": {name: {**s, "timestep_sampler": "uniform"} for name, s in DDPM_ENTRIES.items()},
            "grid": {"schedules": ["linear"], "losses": list(DDPM_ENTRIES)},
        }
    )
    write_report(config, ddpm_rows(), tmp_path)
    md = (tmp_path / "report.md").read_text()
    ddpm = table_rows(md, "The parameterisation ablation beside DDPM")
    assert ddpm["linear-eps-simple"][-4:] == ["eps, L_simple", "9.46", "3.17", "3.75"]
    assert ddpm["linear-mean-vlb-fixed"][-4:] == ["mu~, L, fixed isotropic Sigma", "8.06", "13.22", "—"]
    assert ddpm["linear-eps-vlb-learned"][-3:] == ["unstable", "unstable", "—"]
    # Improved DDPM's columns: only eps + L_simple with a fixed variance is one of its rows
    results = table_rows(md, "Results")
    assert results["linear L_simple (eps-simple)"][-4] == "3.73"
    assert results["linear L_vlb (eps-vlb-fixed)"][-4:] == ["—"] * 4
    claims = table_rows(md, "The papers' claims on this run")
    verdicts = [c[-1] for c in list(claims.values())[1:]]
    assert len(verdicts) == 3 and all(v in ("holds", "contradicted", "not resolved") for v in verdicts)
    assert "No cell of this grid trains Improved DDPM's L_vlb or the aux loss" in md


def test_cells_with_replicates_show_the_mean_and_its_standard_error_over_seeds(tmp_path):
    from .test_report_claims import seeded_rows

    rows = seeded_rows([0.10, 0.12, 0.08])
    for r in rows:  # FD 10, 11, 12 over the three seeds of cosine-simple
        if r["schedule"] == "cosine" and r["loss"] == "simple":
            r["fd_classifier"] = 10.0 + r["seed"]
    config = config_from_dict({"grid": {"replicate_seeds": [1, 2]}})
    assert len(config.grid.cells) == 24 and config.grid.cells[8] == "linear-simple-s1"
    write_report(config, rows, tmp_path)
    md = (tmp_path / "report.md").read_text()
    cosine_simple = table_rows(md, "Results")["cosine L_simple"]
    assert cosine_simple[4] == "11.00 ± 0.58"  # mean of 10, 11, 12; s.e. 1 / sqrt(3)
    assert "Cells with 3 training seeds (grid.replicate_seeds) show the mean" in md
    assert len(table_rows(md, "Results")) == 1 + 8  # one row per cell, not per seed
    records = list(csv.DictReader((tmp_path / "report.csv").open()))
    assert len(records) == 24 and records[8]["cell"] == "linear-simple-s1" and records[8]["seed"] == "1"


def test_a_seed_without_a_figure_leaves_that_cells_mean_not_computed():
    from ddpm_repro.reporting.cells import over_seeds

    from .test_report_claims import seeded_rows

    rows = seeded_rows([0.10, 0.12, 0.08])
    cosine_simple = [r for r in rows if r["schedule"] == "cosine" and r["loss"] == "simple"]
    cosine_simple[2]["fd_classifier"] = None  # seed 2's evaluation has not run
    merged = {(r["schedule"], r["loss"]): r for r in over_seeds(rows)}
    assert merged["cosine", "simple"]["seeds"] == 3
    assert merged["cosine", "simple"]["fd_classifier"] is None  # not a mean of two of the three seeds
    assert merged["cosine", "simple"]["fd_classifier_se"] is None
    assert merged["cosine", "simple"]["nll_bpd"] is not None  # every seed has its NLL


@pytest.mark.parametrize(
    "spacing, words",
    [
        ("geometric", "each of 50 geometric strata, whose widths grow with t"),
        ("uniform", "each of 50 equal strata;"),
        (None, "each of 50 strata;"),  # an nll.json from before the field: no word
    ],
)
def test_the_nll_method_names_the_strata_the_estimate_drew_from(spacing, words):
    row = {"nll_bpd": 3.1, "nll_estimate": "stratified", "nll_terms": 51, "nll_strata_spacing": spacing}
    assert words in _nll_method([row])


def _fid_line(out_dir) -> str:
    return next(
        x for x in (out_dir / "report.md").read_text().splitlines() if x.startswith("- FID (Inception):")
    )


def test_a_computed_fid_says_what_keeps_it_from_the_papers_fids(tmp_path, full):
    config = config_from_dict({"data": {"dataset": "cifar10", "image_size": 32}})
    write_report(config, grid_rows(), tmp_path, {**REFERENCE, "inception": {"train_images": 50000}})
    line = _fid_line(tmp_path)
    assert "pytorch-fid's Inception-v3 features" in line and "train_images 50000" in line
    assert "TensorFlow" in line and "the papers used 50K, this report 100 per cell" in line
    assert "not computed" not in line
    digits = _fid_line(full[0])  # the digits default: not comparable at all, so no caveat
    assert "not comparable with published FIDs" in digits and "50K" not in digits
