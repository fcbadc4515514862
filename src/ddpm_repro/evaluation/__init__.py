"""Evaluation: NLL in bits/dim, and sample quality as the Frechet distance (with its
bootstrap spread) and the kernel distance (KID) between feature sets."""

from .frechet import feature_statistics, frechet_bootstrap, frechet_distance
from .kid import kernel_distance
from .nll import evaluate_nll

__all__ = ["evaluate_nll", "feature_statistics", "frechet_bootstrap", "frechet_distance", "kernel_distance"]
