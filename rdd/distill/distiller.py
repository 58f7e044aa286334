"""Distiller: a detector-like module holding a student, a frozen teacher and a list of KD losses.

Config (``MODEL`` of a distillation config; see docs/openpcdet.md and configs/rdd_cp_voxel_s.yaml)::

    NAME: Distiller
    STUDENT: {_BASE_CONFIG_: cp_voxel_s.yaml}      # a whole config; its MODEL is built for the student
    TEACHER: {_BASE_CONFIG_: cp_voxel_0075.yaml}   # a whole config; MODEL, CLASS_NAMES and DATA_CONFIG (grid)
    TEACHER_CKPT: ../checkpoints/teacher.pth       # absolute, or relative to the KD config's directory
    TEACHER_BN: eval          # eval: running statistics (default); batch: this batch's statistics, buffers kept
    TEACHER_PRECISION: fp32   # fp32 | bf16 | fp16: autocast of the teacher forward (CUDA; bf16 also on CPU)
    GRID_MISMATCH: resample   # resample | error, when the student's BEV grid differs from the teacher's
    LOSS_DET_WEIGHT: 1.0      # weight of the student's detection loss
    KD_LOSSES: [{NAME: RDDLoss, WEIGHT: 1.0, ...}, ...]   # optional TAG per entry (see below)

Each KD_LOSSES entry is keyed by its ``TAG`` if it has one, else by its ``NAME``; two entries with the same key
are a KDConfigError (give repeated losses distinct TAGs, e.g. ``{NAME: FitNetLoss, TAG: fitnet_bev}``). The key
names the entry's parameters and its TensorBoard scalars (``kd/<key>``), so reordering KD_LOSSES changes neither.

``state_dict()`` = the student under ``student.`` and the KD losses' parameters (adapters, variances) under
``kd_losses.<key>.``; never the teacher (held outside the module tree, see :mod:`rdd.distill.teacher`). The losses
are registered, computed and summed in key order (parameter and optimizer state order, and every bit of the loss,
do not depend on the list order); only their ``prepare_student_batch`` hooks (label KD's) run in list order.

The teacher forward is cheaper than the teacher's own: with ``TEACHER_BN: eval`` it runs a copy of the teacher with
its BatchNorms folded into the convolutions (once, at construction) under ``torch.inference_mode`` (same outputs up
to float rounding, :mod:`rdd.models.fold_bn`); with ``TEACHER_BN: batch`` the teacher itself under ``no_grad``
(batch statistics cannot be folded). See :class:`rdd.distill.teacher.FrozenTeacher`.
"""
import logging
from typing import Mapping, Optional

import torch
import torch.nn as nn

from rdd.config import resolve_path
from rdd.geometry import BEVGrid
from rdd.models import build_network
from rdd.models.checkpoint import load_state_dict_strict, read_checkpoint, read_model_state

from . import feature_taps
from .build import (build_kd_losses, build_teacher, check_class_names, check_student_grid, parse_distiller_config,
                    teacher_voxelizer)
from .context import KDContext, ModelFacts
from .feature_taps import TapPlan
from .teacher import FrozenTeacher, kd_config_dirs

_LOG = logging.getLogger(__name__)
STUDENT_PREFIX, KD_PREFIX = 'student.', 'kd_losses.'


class Distiller(nn.Module):
    """Student + frozen teacher + KD losses, trained like a detector.

    Built from a config with :meth:`from_config` (OpenPCDet's ``build_network`` signature; registered as
    ``'Distiller'``), or from built parts, e.g. toy modules in tests.

    Args:
        student: the student detector (CenterPoint-style: ``module_list``, ``dense_head``); a submodule.
        teacher: the teacher detector; frozen (``requires_grad`` off, eval mode) and held outside the module tree.
        kd_losses: ``{key: loss module}`` in ``MODEL.KD_LOSSES`` order (key = the entry's TAG or NAME; the
            losses' ``prepare_student_batch`` hooks run in this order; they are registered, computed and summed in
            key order).
        weights: ``{key: WEIGHT}`` (default 1.0 for every key).
        loss_det_weight: weight of the student's detection loss.
        teacher_bn: ``'eval'`` (running statistics; the forward runs a BN-folded inference copy) or ``'batch'``
            (this batch's statistics, buffers kept; the forward runs the teacher itself).
        teacher_precision: ``'fp32'``, ``'bf16'`` or ``'fp16'`` (autocast of the teacher forward; on CPU bf16 only).
        teacher_voxelizer: a :class:`~rdd.distill.teacher.TeacherVoxelizer` when the teacher's voxel grid differs
            from the data pipeline's, else None.
    Train forward: ``({'loss'}, tb_dict, disp_dict)``; eval forward: the student's ``(pred_dicts, recall_dict)``.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, kd_losses: Mapping[str, nn.Module],
                 weights: Optional[Mapping[str, float]] = None, loss_det_weight: float = 1.0,
                 teacher_bn: str = 'eval', teacher_voxelizer=None, teacher_precision: str = 'fp32'):
        super().__init__()
        self.student = student
        self.teacher_bn = teacher_bn
        self._teacher = FrozenTeacher(teacher, teacher_bn, teacher_precision)
        self.teacher_voxelizer = teacher_voxelizer
        self.kd_names = list(kd_losses)
        weights = dict(weights or {})
        self.kd_weights = [float(weights.get(key, 1.0)) for key in self.kd_names]
        self.kd_losses = nn.ModuleDict([(k, kd_losses[k]) for k in sorted(kd_losses)])
        self.loss_det_weight = float(loss_det_weight)
        self.plan = TapPlan.for_losses(self.kd_losses.values(), teacher, student)

    @classmethod
    def from_config(cls, model_cfg, num_class, dataset, cfg_file=None):
        """Build from a Distiller ``MODEL`` section (see the module docstring): validate it, build the student on
        ``dataset`` (a dataset or ``model_geometry(cfg)``: the data pipeline's classes and grid), the teacher
        from its config and checkpoint, and the KD losses with their :class:`KDContext`. ``cfg_file``: the KD
        config's path (a relative TEACHER_CKPT resolves against its directory first)."""
        cfg, student_cfg, teacher_cfg = parse_distiller_config(model_cfg)
        check_class_names(dataset.class_names, student_cfg, teacher_cfg)
        data_grid = BEVGrid.from_dataset(dataset)
        check_student_grid(student_cfg, data_grid)
        student = build_network(student_cfg.MODEL, num_class=num_class, dataset=dataset)
        ckpt = str(resolve_path(cfg.teacher_ckpt, kd_config_dirs(student_cfg, cfg_file))) if cfg.teacher_ckpt else None
        teacher = build_teacher(teacher_cfg, ckpt)
        voxelizer = teacher_voxelizer(teacher_cfg, data_grid, dataset.point_feature_encoder.num_point_features)
        context = KDContext(teacher=ModelFacts.from_model(teacher), student=ModelFacts.from_model(student),
                            grid_mismatch=cfg.grid_mismatch)
        context.check_same_heads('MODEL.TEACHER.MODEL.DENSE_HEAD')
        losses, weights = build_kd_losses(model_cfg.KD_LOSSES, context)
        return cls(student, teacher, losses, weights, loss_det_weight=cfg.loss_det_weight,
                   teacher_bn=cfg.teacher_bn, teacher_voxelizer=voxelizer, teacher_precision=cfg.teacher_precision)

    # ------------------------------------------------------------------ teacher plumbing
    @property
    def teacher(self):
        """The frozen teacher detector as loaded (not a submodule; its ``state_dict`` is the checkpoint's)."""
        return self._teacher.model

    @property
    def inference_teacher(self):
        """The model the teacher forward runs: the BN-folded copy (``TEACHER_BN: eval``) or the teacher itself."""
        return self._teacher.runner

    def unfold_teacher(self):
        """From now on run the teacher itself under ``no_grad`` instead of its BN-folded copy (the forward before
        folding): for equivalence tests and side-by-side benchmarks, not for training."""
        self._teacher.unfold()

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        self._teacher.apply(fn, *args, **kwargs)
        return self

    def train(self, mode=True):
        """Student and KD losses follow ``mode``; the teacher stays in eval mode (BN per ``TEACHER_BN``)."""
        super().train(mode)
        self._teacher.set_mode()
        return self

    # ------------------------------------------------------------------ detector API
    @property
    def global_step(self):
        return self.student.global_step

    def update_global_step(self):
        self.student.update_global_step()

    @property
    def dense_head(self):
        return self.student.dense_head

    def forward_teacher(self, batch_dict):
        """Teacher forward on its own shallow copy of the batch (cloned ``gt_boxes``; own voxels if its grid
        differs), without autograd (:meth:`FrozenTeacher.run`); returns the tapped outputs (features, raw head
        maps, decoded ``boxes`` when a loss needs them, else None) as ordinary tensors that need no gradient. The
        head's maps are computed without its own decoding."""
        tbatch = dict(batch_dict)
        if 'gt_boxes' in tbatch:
            tbatch['gt_boxes'] = tbatch['gt_boxes'].clone()
        return self._teacher.run(self._teacher_outputs, tbatch)

    def _teacher_outputs(self, teacher, tbatch):
        """The body of :meth:`forward_teacher` on the model ``teacher`` (:attr:`inference_teacher`)."""
        if self.teacher_voxelizer is not None:
            self.teacher_voxelizer(tbatch, training=self.training)
        tbatch = feature_taps.run_to_head(teacher, tbatch)
        preds = feature_taps.raw_head_maps(teacher.dense_head, tbatch['spatial_features_2d'])
        out = feature_taps.tap_outputs(teacher, tbatch, self.plan.feature_keys, detach=True, pred_dicts=preds)
        if self.plan.teacher_boxes:
            out['boxes'] = feature_taps.decode_boxes(teacher, preds, tbatch['batch_size'],
                                                     self.plan.decode_cfgs['teacher'])
        return out

    def forward_student(self, batch_dict):
        """Student training forward on a shallow copy; returns ``(ret_dict, tb_dict, disp_dict, student_out)``."""
        sbatch = dict(batch_dict)
        ret_dict, tb_dict, disp_dict = self.student(sbatch)
        out = feature_taps.tap_outputs(self.student, sbatch, self.plan.feature_keys, with_targets=True)
        if self.plan.student_boxes:
            out['boxes'] = feature_taps.decode_boxes(self.student, out['pred_dicts'], sbatch['batch_size'],
                                                     self.plan.decode_cfgs['student'])
        return ret_dict, tb_dict, disp_dict, out

    def kd_forward(self, teacher_out, student_out, batch_dict):
        """Weighted sum of the KD terms (computed in key order) and their tb entries (``kd/<key>`` raw,
        ``kd/<key>/<name>`` details; ``<key>`` is the entry's TAG or NAME)."""
        total, tb = None, {}
        weights = dict(zip(self.kd_names, self.kd_weights))
        for name, loss_fn in self.kd_losses.items():  # key order: the list order does not change a single bit
            loss, loss_tb = loss_fn(teacher_out, student_out, batch_dict)
            tb[f'kd/{name}'] = float(loss.detach())
            for k, v in (loss_tb or {}).items():
                tb[f'kd/{name}/{k}'] = float(v)
            total = weights[name] * loss if total is None else total + weights[name] * loss
        return total, tb

    def forward(self, batch_dict):
        """Training: teacher (no grad) -> optional ``prepare_student_batch`` of the losses -> student -> KD.
        Eval: the student's forward."""
        if not self.training:
            return self.student(batch_dict)
        teacher_out = self.forward_teacher(batch_dict)
        batch_dict = dict(batch_dict)
        for loss_fn in (self.kd_losses[name] for name in self.kd_names):
            if hasattr(loss_fn, 'prepare_student_batch'):
                batch_dict = loss_fn.prepare_student_batch(teacher_out, batch_dict)
        ret_dict, tb_dict, disp_dict, student_out = self.forward_student(batch_dict)
        loss_det = ret_dict['loss']
        loss_kd, kd_tb = self.kd_forward(teacher_out, student_out, batch_dict)
        loss = self.loss_det_weight * loss_det + (loss_kd if loss_kd is not None else 0.0)
        tb_dict = dict(tb_dict)
        tb_dict.update(kd_tb)
        tb_dict['loss_det'] = float(loss_det.detach())
        tb_dict['loss_kd'] = float(loss_kd.detach()) if loss_kd is not None else 0.0
        tb_dict['loss'] = float(loss.detach())
        return {'loss': loss}, tb_dict, disp_dict

    # ------------------------------------------------------------------ checkpoints
    def load_params_from_file(self, filename, logger=None, to_cpu=True, strict=True, pre_trained_path=None):
        """Load a Distiller checkpoint (``student.*``/``kd_losses.*`` keys) into the Distiller, or a plain
        student checkpoint (bare detector keys, e.g. ``--pretrained_model``) into the student.
        ``to_cpu`` / ``pre_trained_path`` are OpenPCDet's arguments (tensors are always read on CPU; there is
        no image backbone to pre-load)."""
        if pre_trained_path:
            _LOG.warning('Distiller.load_params_from_file: pre_trained_path %s is not used', pre_trained_path)
        state = read_model_state(filename)
        if any(k.startswith(STUDENT_PREFIX) for k in state):
            load_state_dict_strict(self, state, strict=strict, logger=logger)
        else:
            load_state_dict_strict(self.student, state, strict=strict, logger=logger)

    def load_params_with_optimizer(self, filename, to_cpu=False, optimizer=None, logger=None):
        """Resume: strict load of the Distiller state (and the optimizer's); returns ``(it, epoch)``."""
        ckpt = read_checkpoint(filename)
        load_state_dict_strict(self, ckpt['model_state'] if 'model_state' in ckpt else ckpt, strict=True,
                               logger=logger)
        if optimizer is not None and ckpt.get('optimizer_state') is not None:
            optimizer.load_state_dict(ckpt['optimizer_state'])
        return ckpt.get('it', 0.0), ckpt.get('epoch', -1)


def student_state_from_distiller(state):
    """Bare student state_dict from a Distiller state_dict: ``student.*`` keys stripped of the prefix,
    ``kd_losses.*`` dropped; any other key (e.g. a teacher's) is a KeyError naming it."""
    if not any(k.startswith(STUDENT_PREFIX) for k in state):
        raise KeyError(f'not a Distiller state_dict: no key starts with {STUDENT_PREFIX!r} '
                       f'(first keys: {list(state)[:5]})')
    other = [k for k in state if not k.startswith((STUDENT_PREFIX, KD_PREFIX))]
    if other:
        raise KeyError(f'unexpected keys in a Distiller state_dict (teacher weights?): {other[:10]}')
    return {k[len(STUDENT_PREFIX):]: v for k, v in state.items() if k.startswith(STUDENT_PREFIX)}
