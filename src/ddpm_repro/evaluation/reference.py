"""What samples are scored against: the classifier trained on the training split and its
training-set feature statistics (the offline metric), and the training set's Inception
statistics when pytorch-fid's weights are available, written by the `reference` stage and
read by `evaluate`."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch

from ..data.arrays import ImageArrays
from ..io import atomic_write, write_text
from ..sharding import RunChunks, run_in_process
from .classifier import (
    classifier_from_state,
    classifier_state,
    inception_score_analogue,
    predict,
    train_classifier,
)
from .frechet import feature_statistics, frechet_distance
from .inception import InceptionUnavailable, fid_from_features, inception_features, load_inception

CLASSIFIER_FILE, STATS_FILE = "classifier.pt", "train_features.npz"
FEATURE_CHUNK = 500  # samples per resumable chunk of Inception features
INCEPTION_STATS_FILE, INCEPTION_NOTE_FILE = "inception_train.npz", "inception_unavailable.txt"


def build_reference(
    train: ImageArrays,
    test: ImageArrays,
    out_dir: str | Path,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    feature_dim: int,
    fid: str = "if-available",
    inception_download: bool = False,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> dict:
    """Train the classifier, write it and the training features' mean and covariance to
    out_dir; return its test accuracy and what real held-out images score (FD, IS).

    With `fid` ("never", "if-available", "required": evaluate.fid), also the training set's
    Inception statistics for FID when pytorch-fid's weights are in torch.hub's cache (or
    `inception_download` may fetch them); otherwise out_dir gets a one-line note saying why,
    and metrics["inception"] is None, or, when FID is required, InceptionUnavailable is
    raised before any work.
    """
    if fid == "required":
        load_inception("cpu", allow_download=inception_download)  # fail before training anything
    model = train_classifier(train, epochs, batch_size, lr, seed, feature_dim, progress=progress)
    train_features, _ = predict(model, train.images)
    test_features, test_probs = predict(model, test.images)
    mu, sigma = feature_statistics(train_features)
    out = Path(out_dir)
    atomic_write(out / CLASSIFIER_FILE, lambda f: torch.save(classifier_state(model), f))
    atomic_write(out / STATS_FILE, lambda f: np.savez(f, mu=mu, sigma=sigma, n=len(train_features)))
    metrics = {
        "classifier_test_accuracy": float((test_probs.argmax(1) == test.labels).mean()),
        "fd_test_vs_train": frechet_distance(*feature_statistics(test_features), mu, sigma),
        "is_test": inception_score_analogue(test_probs),
        "test_images": len(test.images),
        "train_images": len(train.images),
    }
    if fid == "never":
        (out / INCEPTION_STATS_FILE).unlink(missing_ok=True)
        write_text(out / INCEPTION_NOTE_FILE, "evaluate.fid is never\n")
    else:
        metrics.update(_inception_reference(train, test, out, inception_download, device, progress))
    return metrics


def _inception_reference(
    train: ImageArrays, test: ImageArrays, out: Path, allow_download: bool, device, progress: bool
) -> dict:
    (out / INCEPTION_STATS_FILE).unlink(missing_ok=True)
    (out / INCEPTION_NOTE_FILE).unlink(missing_ok=True)
    try:
        net = load_inception(device, allow_download=allow_download)
    except InceptionUnavailable as exc:
        print(str(exc), file=sys.stderr)
        write_text(out / INCEPTION_NOTE_FILE, f"{exc}\n")
        return {"inception": None, "inception_note": str(exc)}
    feats = inception_features(train.images, net, device=device, progress=progress)
    mu, sigma = feature_statistics(feats)
    atomic_write(out / INCEPTION_STATS_FILE, lambda f: np.savez(f, mu=mu, sigma=sigma, n=len(feats)))
    test_feats = inception_features(test.images, net, device=device, progress=progress)
    return {"inception": {"fid_test_vs_train": fid_from_features(test_feats, mu, sigma)}}


class Reference:
    """What `evaluate` scores samples against, read from the reference stage's folder: the
    classifier and its training-feature statistics, and the Inception statistics if any."""

    def __init__(
        self, reference_dir: str | Path, device: str | torch.device = "cpu", fid: str = "if-available"
    ) -> None:
        ref = Path(reference_dir)
        for name in (CLASSIFIER_FILE, STATS_FILE):
            if not (ref / name).is_file():
                raise FileNotFoundError(f"reference file '{ref / name}' not found; run the reference stage")
        self.dir, self.device, self.fid = ref, device, fid
        if fid == "required" and not (ref / INCEPTION_STATS_FILE).is_file():
            raise self._missing_statistics()  # before any work, not after the samples' features
        self.classifier = classifier_from_state(torch.load(ref / CLASSIFIER_FILE, weights_only=True))
        with np.load(ref / STATS_FILE) as stats:
            self.mu, self.sigma = stats["mu"], stats["sigma"]

    def _skip_note(self) -> str:
        note_path = self.dir / INCEPTION_NOTE_FILE
        return note_path.read_text().strip() if note_path.is_file() else "the reference stage skipped it"

    def _missing_statistics(self) -> InceptionUnavailable:
        return InceptionUnavailable(
            f"evaluate.fid is required, but '{self.dir}' has no Inception statistics: {self._skip_note()}"
        )

    def classifier_quality(self, samples: ImageArrays) -> dict:
        """FD to the training features and IS analogue in the classifier's features; for
        labelled (class-conditional) samples also the accuracy of their labels, overall and
        per class."""
        features, probs = predict(self.classifier, samples.images)
        out = {
            "fd_classifier": frechet_distance(*feature_statistics(features), self.mu, self.sigma),
            "is_classifier": inception_score_analogue(probs),
            "fd_samples": len(features),
        }
        labels = samples.labels
        if len(labels) and (labels >= 0).all():
            hits = probs.argmax(1) == labels
            out["class_accuracy"] = float(hits.mean())
            out["per_class_accuracy"] = {str(k): float(hits[labels == k].mean()) for k in np.unique(labels)}
        return out

    def inception_fid(self, samples: ImageArrays, run_chunks: RunChunks | None = None) -> dict | None:
        """{"fid_inception": FID} against the training set, or None and the reason ("fid_note");
        with fid "required", a missing piece raises InceptionUnavailable instead. The samples'
        Inception features are computed in chunks of FEATURE_CHUNK images by `run_chunks` (as
        in sampling.generate: across workers, resumable; a worker that is not rank 0 gets
        None back); by default all here."""
        if self.fid == "never":
            return {"fid_inception": None, "fid_note": "evaluate.fid is never"}
        stats_path = self.dir / INCEPTION_STATS_FILE
        if not stats_path.is_file():
            if self.fid == "required":
                raise self._missing_statistics()
            return {"fid_inception": None, "fid_note": self._skip_note()}
        try:
            net = load_inception(self.device)
        except InceptionUnavailable as exc:
            if self.fid == "required":
                raise
            return {"fid_inception": None, "fid_note": str(exc)}
        images = samples.images

        def chunk(k: int) -> dict[str, np.ndarray]:
            part = images[k * FEATURE_CHUNK : (k + 1) * FEATURE_CHUNK]
            return {"features": inception_features(part, net, device=self.device)}

        parts = (run_chunks or run_in_process)(math.ceil(len(images) / FEATURE_CHUNK), chunk)
        if parts is None:
            return None
        feats = np.concatenate([p["features"] for p in parts])
        with np.load(stats_path) as stats:
            return {"fid_inception": fid_from_features(feats, stats["mu"], stats["sigma"])}
