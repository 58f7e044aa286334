"""Distiller: a detector-like module holding a student, a frozen teacher and a list of KD losses.

Config (``MODEL`` of a distillation config; see docs/openpcdet.md and configs/rdd_cp_voxel_s.yaml)::

    NAME: Distiller
    STUDENT: {_BASE_CONFIG_: cp_voxel_s.yaml}      # a whole config; its MODEL is built for the student
    TEACHER: {_BASE_CONFIG_: cp_voxel_0075.yaml}   # a whole config; MODEL, CLASS_NAMES and DATA_CONFIG (grid)
    TEACHER_CKPT: ../checkpoints/teacher.pth       # absolute, or relative to the KD config's directory
    TEACHER_BN: eval          # eval: running statistics (default); batch: this batch's statistics, buffers kept
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
"""
import logging

import numpy as np
import torch
import torch.nn as nn

from rdd.errors import KDConfigError
from rdd.models import build_network, model_geometry
from rdd.models.checkpoint import load_state_dict_strict, read_checkpoint, read_model_state
from rdd.models.detectors import register_detector

from . import feature_taps
from .context import KDContext, ModelFacts
from .subconfig import complete_sub_config
from .registry import DEFAULT_REQUIRES, build_kd_loss, kd_loss_key
from .teacher import (FrozenTeacher, TeacherVoxelizer, freeze, grids_equal, kd_config_dirs, load_teacher_weights,
                      resolve_teacher_ckpt, set_teacher_mode)

_LOG = logging.getLogger(__name__)
STUDENT_PREFIX, KD_PREFIX = 'student.', 'kd_losses.'


def decode_post_cfg(model, min_score):
    """POST_PROCESSING override (dict, or None for none) for decoding ``model``'s boxes for KD losses that use no
    box scored below ``min_score``: ``SCORE_THRESH`` raised to just below it (the head keeps ``score >
    SCORE_THRESH``, a loss may keep ``score >= min_score``). The boxes scored ``>= min_score`` are exactly those of
    the plain decode: a lower-scored box never suppresses a higher-scored one in NMS nor displaces it from the NMS
    caps. (A top-K cut would not be exact: a candidate outside a head's top-K can survive NMS.)"""
    if min_score is None:
        return None
    below = float(np.nextafter(np.float32(min_score), np.float32(-np.inf)))
    own = float(model.dense_head.model_cfg.POST_PROCESSING.SCORE_THRESH)
    return {'SCORE_THRESH': below} if below > own else None


@register_detector('Distiller')
class Distiller(nn.Module):
    """Student + frozen teacher + KD losses, trained like a detector.

    Args (OpenPCDet's ``build_network`` signature):
        model_cfg: the ``MODEL`` section described in the module docstring.
        num_class (int): number of classes (the student's).
        dataset: the student's dataset (or ``model_geometry(cfg)``): ``class_names``, grid attributes.
        cfg_file: optional path of the KD config (relative TEACHER_CKPT resolves against its directory).
    Train forward: ``({'loss'}, tb_dict, disp_dict)``; eval forward: the student's ``(pred_dicts, recall_dict)``.
    """

    def __init__(self, model_cfg, num_class, dataset, cfg_file=None):
        super().__init__()
        self.model_cfg = model_cfg
        for key in ('STUDENT', 'TEACHER', 'KD_LOSSES'):
            if key not in model_cfg:
                raise KDConfigError(f'MODEL.{key} is required for MODEL.NAME Distiller')
        if model_cfg.get('ADAPTERS', None):
            raise KDConfigError('MODEL.ADAPTERS is not used: adapters belong to the KD loss that needs them '
                                '(e.g. FitNetLoss ADAPTER, RDDLoss)')
        student_cfg = complete_sub_config(model_cfg.STUDENT, 'MODEL.STUDENT')
        teacher_cfg = complete_sub_config(model_cfg.TEACHER, 'MODEL.TEACHER')
        for who, sub in (('STUDENT', student_cfg), ('TEACHER', teacher_cfg)):
            if 'MODEL' not in sub:
                raise KDConfigError(f'MODEL.{who} must be a whole config with a MODEL section '
                                    f'(write MODEL.{who}: {{_BASE_CONFIG_: path/to/config.yaml}})')
        class_names = list(dataset.class_names)
        for who, sub in (('STUDENT', student_cfg), ('TEACHER', teacher_cfg)):
            if 'CLASS_NAMES' in sub and list(sub.CLASS_NAMES) != class_names:
                raise KDConfigError(f'MODEL.{who}.CLASS_NAMES {list(sub.CLASS_NAMES)} differ from CLASS_NAMES '
                                    f'{class_names}: teacher and student must share the class list')
        if 'DATA_CONFIG' in student_cfg and not grids_equal(model_geometry(student_cfg), dataset):
            sg = model_geometry(student_cfg)
            raise KDConfigError(f'MODEL.STUDENT.DATA_CONFIG grid (voxel {sg.voxel_size}, range '
                                f'{list(sg.point_cloud_range)}) differs from the data pipeline DATA_CONFIG (voxel '
                                f'{list(dataset.voxel_size)}, range {list(dataset.point_cloud_range)}): the exported '
                                f'student would be evaluated on another grid than it was trained on')
        self.num_class, self.class_names, self.dataset = num_class, class_names, dataset
        self.student = build_network(student_cfg.MODEL, num_class=num_class, dataset=dataset)

        teacher_geom = model_geometry(teacher_cfg)
        teacher = build_network(teacher_cfg.MODEL, num_class=len(teacher_geom.class_names), dataset=teacher_geom)
        ckpt = model_cfg.get('TEACHER_CKPT', None)
        self.teacher_ckpt = None if not ckpt else str(resolve_teacher_ckpt(ckpt, kd_config_dirs(student_cfg, cfg_file)))
        load_teacher_weights(teacher, self.teacher_ckpt)
        self.teacher_bn = model_cfg.get('TEACHER_BN', 'eval')
        set_teacher_mode(freeze(teacher), self.teacher_bn)
        self._teacher = FrozenTeacher(teacher)

        if grids_equal(teacher_geom, dataset):
            self.teacher_voxelizer = None
        else:
            n_feat = dataset.point_feature_encoder.num_point_features
            if teacher_geom.num_point_features != n_feat:
                raise KDConfigError(f'MODEL.TEACHER uses {teacher_geom.num_point_features} point features, the '
                                    f'student\'s data pipeline gives {n_feat}')
            self.teacher_voxelizer = TeacherVoxelizer(teacher_cfg, n_feat)
            _LOG.info('Teacher grid (voxel %s, range %s) differs from the student data grid (voxel %s, range %s): '
                      'points are re-voxelized for the teacher', teacher_geom.voxel_size,
                      list(teacher_geom.point_cloud_range), list(dataset.voxel_size), list(dataset.point_cloud_range))

        self.grid_mismatch = model_cfg.get('GRID_MISMATCH', 'resample')
        context = KDContext(teacher=ModelFacts.from_model(teacher), student=ModelFacts.from_model(self.student),
                            grid_mismatch=self.grid_mismatch)
        context.check_same_heads('MODEL.TEACHER.MODEL.DENSE_HEAD')
        self.kd_context = context
        built, self.kd_weights, self.kd_names = {}, [], []  # weights / names in KD_LOSSES order
        for i, loss_cfg in enumerate(model_cfg.KD_LOSSES or []):
            module = build_kd_loss(loss_cfg, context, index=i)  # first: its errors name a missing / unknown NAME
            key = kd_loss_key(loss_cfg, i, taken=self.kd_names)
            built[key] = module
            self.kd_weights.append(float(loss_cfg.get('WEIGHT', 1.0)))
            self.kd_names.append(key)
        self.kd_losses = nn.ModuleDict([(k, built[k]) for k in sorted(built)])
        self.loss_det_weight = float(model_cfg.get('LOSS_DET_WEIGHT', 1.0))
        self.tap_keys = tuple(sorted({k for loss in self.kd_losses.values()
                                      for k in getattr(loss, 'feature_keys', ('spatial_features_2d',))}))
        for key in self.tap_keys:
            context.feature_channels(key, 'MODEL.KD_LOSSES', cfg_key='feature key')
        requires = {r for loss in self.kd_losses.values() for r in getattr(loss, 'REQUIRES', DEFAULT_REQUIRES)}
        self.need_student_boxes = 'student_boxes' in requires
        self.need_teacher_boxes = 'boxes' in requires or self.need_student_boxes
        # decode only what the box consumers can use (exact: see registry.decode_post_cfg)
        consumers = [loss for loss in self.kd_losses.values()
                     if {'boxes', 'student_boxes'} & set(getattr(loss, 'REQUIRES', DEFAULT_REQUIRES))]
        scores = [getattr(loss, 'min_box_score', None) for loss in consumers]
        self.min_box_score = min(float(v) for v in scores) if scores and None not in scores else None
        self.decode_cfgs = {'teacher': decode_post_cfg(teacher, self.min_box_score),
                            'student': decode_post_cfg(self.student, self.min_box_score)}

    # ------------------------------------------------------------------ teacher plumbing
    @property
    def teacher(self):
        """The frozen teacher detector (not a submodule)."""
        return self._teacher.model

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        self._teacher.model._apply(fn, *args, **kwargs)
        return self

    def train(self, mode=True):
        """Student and KD losses follow ``mode``; the teacher stays in eval mode (BN per ``TEACHER_BN``)."""
        super().train(mode)
        set_teacher_mode(self._teacher.model, self.teacher_bn)
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

    @torch.no_grad()
    def forward_teacher(self, batch_dict):
        """Teacher forward on its own shallow copy of the batch (cloned ``gt_boxes``; own voxels if its grid
        differs); returns the tapped outputs (features, raw head maps, decoded ``boxes`` when a loss needs
        them, else None), all detached. The head's maps are computed without its own decoding."""
        teacher = self._teacher.model
        tbatch = dict(batch_dict)
        if 'gt_boxes' in tbatch:
            tbatch['gt_boxes'] = tbatch['gt_boxes'].clone()
        if self.teacher_voxelizer is not None:
            self.teacher_voxelizer(tbatch, training=self.training)
        for module in teacher.module_list:
            if module is teacher.dense_head:
                break
            tbatch = module(tbatch)
        preds = feature_taps.raw_head_maps(teacher.dense_head, tbatch['spatial_features_2d'])
        out = feature_taps.tap_outputs(teacher, tbatch, self.tap_keys, detach=True, pred_dicts=preds)
        if self.need_teacher_boxes:
            out['boxes'] = feature_taps.decode_boxes(teacher, preds, tbatch['batch_size'],
                                                     self.decode_cfgs['teacher'])
        return out

    def forward_student(self, batch_dict):
        """Student training forward on a shallow copy; returns ``(ret_dict, tb_dict, disp_dict, student_out)``."""
        sbatch = dict(batch_dict)
        ret_dict, tb_dict, disp_dict = self.student(sbatch)
        out = feature_taps.tap_outputs(self.student, sbatch, self.tap_keys, with_targets=True)
        if self.need_student_boxes:
            out['boxes'] = feature_taps.decode_boxes(self.student, out['pred_dicts'], sbatch['batch_size'],
                                                     self.decode_cfgs['student'])
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
