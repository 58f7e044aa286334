"""Registry of knowledge-distillation losses: ``KD_LOSSES`` maps a config ``NAME`` to a builder.

Contract for a KD loss (an ``nn.Module``):

* ``from_config(cfg, context)`` classmethod: ``cfg`` is one entry of ``MODEL.KD_LOSSES`` (EasyDict, with
  ``NAME`` and ``WEIGHT``, which the Distiller consumes; its optional ``TAG``, the Distiller's key for the entry,
  is removed before the builder sees it), ``context`` a :class:`KDContext`. Build-time checks (a feature key
  the models do not produce, adapter channels that do not match, a grid mismatch the loss cannot handle) raise
  :class:`KDConfigError` naming the key.
* ``forward(teacher, student, batch_dict) -> (loss, tb_dict)``: ``teacher`` / ``student`` are the dicts made
  by :func:`rdd.distill.feature_taps.tap_outputs`: the tapped feature maps by key (e.g.
  ``spatial_features_2d`` (B, C, H, W)), ``pred_dicts`` (list over head groups of raw head maps, ``hm`` as
  logits), ``target_dicts`` (the student's CenterPoint targets, student dict only) and ``boxes`` (per-sample
  decoded dicts ``pred_boxes (N, 9)``, ``pred_scores (N,)``, ``pred_labels (N,)`` 1-based; the student's
  detached, computed only when a loss lists ``'student_boxes'`` in ``REQUIRES``). ``batch_dict`` is the
  student's batch (its ``gt_boxes`` (B, M, 10) are the student's targets). ``loss`` is a scalar tensor (0,
  never NaN, when there is nothing to distil), un-weighted: the Distiller multiplies it by ``WEIGHT``.
  ``tb_dict`` holds floats.
* optional class attributes: ``REQUIRES`` (subset of ``DEFAULT_REQUIRES``; default all; ``'student_boxes'``
  makes the Distiller decode the student's maps), ``feature_keys`` (instance attribute: the batch_dict keys
  to tap, default ``('spatial_features_2d',)``) and ``prepare_student_batch(teacher, batch_dict) ->
  batch_dict`` (called after the teacher forward and before the student's; e.g. label KD adds teacher boxes
  to ``gt_boxes``) and ``min_box_score`` (the lowest box score the loss uses: when every box consumer declares
  one, boxes are decoded with ``SCORE_THRESH`` just below the lowest of them when that is above the head's; the
  decoded boxes at or above it are unchanged, decoding is cheaper).
"""
import importlib
import re
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch.nn as nn

KD_LOSSES: Dict[str, Callable] = {}
DEFAULT_REQUIRES = ('features', 'pred_dicts', 'boxes', 'student_boxes', 'target_dicts')


class KDConfigError(ValueError):
    """A ``MODEL.KD_LOSSES`` entry (or the Distiller config) is invalid; the message names the key."""


@dataclass
class GridInfo:
    """Geometry of one model's BEV map.

    ``point_cloud_range`` (6,) metres, ``voxel_size`` (3,) metres, ``feature_map_stride`` (int),
    ``map_size`` (H, W) cells of ``spatial_features_2d`` and the head maps (H along y, W along x).
    """
    point_cloud_range: Tuple[float, ...]
    voxel_size: Tuple[float, ...]
    feature_map_stride: int
    map_size: Tuple[int, int]

    @property
    def cell_size(self):
        """(sx, sy) metres per map cell."""
        return (self.voxel_size[0] * self.feature_map_stride, self.voxel_size[1] * self.feature_map_stride)

    def bev_geometry(self):
        """The map's placement as ``rdd.distill.rdd.roi_grid_pool.BEVGeometry``."""
        from rdd.distill.rdd.roi_grid_pool import BEVGeometry
        return BEVGeometry.from_voxels(self.point_cloud_range, self.voxel_size, self.feature_map_stride)

    def same_as(self, other):
        return (tuple(self.map_size) == tuple(other.map_size)
                and all(abs(a - b) < 1e-6 for a, b in zip(self.point_cloud_range[:2] + self.point_cloud_range[3:5],
                                                          other.point_cloud_range[:2] + other.point_cloud_range[3:5]))
                and all(abs(a - b) < 1e-9 for a, b in zip(self.cell_size, other.cell_size)))


@dataclass
class KDContext:
    """What a KD loss may know about the two models when it is built.

    Attributes:
        teacher_channels / student_channels: ``{batch_dict key: channels}`` of the tappable feature maps
            (``spatial_features`` and ``spatial_features_2d``).
        head_info: dict with ``class_names`` (list), ``class_names_each_head`` (list of lists),
            ``head_order`` (regression map names, e.g. center, center_z, dim, rot, vel), ``head_channels``
            (``{name: channels}`` for those maps), ``code_weights`` (list, the student's LOSS_CONFIG),
            ``teacher_grid`` / ``student_grid`` (:class:`GridInfo`), and ``teacher`` / ``student`` dicts
            (``point_cloud_range``, ``voxel_size``, ``feature_map_stride``, ``class_names_each_head``,
            ``head_dict``, ``map_size``) in the form RDDLoss.from_config reads.
        grid_mismatch: ``'resample'`` (student maps are resampled onto the teacher grid, or the teacher's
            onto the student's, as the loss documents) or ``'error'``.
    """
    teacher_channels: Dict[str, int]
    student_channels: Dict[str, int]
    head_info: dict
    grid_mismatch: str = 'resample'
    extra: dict = field(default_factory=dict)

    @property
    def teacher_grid(self) -> GridInfo:
        return self.head_info['teacher_grid']

    @property
    def student_grid(self) -> GridInfo:
        return self.head_info['student_grid']

    @property
    def grids_differ(self) -> bool:
        return not self.teacher_grid.same_as(self.student_grid)

    def feature_channels(self, key, loss_name, cfg_key='FEATURE_KEY'):
        """``(C_teacher, C_student)`` of feature ``key``; KDConfigError naming the key when a model lacks it."""
        missing = [who for who, ch in (('teacher', self.teacher_channels), ('student', self.student_channels))
                   if key not in ch]
        if missing:
            raise KDConfigError(f'{loss_name}.{cfg_key}: feature key {key!r} is not produced by the '
                                f'{" and ".join(missing)} (available: {sorted(self.student_channels)})')
        return self.teacher_channels[key], self.student_channels[key]

    def check_grid(self, loss_name):
        """Raise KDConfigError when the grids differ and ``GRID_MISMATCH`` is 'error'."""
        if self.grids_differ and self.grid_mismatch == 'error':
            raise KDConfigError(
                f'{loss_name}: student and teacher BEV grids differ (student {self.student_grid}, teacher '
                f'{self.teacher_grid}) and MODEL.GRID_MISMATCH is "error"; set it to "resample" or use the '
                f'same voxel size / range / stride')


_KEY_RE = re.compile(r'^[A-Za-z_][A-Za-z0-9_]*$')


def kd_loss_key(loss_cfg, index, taken=()):
    """The key of ``MODEL.KD_LOSSES[index]``: its ``TAG`` if set, else its ``NAME``. KDConfigError naming the entry
    when the key is not an identifier (it names ``kd_losses.<key>.*`` parameters) or is already in ``taken`` (the
    keys of the entries before it, in order)."""
    key = loss_cfg.get('TAG', None) or loss_cfg.get('NAME', None)
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise KDConfigError(f'MODEL.KD_LOSSES[{index}].TAG: {key!r} is not a valid key (letters, digits, _; '
                            f'no dots)')
    taken = list(taken)
    if key in taken:
        raise KDConfigError(f'MODEL.KD_LOSSES[{index}]: key {key!r} is already used by MODEL.KD_LOSSES'
                            f'[{taken.index(key)}]; give repeated losses distinct TAGs '
                            f'(e.g. TAG: {key.lower()}_{index})')
    return key


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


def register_kd_loss(name, builder=None):
    """Register a KD loss under ``name``.

    Used as a class decorator (``builder`` None: the class's ``from_config(cfg, context)`` builds it) or called
    with an explicit ``builder(cfg, context) -> nn.Module``. Re-registering a name with a different class raises
    ValueError.
    """
    def deco(obj):
        build = builder if builder is not None else obj.from_config
        old = KD_LOSSES.get(name)
        if old is not None and getattr(old, '__qualname__', None) != getattr(build, '__qualname__', None):
            raise ValueError(f'KD loss {name!r} is already registered by {old}')
        KD_LOSSES[name] = build
        return obj
    return deco


def _build_rdd_loss(cfg, context):
    """RDDLoss has its own signature ``from_config(cfg, teacher_channels, student_channels, head_info)``;
    the Distiller's ``GRID_MISMATCH`` is its default ``GRID_MISMATCH``."""
    from rdd.config import ConfigError
    from rdd.distill.rdd import RDDLoss
    from rdd.distill.rdd.rdd_loss import rdd_config_with_defaults
    cfg = dict(cfg)
    cfg.setdefault('GRID_MISMATCH', context.grid_mismatch)
    key = cfg.get('FEATURE_KEY', 'spatial_features_2d')
    t_ch, s_ch = context.feature_channels(key, 'RDDLoss')
    try:
        module = RDDLoss.from_config(cfg, t_ch, s_ch, context.head_info)
    except ConfigError as exc:
        raise KDConfigError(f'RDDLoss: {exc}') from exc
    module.feature_keys = (key,)
    proposal = rdd_config_with_defaults(cfg)['PROPOSAL']
    module.min_box_score = float(proposal['SCORE_THRESH'])
    return module


def _ensure_builtin():
    """Import the built-in losses (baselines; RDDLoss lazily, as ``rdd.distill.rdd`` is a separate package)."""
    importlib.import_module('rdd.distill.baselines')  # registers the baselines
    if 'RDDLoss' not in KD_LOSSES:
        KD_LOSSES['RDDLoss'] = _build_rdd_loss


def known_kd_losses() -> List[str]:
    _ensure_builtin()
    return sorted(KD_LOSSES)


def build_kd_loss(cfg, context: KDContext, index: Optional[int] = None) -> nn.Module:
    """Build one ``MODEL.KD_LOSSES`` entry. KDConfigError for a missing / unknown ``NAME``."""
    _ensure_builtin()
    where = f'MODEL.KD_LOSSES[{index}]' if index is not None else 'MODEL.KD_LOSSES entry'
    if not isinstance(cfg, dict) or 'NAME' not in cfg:
        raise KDConfigError(f'{where} needs a NAME (known: {sorted(KD_LOSSES)})')
    name = cfg['NAME']
    if name not in KD_LOSSES:
        raise KDConfigError(f'{where}.NAME: unknown KD loss {name!r} (known: {sorted(KD_LOSSES)})')
    if 'TAG' in cfg:  # the Distiller's key for this entry (see rdd.distill.distiller), not a loss option
        cfg = type(cfg)({k: v for k, v in cfg.items() if k != 'TAG'})
    try:
        module = KD_LOSSES[name](cfg, context)
    except ImportError as exc:
        raise KDConfigError(f'{where}.NAME: KD loss {name!r} cannot be imported: {exc}') from exc
    if not isinstance(module, nn.Module):
        raise KDConfigError(f'{where}: builder of {name!r} returned {type(module).__name__}, not an nn.Module')
    return module


def check_allowed_keys(cfg, allowed, loss_name):
    """KDConfigError naming any key of ``cfg`` outside ``allowed`` (``NAME`` and ``WEIGHT`` always allowed)."""
    allowed = set(allowed) | {'NAME', 'WEIGHT'}
    unknown = sorted(k for k in cfg if k not in allowed)
    if unknown:
        raise KDConfigError(f'{loss_name}: unknown key(s) {unknown} (allowed: {sorted(allowed)})')
