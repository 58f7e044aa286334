"""Every exception type the package raises on purpose, in one leaf module (imports nothing from ``rdd``).

Each message names what is wrong and where: the config key and file, the checkpoint path, the data frame.
"""


class ConfigError(ValueError):
    """A config file, a key or an override is invalid; the message names the key and the file.

    ``key``: the dotted config key the error is about (e.g. ``'DATA_CONFIG.MAX_SWEEPS'``) when known, so that the
    loader can add the file that set it; ``related``: other keys involved (their files are named too).
    """

    def __init__(self, message, key=None, related=()):
        super().__init__(message)
        self.key = key
        self.related = tuple(related)


class KDConfigError(ConfigError):
    """A distillation entry (``MODEL.KD_LOSSES[i]``, the Distiller's own keys) is invalid; names the key."""


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read or written, or does not match the model; names the path and the keys."""


class TeacherCheckpointError(CheckpointError):
    """The teacher checkpoint is missing, unreadable or does not fit the teacher config."""


class CheckpointWriteError(CheckpointError):
    """A checkpoint could not be written (disk full, directory not writable, ...); the message names the path."""


class DataError(ValueError):
    """Input data (a point file, an info file, a devkit table, a frame) is unusable; the message names it."""


class DevkitTableError(DataError):
    """A devkit table (or a file it names) is missing, unreadable or malformed; the message names the file."""


class PartialEvaluationError(DataError):
    """Predictions (or the info files they come from) cover only part of the evaluation split."""


class NonFiniteLossError(RuntimeError):
    """Raised after too many consecutive iterations with a non-finite loss or gradient norm."""


class RegistryError(KeyError):
    """A name is not registered (the message lists the known names), or is registered twice."""

    def __str__(self):  # KeyError would print the repr of the message
        return str(self.args[0]) if self.args else ''


class PluginConflictError(RegistryError):
    """An OpenPCDet registry already maps a name the plugin inserts to a different class."""


__all__ = ['ConfigError', 'KDConfigError', 'CheckpointError', 'TeacherCheckpointError', 'CheckpointWriteError',
           'DataError', 'DevkitTableError', 'PartialEvaluationError', 'NonFiniteLossError', 'RegistryError',
           'PluginConflictError']
