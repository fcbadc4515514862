"""Evaluation: NLL in bits/dim (and, later, Frechet distances)."""

from .nll import evaluate_nll

__all__ = ["evaluate_nll"]
