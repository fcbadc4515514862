"""The train loop, EMA, checkpoints and distributed set-up."""

from .checkpoint import CheckpointError, list_checkpoints, load_checkpoint, load_latest, model_from_checkpoint
from .ema import EMA
from .trainer import Callback, NonFiniteLossError, Trainer, TrainResult

__all__ = [
    "EMA",
    "Callback",
    "CheckpointError",
    "NonFiniteLossError",
    "TrainResult",
    "Trainer",
    "list_checkpoints",
    "load_checkpoint",
    "load_latest",
    "model_from_checkpoint",
]
