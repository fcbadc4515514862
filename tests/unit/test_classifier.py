"""The offline feature classifier and the Inception-Score analogue."""

import numpy as np
import pytest
import torch

from ddpm_repro.data.arrays import split
from ddpm_repro.data.digits import load_digits
from ddpm_repro.evaluation.classifier import (
    classifier_from_state,
    classifier_state,
    inception_score_analogue,
    predict,
    train_classifier,
)
from ddpm_repro.evaluation.frechet import feature_statistics, frechet_distance


@pytest.fixture(scope="module")
def trained():
    train, test = split(load_digits(), 0.2, seed=0)
    return train_classifier(train, epochs=6, batch_size=64, lr=1e-3, seed=0), train, test


def test_the_classifier_recognises_held_out_digits(trained):
    model, _, test = trained
    _, probs = predict(model, test.images)
    assert (probs.argmax(1) == test.labels).mean() > 0.9


def test_real_images_are_closer_to_the_training_set_than_noise_and_blanks(trained):
    model, train, test = trained
    mu, sigma = feature_statistics(predict(model, train.images)[0])
    fd_test = frechet_distance(*feature_statistics(predict(model, test.images)[0]), mu, sigma)
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, size=test.images.shape, dtype=np.uint8)
    blank = np.zeros_like(test.images)
    blank[:, 2:6, 3:5] = 255
    fd_noise = frechet_distance(*feature_statistics(predict(model, noise)[0]), mu, sigma)
    fd_blank = frechet_distance(*feature_statistics(predict(model, blank)[0]), mu, sigma)
    assert fd_test < 0.2 * min(fd_noise, fd_blank)


def test_classifier_state_round_trips_through_weights_only_load(trained, tmp_path):
    model, _, test = trained
    torch.save(classifier_state(model), tmp_path / "c.pt")
    again = classifier_from_state(torch.load(tmp_path / "c.pt", weights_only=True))
    a, b = predict(model, test.images[:20]), predict(again, test.images[:20])
    np.testing.assert_array_equal(a[0], b[0])


def test_inception_score_analogue_closed_forms():
    k = 10
    confident_and_balanced = np.eye(k)[np.arange(100) % k]  # every class, each predicted surely
    assert inception_score_analogue(confident_and_balanced) == pytest.approx(k, rel=1e-6)
    assert inception_score_analogue(np.full((50, k), 1 / k)) == pytest.approx(1.0)
    one_class = np.eye(k)[np.zeros(40, dtype=int)]  # sure, but always the same class
    assert inception_score_analogue(one_class) == pytest.approx(1.0, rel=1e-6)


def test_training_reports_each_epoch_with_its_loss_off_a_terminal(capsys, monkeypatch):
    monkeypatch.setenv("DDPM_REPRO_LOG_INTERVAL", "0")  # a line per epoch
    train, _ = split(load_digits(), 0.2, seed=0)
    train_classifier(train, epochs=2, batch_size=256, lr=1e-3, seed=0, progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert [x.split(",")[0] for x in lines] == ["classifier: epoch 1/2 (50%)", "classifier: epoch 2/2 (100%)"]
    assert all(", loss " in x for x in lines)
