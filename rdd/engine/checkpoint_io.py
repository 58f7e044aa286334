"""Training checkpoints in OpenPCDet's format, written atomically, rotated, found again for resuming.

A checkpoint is ``{'model_state', 'optimizer_state', 'epoch', 'it', 'version'}`` (what OpenPCDet's
``load_params_with_optimizer`` reads) plus ``scheduler_state``, ``scaler_state`` and ``rng_state``.
"""
import glob
import os
import re
import tempfile

import torch

import rdd
from rdd.errors import CheckpointError, CheckpointWriteError
from rdd.models.checkpoint import load_state_dict_strict, read_checkpoint

EPOCH_CKPT_RE = re.compile(r'checkpoint_epoch_(\d+)\.pth$')
LATEST_NAME = 'latest_model.pth'


def unwrap_model(model):
    """The module inside a ``DistributedDataParallel`` wrapper (or ``model`` itself)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def version_string():
    return f'rdd+{rdd.__version__}'


def checkpoint_state(model, optimizer=None, epoch=None, it=None, scheduler=None, scaler=None, rng_state=None):
    """The checkpoint dict; the model state is moved to CPU (DDP wrappers are unwrapped)."""
    model_state = {k: v.detach().cpu() for k, v in unwrap_model(model).state_dict().items()}
    return {
        'model_state': model_state,
        'optimizer_state': optimizer.state_dict() if optimizer is not None else None,
        'epoch': epoch,
        'it': it,
        'version': version_string(),
        'scheduler_state': scheduler.state_dict() if scheduler is not None else None,
        'scaler_state': scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        'rng_state': rng_state,
    }


def _remove_quietly(path):
    try:
        os.remove(path)
    except OSError:
        pass


def save_checkpoint(state, path):
    """Write ``state`` to ``path`` atomically: a temp file in the same directory, fsync, then ``os.replace``.

    A kill at any moment leaves either the old file or the new one, never a partial file at ``path``. Any failure
    (torch's ``[enforce fail at inline_container.cc] unexpected pos`` on a full disk, ``ENOSPC`` on flush/fsync, a
    directory that cannot be created or written) removes the temp file and raises CheckpointWriteError naming
    ``path``; an older file at ``path`` is left as it was.
    """
    path = os.fspath(path)
    directory = os.path.dirname(path) or '.'
    tmp = None
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix='.tmp_', suffix='.pth', dir=directory)
        with os.fdopen(fd, 'wb') as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None and os.path.exists(tmp):
            _remove_quietly(tmp)
        if isinstance(exc, Exception):
            raise CheckpointWriteError(
                f'cannot write checkpoint {path}: {type(exc).__name__}: {exc} (disk full or not writable? no '
                f'partial file was left; an older {os.path.basename(path)} is unchanged)') from exc
        raise
    return path


def list_epoch_checkpoints(ckpt_dir):
    """``[(epoch, path)]`` of ``checkpoint_epoch_N.pth`` in ``ckpt_dir``, sorted by epoch."""
    out = []
    for path in glob.glob(os.path.join(os.fspath(ckpt_dir), 'checkpoint_epoch_*.pth')):
        m = EPOCH_CKPT_RE.search(os.path.basename(path))
        if m:
            out.append((int(m.group(1)), path))
    return sorted(out)


def rotate_checkpoints(ckpt_dir, max_keep):
    """Delete the oldest epoch checkpoints so that at most ``max_keep`` remain."""
    ckpts = list_epoch_checkpoints(ckpt_dir)
    for _, path in ckpts[:max(len(ckpts) - max_keep, 0)]:
        os.remove(path)


def resume_candidates(ckpt_dir):
    """Checkpoints in ``ckpt_dir`` (epoch checkpoints and ``latest_model.pth``), newest first by modification
    time (as OpenPCDet), the file name breaking ties. Temp files of interrupted saves are never listed."""
    ckpt_dir = os.fspath(ckpt_dir)
    paths = [p for _, p in list_epoch_checkpoints(ckpt_dir)]
    latest = os.path.join(ckpt_dir, LATEST_NAME)
    if os.path.isfile(latest):
        paths.append(latest)
    return sorted(paths, key=lambda p: (os.path.getmtime(p), p), reverse=True)


def load_training_state(path, model, optimizer=None, scheduler=None, scaler=None, logger=None):
    """Load model (strictly), optimizer, scheduler and scaler states from ``path``.

    Returns ``(epoch, it, rng_state)``; ``rng_state`` is None for checkpoints written by OpenPCDet. Raises
    CheckpointError naming ``path`` when the weights do not fit ``model`` (another architecture).
    """
    ckpt = read_checkpoint(path)
    if 'model_state' not in ckpt:
        raise CheckpointError(f"checkpoint {path} has no 'model_state'; not a training checkpoint")
    try:
        load_state_dict_strict(unwrap_model(model), ckpt['model_state'], strict=True, logger=logger)
    except CheckpointError as exc:
        raise CheckpointError(f'checkpoint {path} does not fit this model:\n{exc}') from exc
    if optimizer is not None and ckpt.get('optimizer_state') is not None:
        try:
            optimizer.load_state_dict(ckpt['optimizer_state'])
        except (ValueError, KeyError) as exc:
            raise CheckpointError(f'checkpoint {path}: optimizer state does not fit this optimizer: {exc}') from exc
    if scheduler is not None and ckpt.get('scheduler_state') is not None:
        scheduler.load_state_dict(ckpt['scheduler_state'])
    if scaler is not None and scaler.is_enabled() and ckpt.get('scaler_state') is not None:
        scaler.load_state_dict(ckpt['scaler_state'])
    epoch = int(ckpt.get('epoch') or 0)
    it = int(ckpt.get('it') or 0)
    return epoch, it, ckpt.get('rng_state')
