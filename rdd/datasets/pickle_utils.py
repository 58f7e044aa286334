"""Pickle helpers shared by the dataset code: reading info pickles with clear errors, and objects that pickle
without their logger (DataLoader workers, ``copy.deepcopy``)."""
import logging
import pickle
from pathlib import Path


def load_pickle(path, what):
    """Load the pickle at ``path``.

    Args:
        path (Path or str): the file.
        what (str): what the file is, naming the config key it came from, e.g.
            ``'nuScenes info file (DATA_CONFIG.INFO_PATH.train)'``; it starts both error messages.
    Returns: the unpickled object.
    Raises:
        FileNotFoundError: ``'<what> not found: <path>'`` if ``path`` is not a file.
        ValueError: ``'<what> unreadable: <path>: <reason>'`` if unpickling fails (truncated, not a pickle, ...).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'{what} not found: {path}')
    try:
        with open(path, 'rb') as f:
            return pickle.load(f)
    except Exception as err:
        raise ValueError(f'{what} unreadable: {path}: {err}') from err


class LoggerFreePickleMixin:
    """Drops ``self.logger`` when pickled and restores ``logging.getLogger(self.LOGGER_NAME)`` when unpickled.

    Subclasses set ``LOGGER_NAME`` (and use it as their default logger, so an unpickled copy logs where the
    original did unless the original was given a custom logger).
    """

    LOGGER_NAME = 'rdd.datasets'

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop('logger', None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.logger = logging.getLogger(self.LOGGER_NAME)
