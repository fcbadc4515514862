"""The errors that `ddpm-repro` turns into exit statuses (cli.main).

A `UserError` is a problem with what the user gave: a setting, a file, a checkpoint, the
data. The command prints its message as one line and exits with status 2. Any other exception
is a bug in ddpm-repro: the command prints the traceback. `UserError` is a `ValueError`, so
code that catches ValueError keeps working.
"""

from __future__ import annotations


class UserError(ValueError):
    """A bad setting, file, checkpoint or dataset; the message names it."""


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or Inf; raised before the weights are touched, so the checkpoints
    on disk are the last good ones."""
