"""The trainer's parts on their own: the EMA of the weights and the CSV metrics log."""

import pytest
import torch
from torch import nn

from ddpm_repro.training.ema import EMA
from ddpm_repro.training.metrics_log import FIELDS, CsvMetricsLog


def test_ema_rate_warms_up_then_holds():
    ema = EMA(nn.Linear(2, 2), rate=0.999)
    assert ema.rate_at(0) == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    assert ema.rate_at(90) == pytest.approx(91 / 100)
    assert ema.rate_at(10**6) == 0.999  # the warm-up rate would exceed it


def test_ema_update_is_the_lerp_of_every_float_tensor_and_copies_the_rest():
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = EMA(model, rate=0.5)
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        model[1].num_batches_tracked.fill_(7)
    ema.update(model, step=10**6)  # rate 0.5 after warm-up
    for key, value in model.state_dict().items():
        shadow = ema.state_dict()[key]
        if value.is_floating_point():
            torch.testing.assert_close(shadow, 0.5 * before[key] + 0.5 * value.float())
        else:
            assert torch.equal(shadow, value)  # integer buffers are copied, not averaged
    assert ema.state_dict()["1.num_batches_tracked"].item() == 7


def test_ema_shadow_is_float32_and_its_state_round_trips():
    model = nn.Linear(2, 2).to(torch.bfloat16)
    ema = EMA(model, rate=0.9)
    assert all(v.dtype == torch.float32 for v in ema.state_dict().values())
    other = EMA(nn.Linear(2, 2), rate=0.9)
    other.load_state_dict(ema.state_dict())
    for key in ema.state_dict():
        assert torch.equal(other.state_dict()[key], ema.state_dict()[key])
    with pytest.raises(ValueError, match="does not match"):
        other.load_state_dict({"weight": torch.zeros(2, 2)})


def test_metrics_log_appends_rows_and_a_resume_drops_the_later_ones(tmp_path):
    path = tmp_path / "sub" / "loss.csv"
    log = CsvMetricsLog(path)
    assert not path.exists()
    log.on_start(0, tmp_path)
    assert path.read_text().strip() == ",".join(FIELDS)  # the header, written when training starts
    for step in (10, 20, 30):
        log.on_metrics(step, {"loss": 1.0 / step, "lr": 1e-3})
    assert [r["step"] for r in log.rows()] == ["10", "20", "30"]
    assert log.last() == {"loss": pytest.approx(1 / 30, rel=1e-5), "lr": 1e-3}  # absent fields: empty
    assert log.rows()[-1]["mse"] == ""
    # a run resumed from the step-20 checkpoint: row 30 is dropped, the new one appended
    resumed = CsvMetricsLog(path)
    resumed.on_start(20, tmp_path)
    assert [r["step"] for r in resumed.rows()] == ["10", "20"]
    resumed.on_metrics(30, {"loss": 0.5})
    assert [(r["step"], r["loss"]) for r in resumed.rows()][-1] == ("30", "0.5")


def test_metrics_log_resumed_at_its_last_row_keeps_the_file(tmp_path):
    path = tmp_path / "loss.csv"
    log = CsvMetricsLog(path)
    log.on_start(0, tmp_path)
    log.on_metrics(5, {"loss": 2.0})
    text = path.read_text()
    CsvMetricsLog(path).on_start(5, tmp_path)
    assert CsvMetricsLog(path).rows()[-1]["loss"] == "2"
    assert path.read_text() == text
