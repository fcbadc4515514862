"""The UNet and its layers (imports torch only)."""

from .unet import PRESETS, UNet, UNetConfig, count_parameters, preset

__all__ = ["PRESETS", "UNet", "UNetConfig", "count_parameters", "preset"]
