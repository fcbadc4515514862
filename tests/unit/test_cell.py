"""Cell names are parsed in one place: <schedule>-<loss entry>[-s<seed>][-cond]."""

import pytest

from ddpm_repro.cell import Cell
from ddpm_repro.errors import UserError


@pytest.mark.parametrize(
    "text,cell",
    [
        ("cosine-hybrid", Cell("cosine", "hybrid")),
        ("linear-mean-vlb-learned", Cell("linear", "mean-vlb-learned")),  # entries may hold dashes
        ("cosine-hybrid-s2", Cell("cosine", "hybrid", seed=2)),
        ("cosine-hybrid-cond", Cell("cosine", "hybrid", cond=True)),
        ("linear-vlb-s10-cond", Cell("linear", "vlb", seed=10, cond=True)),
    ],
)
def test_a_cell_name_parses_and_prints_back(text, cell):
    assert Cell.parse(text) == cell and str(cell) == text


@pytest.mark.parametrize("text", ["cosine", "-hybrid", "cosine-", "cosine-cond"])
def test_a_name_without_schedule_and_loss_is_refused_by_name(text):
    with pytest.raises(UserError, match=f"cell '{text}' is not of the form <schedule>-<loss>"):
        Cell.parse(text)


@pytest.mark.parametrize(
    "text,stage",
    [
        ("cosine-hybrid", "train@cosine-hybrid"),
        ("cosine-hybrid-s2", "train-seed@cosine-hybrid-2"),
        ("cosine-hybrid-cond", "train-cond@cosine-hybrid"),
    ],
)
def test_a_cell_names_the_dvc_stage_that_runs_it(text, stage):
    assert Cell.parse(text).stage("train") == stage
