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

from ..config import ReferenceConfig
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
from .frechet import feature_statistics, frechet_bootstrap, frechet_distance
from .inception import InceptionUnavailable, fid_from_features, inception_features, load_inception
from .kid import kernel_distance

CLASSIFIER_FILE, STATS_FILE = "classifier.pt", "train_features.npz"
FEATURE_CHUNK = 500  # samples per resumable chunk of Inception features
INCEPTION_STATS_FILE, INCEPTION_NOTE_FILE = "inception_train.npz", "inception_unavailable.txt"
KID_REFERENCE_IMAGES = 10_000  # training features kept for the KID (a seeded subset beyond this)


def _kid_reference(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """The training features the KID compares with, float32: all, or a seeded subset."""
    if len(features) > KID_REFERENCE_IMAGES:
        keep = np.random.default_rng(seed).choice(len(features), KID_REFERENCE_IMAGES, replace=False)
        features = features[np.sort(keep)]
    return features.astype(np.float32)


def sample_quality(
    features: np.ndarray,
    reference: np.ndarray | None,
    mu: np.ndarray,
    sigma: np.ndarray,
    prefix: str,
    kid_prefix: str,
    rounds: int,
    subsets: int,
    standardize: bool = False,
) -> dict:
    """The Frechet distance of sample features [N, D] to the reference statistics, with its
    bootstrap s.e. and 95% interval (`frechet_bootstrap`), and the KID against the reference
    features with its grouped-jackknife s.e. over `subsets` disjoint groups of the samples
    (`kernel_distance`; at most N // 2 groups). With `standardize`, the KID's features are
    centred on the reference mean and scaled to unit average variance per dimension first
    (the classifier's features sit far from the origin, where the cubic kernel's values
    spread over orders of magnitude). Keys: <prefix>, <prefix>_se, <prefix>_low,
    <prefix>_high, <kid_prefix>, <kid_prefix>_se, <kid_prefix>_subsets; a KID that cannot be
    computed (no reference features, fewer than 4 samples) is None."""
    fd = frechet_bootstrap(features, mu, sigma, rounds=rounds)
    out = {
        prefix: fd["fd"],
        f"{prefix}_se": fd["fd_se"],
        f"{prefix}_low": fd["fd_low"],
        f"{prefix}_high": fd["fd_high"],
    }
    parts = min(subsets, len(features) // 2)
    kid = kid_se = None
    if reference is not None and parts >= 2:
        x, y = np.asarray(features, np.float64), np.asarray(reference, np.float64)
        if standardize:
            scale = math.sqrt(np.trace(sigma) / len(mu)) or 1.0
            x, y = (x - mu) / scale, (y - mu) / scale
        kid, kid_se = kernel_distance(x, y, subsets=parts)
    out.update(
        {
            kid_prefix: kid,
            f"{kid_prefix}_se": kid_se,
            f"{kid_prefix}_subsets": parts if kid is not None else None,
        }
    )
    return out


def build_reference(
    train: ImageArrays,
    test: ImageArrays,
    out_dir: str | Path,
    settings: ReferenceConfig,
    fid: str = "if-available",
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> dict:
    """Train the classifier (`settings`: params.yaml's reference section), write it and the
    training features' mean and covariance to out_dir; return its test accuracy and what real
    held-out images score (FD, KID, IS): the keys of stage_outputs.REFERENCE.

    With `fid` ("never", "if-available", "required": evaluate.fid), also the training set's
    Inception statistics for FID when pytorch-fid's weights are in torch.hub's cache (or
    `settings.inception_download` lets pytorch-fid fetch them). Otherwise out_dir gets a
    one-line note saying why, metrics["inception"] is None and metrics["inception_note"] says
    why, or, when FID is required, InceptionUnavailable is raised before any work.
    """
    if fid == "required":
        load_inception("cpu", allow_download=settings.inception_download)  # fail before any training
    s = settings
    model = train_classifier(train, s.epochs, s.batch_size, s.lr, s.seed, s.feature_dim, progress=progress)
    train_features, _ = predict(model, train.images)
    test_features, test_probs = predict(model, test.images)
    mu, sigma = feature_statistics(train_features)
    out = Path(out_dir)
    atomic_write(out / CLASSIFIER_FILE, lambda f: torch.save(classifier_state(model), f))
    atomic_write(
        out / STATS_FILE,
        lambda f: np.savez(
            f, mu=mu, sigma=sigma, n=len(train_features), features=_kid_reference(train_features)
        ),
    )
    metrics = {
        "classifier_test_accuracy": float((test_probs.argmax(1) == test.labels).mean()),
        "fd_test_vs_train": frechet_distance(*feature_statistics(test_features), mu, sigma),
        "kid_test_vs_train": sample_quality(
            test_features, train_features, mu, sigma, "fd", "kid", rounds=2, subsets=10, standardize=True
        )["kid"],
        "is_test": inception_score_analogue(test_probs),
        "test_images": len(test.images),
        "train_images": len(train.images),
    }
    if fid == "never":
        (out / INCEPTION_STATS_FILE).unlink(missing_ok=True)
        write_text(out / INCEPTION_NOTE_FILE, "evaluate.fid is never\n")
        metrics.update(inception=None, inception_note="evaluate.fid is never")
    else:
        metrics.update(_inception_reference(train, test, out, settings.inception_download, device, progress))
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
    atomic_write(
        out / INCEPTION_STATS_FILE,
        lambda f: np.savez(f, mu=mu, sigma=sigma, n=len(feats), features=_kid_reference(feats)),
    )
    test_feats = inception_features(test.images, net, device=device, progress=progress)
    return {"inception": {"fid_test_vs_train": fid_from_features(test_feats, mu, sigma)}}


class Reference:
    """What `evaluate` scores samples against, read from the reference stage's folder: the
    classifier and its training-feature statistics, and the Inception statistics if any."""

    def __init__(
        self,
        reference_dir: str | Path,
        device: str | torch.device = "cpu",
        fid: str = "if-available",
        bootstrap_rounds: int = 200,
        kid_subsets: int = 10,
    ) -> None:
        ref = Path(reference_dir)
        for name in (CLASSIFIER_FILE, STATS_FILE):
            if not (ref / name).is_file():
                raise FileNotFoundError(f"reference file '{ref / name}' not found; run the reference stage")
        self.dir, self.device, self.fid = ref, device, fid
        self.rounds, self.subsets = bootstrap_rounds, kid_subsets
        if fid == "required" and not (ref / INCEPTION_STATS_FILE).is_file():
            raise self._missing_statistics()  # before any work, not after the samples' features
        self.classifier = classifier_from_state(torch.load(ref / CLASSIFIER_FILE, weights_only=True))
        with np.load(ref / STATS_FILE) as stats:
            self.mu, self.sigma = stats["mu"], stats["sigma"]
            # None: a reference stage from before the KID; its KID is then not computed
            self.features = stats["features"] if "features" in stats.files else None

    def _skip_note(self) -> str:
        note_path = self.dir / INCEPTION_NOTE_FILE
        return note_path.read_text().strip() if note_path.is_file() else "the reference stage skipped it"

    def _missing_statistics(self) -> InceptionUnavailable:
        return InceptionUnavailable(
            f"evaluate.fid is required, but '{self.dir}' has no Inception statistics: {self._skip_note()}"
        )

    def classifier_features(self, samples: ImageArrays) -> tuple[np.ndarray, np.ndarray]:
        """The samples' features [N, D] and class probabilities [N, K] in the classifier."""
        return predict(self.classifier, samples.images)

    def classifier_quality(self, samples: ImageArrays) -> dict:
        """In the classifier's features: the FD to the training features with its bootstrap
        s.e. and 95% interval, the KID with its s.e. (`sample_quality`), and the IS analogue;
        for labelled (class-conditional) samples also the accuracy of their labels, overall
        and per class."""
        features, probs = self.classifier_features(samples)
        out = {
            **sample_quality(
                features, self.features, self.mu, self.sigma, "fd_classifier", "kid_classifier",
                self.rounds, self.subsets, standardize=True,
            ),
            "is_classifier": inception_score_analogue(probs),
            "fd_samples": len(features),
        }  # fmt: skip
        labels = samples.labels
        if len(labels) and (labels >= 0).all():
            hits = probs.argmax(1) == labels
            out["class_accuracy"] = float(hits.mean())
            out["per_class_accuracy"] = {str(k): float(hits[labels == k].mean()) for k in np.unique(labels)}
        return out

    def inception_fid(self, samples: ImageArrays, run_chunks: RunChunks | None = None) -> dict | None:
        """{"fid_inception": FID, with its bootstrap s.e. and interval, and "kid_inception"
        with its s.e. (`sample_quality`)} against the training set, or None and the reason ("fid_note");
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
            reference = stats["features"] if "features" in stats.files else None
            return sample_quality(
                feats, reference, stats["mu"], stats["sigma"], "fid_inception", "kid_inception",
                self.rounds, self.subsets,
            )  # fmt: skip
