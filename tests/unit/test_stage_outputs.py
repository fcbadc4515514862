import json

import pytest

from ddpm_repro.errors import UserError
from ddpm_repro.stage_outputs import EVAL, NLL, TRAIN, StageOutput

TOY = StageOutput("toy.json", frozenset({"a", "b"}), frozenset({"c"}))


def test_write_then_read_round_trips_and_optional_keys_may_be_absent(tmp_path):
    TOY.write(tmp_path / "toy.json", {"a": 1, "b": None})
    assert TOY.read(tmp_path / "toy.json") == {"a": 1, "b": None}
    TOY.write(tmp_path / "toy.json", {"a": 1, "b": 2, "c": 3})
    assert TOY.read(tmp_path / "toy.json")["c"] == 3


def test_a_writer_that_drops_or_renames_a_key_fails_before_writing(tmp_path):
    with pytest.raises(RuntimeError, match=r"missing keys \['b'\]; undeclared keys \['bb'\]"):
        TOY.write(tmp_path / "toy.json", {"a": 1, "bb": 2})
    assert not (tmp_path / "toy.json").exists()


def test_a_file_with_a_missing_or_renamed_key_fails_to_read_naming_file_and_key(tmp_path):
    path = tmp_path / "eval.json"
    path.write_text(json.dumps({"a": 1}))
    with pytest.raises(UserError, match=r"eval.json': missing keys \['b'\]"):
        TOY.read(path)
    path.write_text(json.dumps({"a": 1, "b": 2, "d": 4}))
    with pytest.raises(UserError, match=r"undeclared keys \['d'\]"):
        TOY.read(path)
    path.write_text("{not json")
    with pytest.raises(UserError, match="is not valid JSON"):
        TOY.read(path)


def test_the_declared_files_are_the_ones_the_report_reads():
    assert (TRAIN.filename, NLL.filename, EVAL.filename) == ("train.json", "nll.json", "eval.json")
    assert {"nll_bpd", "nll_bpd_se"} <= NLL.required and "fd_classifier" in EVAL.required


def test_the_inception_figures_of_an_online_run_are_declared_keys():
    # offline runs never reach the Inception branch; its keys must still pass EVAL.write
    import numpy as np

    from ddpm_repro.evaluation.reference import sample_quality

    rng = np.random.default_rng(0)
    features, reference = rng.normal(size=(12, 3)), rng.normal(size=(20, 3))
    inception = sample_quality(
        features, reference, reference.mean(0), np.cov(reference.T), "fid_inception", "kid_inception", 5, 3
    )
    assert inception["kid_inception"] is not None
    assert EVAL.problems({**dict.fromkeys(EVAL.required), **inception}) == []
