"""Evaluation: NLL in bits/dim and the Frechet distance between feature statistics."""

from .frechet import feature_statistics, frechet_distance
from .nll import evaluate_nll

__all__ = ["evaluate_nll", "feature_statistics", "frechet_distance"]
