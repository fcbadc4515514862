"""Datasets -> uint8 arrays (NHWC) + labels, one npz per split."""

from .arrays import ImageArrays, load_arrays, save_arrays, to_uint8

__all__ = ["ImageArrays", "load_arrays", "save_arrays", "to_uint8"]
