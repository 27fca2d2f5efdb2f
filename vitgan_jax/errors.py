"""Errors that mean bad input or a stopped run, not a bug: `main` prints them in one line, exit 1.

Each message says what was wrong and what to do; nothing is overwritten when one is raised.
"""


class Error(Exception):
  """Base of the errors `vitgan-train` reports as `error: <message>` without a traceback."""


class ConfigError(Error, ValueError):
  """A config value that cannot work (unknown field, batch that does not split over devices)."""


class DataError(Error, ValueError):
  """The dataset is missing or does not match the model (path, image size, channels)."""


class CheckpointError(Error):
  """No usable checkpoint: all unreadable, or none where one is required."""


class IncompatibleCheckpointError(CheckpointError):
  """The workdir holds a checkpoint whose arrays do not fit the model of the current config."""


class NonFiniteError(Error, RuntimeError):
  """A loss or gradient went NaN/Inf; the last good checkpoint is left as it was."""


class WorkdirError(Error, OSError):
  """The workdir cannot be used: a file, not writable, full, or locked by another run."""


class WeightsError(Error, ValueError):
  """An Inception weights file that exists but cannot be read (truncated, not weights)."""
