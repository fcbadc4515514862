"""The reference set of the offline metric: the classifier trained on the training split and
its training-set feature statistics, written by the `reference` stage and read by
`evaluate` to score samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data.arrays import ImageArrays
from ..io import atomic_write
from .classifier import (
    classifier_from_state,
    classifier_state,
    inception_score_analogue,
    predict,
    train_classifier,
)
from .frechet import feature_statistics, frechet_distance

CLASSIFIER_FILE, STATS_FILE = "classifier.pt", "train_features.npz"


def build_reference(
    train: ImageArrays,
    test: ImageArrays,
    out_dir: str | Path,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    feature_dim: int,
    progress: bool = False,
) -> dict[str, float]:
    """Train the classifier, write it and the training features' mean and covariance to
    out_dir; return its test accuracy and what real held-out images score (FD, IS)."""
    model = train_classifier(train, epochs, batch_size, lr, seed, feature_dim, progress=progress)
    train_features, _ = predict(model, train.images)
    test_features, test_probs = predict(model, test.images)
    mu, sigma = feature_statistics(train_features)
    out = Path(out_dir)
    atomic_write(out / CLASSIFIER_FILE, lambda f: torch.save(classifier_state(model), f))
    atomic_write(out / STATS_FILE, lambda f: np.savez(f, mu=mu, sigma=sigma, n=len(train_features)))
    return {
        "classifier_test_accuracy": float((test_probs.argmax(1) == test.labels).mean()),
        "fd_test_vs_train": frechet_distance(*feature_statistics(test_features), mu, sigma),
        "is_test": inception_score_analogue(test_probs),
        "test_images": len(test.images),
        "train_images": len(train.images),
    }


def sample_quality(samples: ImageArrays, reference_dir: str | Path) -> dict[str, float]:
    """Frechet distance to the training features and IS analogue of samples, in the
    reference classifier's features; errors name a missing reference file."""
    ref = Path(reference_dir)
    for name in (CLASSIFIER_FILE, STATS_FILE):
        if not (ref / name).is_file():
            raise FileNotFoundError(f"reference file '{ref / name}' not found; run the reference stage")
    model = classifier_from_state(torch.load(ref / CLASSIFIER_FILE, weights_only=True))
    features, probs = predict(model, samples.images)
    with np.load(ref / STATS_FILE) as stats:
        fd = frechet_distance(*feature_statistics(features), stats["mu"], stats["sigma"])
    return {
        "fd_classifier": fd,
        "is_classifier": inception_score_analogue(probs),
        "fd_samples": len(features),
    }
