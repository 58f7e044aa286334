"""The frozen teacher of a Distiller: building, strict checkpoint loading, BN mode, how it runs, its own voxels.

The teacher is held in a :class:`FrozenTeacher` wrapper, outside the Distiller's module tree, so it never
appears in ``parameters()`` / ``state_dict()`` / the optimizer / DDP; the Distiller forwards ``_apply`` (hence
``.to()``, ``.cuda()``, ``.float()``) and keeps it in eval mode. With ``TEACHER_BN: eval`` the forward runs a
cheaper inference copy (BatchNorm folded, :mod:`rdd.models.fold_bn`) under ``torch.inference_mode``; with
``TEACHER_BN: batch`` the teacher itself under ``torch.no_grad`` (batch statistics cannot be folded).
"""
import contextlib
import os
from pathlib import Path

import numpy as np
import torch

from rdd.config import ROOT_DIR, resolve_path
from rdd.datasets.processor.voxelizer import Voxelizer, voxelize_batch
from rdd.errors import CheckpointError, ConfigError, KDConfigError, TeacherCheckpointError
from rdd.geometry import voxel_processor_cfg
from rdd.models.checkpoint import load_state_dict_strict, read_model_state
from rdd.models.fold_bn import freeze_for_inference, run_frozen

TEACHER_BN_MODES = ('eval', 'batch')
TEACHER_PRECISIONS = {'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}


class FrozenTeacher:
    """Plain (non-Module) holder of the teacher detector, so that it stays out of the owner's module tree, and of
    the model its forward runs.

    Args:
        model: the teacher as loaded (frozen here; put in eval mode with BN per ``bn_mode``).
        bn_mode: ``'eval'``: :attr:`runner` is :func:`~rdd.models.fold_bn.freeze_for_inference`'s copy of
            ``model`` (BatchNorm folded into the dense and sparse convs once, here; channels-last dense weights),
            run under ``torch.inference_mode``. ``'batch'``: :attr:`runner` is ``model`` itself, run under
            ``torch.no_grad`` (its BatchNorms use the batch's statistics: nothing to fold).
        precision: ``MODEL.TEACHER_PRECISION``: ``'fp32'`` (no autocast, even inside the caller's), or
            ``'bf16'`` / ``'fp16'`` autocast of the forward. On CPU ``'bf16'`` autocasts the dense layers (the
            sparse convs stay fp32: :mod:`rdd.ops.spconv_compat`, item 7) and ``'fp16'`` is a KDConfigError naming
            the key at the forward.

    ``model`` keeps the checkpoint's ``state_dict`` (facts, decoding config, tests); the folded copy is for
    inference only and costs one more copy of the teacher's weights (none with ``bn_mode='batch'``).
    """

    def __init__(self, model, bn_mode='eval', precision='fp32'):
        if precision not in TEACHER_PRECISIONS:
            raise KDConfigError(f'MODEL.TEACHER_PRECISION must be one of {tuple(TEACHER_PRECISIONS)}, got '
                                f'{precision!r}', key='MODEL.TEACHER_PRECISION')
        self.bn_mode, self.precision = bn_mode, precision
        self.model = set_teacher_mode(freeze(model), bn_mode)
        self.runner = freeze_for_inference(model) if bn_mode == 'eval' else model

    @property
    def folded(self):
        """Whether the forward runs the BN-folded inference copy (``TEACHER_BN: eval``)."""
        return self.runner is not self.model

    def unfold(self):
        """Run ``model`` itself under ``no_grad`` from now on (the forward before folding; the folded copy is
        dropped): for equivalence tests and side-by-side benchmarks."""
        self.runner = self.model

    def apply(self, fn, *args, **kwargs):
        """``Module._apply`` on the teacher and its inference copy (``.to()``, ``.cuda()``, ``.double()``, ...)."""
        self.model._apply(fn, *args, **kwargs)
        if self.folded:
            self.runner._apply(fn, *args, **kwargs)

    def set_mode(self):
        """Eval mode again (BN per ``bn_mode``), whatever ``.train()`` did to the owner."""
        set_teacher_mode(self.model, self.bn_mode)
        if self.folded:
            self.runner.eval()

    def run(self, forward, batch_dict):
        """``forward(runner, batch_dict)`` without autograd (inference mode for the folded copy, else no_grad),
        under autocast per ``precision`` (``'fp32'``: none, also inside the caller's autocast, e.g. the trainer's
        AMP); returns its outputs (nested dicts / lists of tensors) as ordinary tensors (contiguous; floating
        ones in the teacher's parameter dtype) that a loss may save for backward."""
        param = next(self.runner.parameters(), None)
        device = param.device if param is not None else torch.device('cpu')
        dtype = TEACHER_PRECISIONS[self.precision]
        if dtype is not None and device.type != 'cuda' and (device.type, dtype) != ('cpu', torch.bfloat16):
            raise KDConfigError(f'MODEL.TEACHER_PRECISION: {self.precision} autocast of the teacher needs CUDA '
                                f'(on cpu: fp32 or bf16); the teacher is on {device.type}',
                                key='MODEL.TEACHER_PRECISION')
        with _precision(device.type, dtype):
            if self.folded:
                out = run_frozen(forward, self.runner, batch_dict)
            else:
                with torch.no_grad():
                    out = forward(self.runner, batch_dict)
        return out if dtype is None else _cast_floats(out, param.dtype)


def _precision(device_type, dtype):
    """Autocast to ``dtype``; ``None`` (fp32): autocast off inside a caller's autocast, else nothing."""
    if dtype is not None:
        return torch.autocast(device_type, dtype=dtype)
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def _cast_floats(obj, dtype):
    """Every floating tensor in a nested dict / list / tuple cast to ``dtype``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(dtype) if obj.is_floating_point() else obj
    if isinstance(obj, dict):
        return type(obj)((k, _cast_floats(v, dtype)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cast_floats(v, dtype) for v in obj)
    return obj


def kd_config_dirs(student_cfg, cfg_file=None):
    """Directories a relative TEACHER_CKPT is resolved against: the KD config's (when known), the directory of
    the STUDENT's ``_BASE_CONFIG_`` (the KD config's sibling in shipped configs), the repo root, the CWD."""
    dirs = []
    if cfg_file:
        dirs.append(Path(cfg_file).resolve().parent)
    base = (student_cfg or {}).get('_BASE_CONFIG_')
    if base and Path(base).is_absolute():
        dirs.append(Path(base).parent)
    dirs += [Path(ROOT_DIR), Path.cwd()]
    return dirs


def load_teacher_weights(teacher, ckpt_path):
    """Strictly load ``model_state`` from ``ckpt_path`` into ``teacher``; TeacherCheckpointError otherwise."""
    if ckpt_path is None or str(ckpt_path) == '':
        raise TeacherCheckpointError('MODEL.TEACHER_CKPT is not set: a Distiller needs the teacher checkpoint '
                                     '(set MODEL.TEACHER_CKPT in the config or pass --teacher_ckpt PATH)')
    if not os.path.isfile(ckpt_path):
        raise TeacherCheckpointError(f'MODEL.TEACHER_CKPT: teacher checkpoint not found: {ckpt_path}')
    try:
        state = read_model_state(ckpt_path)
        load_state_dict_strict(teacher, state, strict=True)
    except CheckpointError as exc:
        raise TeacherCheckpointError(f'MODEL.TEACHER_CKPT {ckpt_path} does not fit the teacher built from '
                                     f'MODEL.TEACHER (wrong architecture or class list?):\n{exc}') from exc


def freeze(model):
    """``requires_grad=False`` on every parameter; returns the model."""
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def set_teacher_mode(model, bn_mode):
    """Put the teacher in eval mode; with ``bn_mode == 'batch'`` its BatchNorm layers normalise with the
    statistics of the current batch while their running statistics (and ``num_batches_tracked``) stay
    untouched. The head stays in eval mode either way (no target assignment; boxes are decoded)."""
    if bn_mode not in TEACHER_BN_MODES:
        raise KDConfigError(f'MODEL.TEACHER_BN must be one of {TEACHER_BN_MODES}, got {bn_mode!r}')
    model.eval()
    if bn_mode == 'batch':
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.track_running_stats = False  # batch stats in forward, running buffers neither read nor written
                m.train()
    return model


class TeacherVoxelizer:
    """Re-voxelizes ``batch_dict['points']`` on the teacher's grid when it differs from the student's.

    Only points inside the student's range reach the batch, so a larger teacher range sees the student's
    points only. Built from the teacher config's ``transform_points_to_voxels`` processor.
    """

    def __init__(self, teacher_cfg, num_point_features):
        try:
            entry = voxel_processor_cfg(teacher_cfg.DATA_CONFIG)
        except ConfigError as err:
            raise KDConfigError(f'MODEL.TEACHER.{err}') from None
        self.voxelizers = {mode: Voxelizer.from_processor_config(
            entry, teacher_cfg.DATA_CONFIG.POINT_CLOUD_RANGE, num_point_features, mode) for mode in ('train', 'test')}

    def __call__(self, batch_dict, training=True):
        """Replace ``voxels``, ``voxel_coords`` and ``voxel_num_points`` of the (teacher's copy of the) batch."""
        points = batch_dict['points']
        if not torch.is_tensor(points):
            points = torch.as_tensor(np.asarray(points))
        vox = self.voxelizers['train' if training else 'test']
        voxels, coords, num = voxelize_batch(points, vox)
        batch_dict['voxels'], batch_dict['voxel_coords'], batch_dict['voxel_num_points'] = voxels, coords, num
        return batch_dict


def apply_teacher_ckpt(cfg, teacher_ckpt=None):
    """Set (``teacher_ckpt``, the ``--teacher_ckpt`` flag) and resolve ``cfg.MODEL.TEACHER_CKPT`` in place.

    For a Distiller config, a relative TEACHER_CKPT becomes absolute against the KD config's directory
    (``cfg.CFG_FILE``, set by ``rdd.config.cfg_from_yaml_file``), then the repo root and the CWD; a relative
    ``teacher_ckpt`` flag resolves against the CWD first, like any command-line path. Other configs: a given
    ``teacher_ckpt`` is a ValueError (no teacher to load), else nothing changes. Returns ``cfg``.
    """
    if cfg.MODEL.get('NAME') != 'Distiller':
        if teacher_ckpt:
            raise ValueError(f'--teacher_ckpt given but MODEL.NAME is {cfg.MODEL.get("NAME")!r}, not Distiller')
        return cfg
    if teacher_ckpt:
        cfg.MODEL.TEACHER_CKPT = str(resolve_path(teacher_ckpt, [Path.cwd()]))
    elif cfg.MODEL.get('TEACHER_CKPT'):
        dirs = kd_config_dirs(cfg.MODEL.get('STUDENT'), cfg.get('CFG_FILE'))
        cfg.MODEL.TEACHER_CKPT = str(resolve_path(cfg.MODEL.TEACHER_CKPT, dirs))
    return cfg
