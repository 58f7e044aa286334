"""One live run per run directory: ``<run dir>/run.lock`` names the run that holds it (pid, host, start time).

:meth:`RunDirLock.acquire` creates the file atomically (``O_CREAT | O_EXCL``). When it already exists, the holder
is live unless it ran on this host and its pid no longer exists: such a stale lock (a run killed with ``kill -9``
or by the OOM killer) is taken over with a log line; a live holder -- or one on another host, whose pid cannot be
checked from here -- makes :class:`rdd.errors.RunDirLockedError` naming the directory and the holder.
Under torchrun only rank 0 takes the lock (``train_pipeline`` calls it through :func:`rdd.engine.dist.on_main_rank`,
so the error raises on every rank). :meth:`RunDirLock.release` deletes the file if it is still ours.
"""
import datetime
import json
import os
import socket
from pathlib import Path

from rdd.errors import RunDirLockedError

__all__ = ['RunDirLock', 'LOCK_NAME']

LOCK_NAME = 'run.lock'


def _pid_alive(pid):
    """Whether a process ``pid`` exists on this host (a zombie counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except (OSError, IndexError):
        return True


class RunDirLock:
    """The lock file of run directory ``output_dir`` (the directory is created by :meth:`acquire`)."""

    def __init__(self, output_dir, logger=None):
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / LOCK_NAME
        self.logger = logger
        self.me = {'pid': os.getpid(), 'host': socket.gethostname(),
                   'started': datetime.datetime.now().isoformat(timespec='seconds')}
        self.held = False

    def _read_holder(self):
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {'pid': None, 'host': None, 'started': None}  # torn or foreign file: treat as unknown holder

    def _try_create(self):
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, 'w') as f:
            json.dump(self.me, f)
        return True

    def _is_stale(self, holder):
        return holder.get('host') == self.me['host'] and isinstance(holder.get('pid'), int) \
            and not _pid_alive(holder['pid'])

    def acquire(self):
        """Take the lock (a stale one is taken over, logged); RunDirLockedError when a live run holds it."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(2):  # a second try after removing a stale lock (another run may win the race)
            if self._try_create():
                self.held = True
                return self
            holder = self._read_holder()
            if holder is None:
                continue  # released between our two calls
            if not self._is_stale(holder):
                break
            if self.logger is not None:
                self.logger.warning('Run dir %s: taking over the stale lock of pid %s on %s (started %s; that '
                                    'process no longer exists)', self.output_dir, holder.get('pid'),
                                    holder.get('host'), holder.get('started'))
            self.path.unlink(missing_ok=True)
        holder = self._read_holder() or {}
        raise RunDirLockedError(
            f'run dir {self.output_dir} is in use by another run: pid {holder.get("pid")} on host '
            f'{holder.get("host")} (started {holder.get("started")}; lock file {self.path}). Wait for it to finish, '
            f'or train into another dir with --extra_tag; if that run is dead (e.g. on another host), delete the '
            f'lock file')

    def release(self):
        """Delete the lock file if it is still this run's."""
        if self.held and (self._read_holder() or {}).get('pid') == self.me['pid']:
            self.path.unlink(missing_ok=True)
        self.held = False
