"""What a KD loss may know about the two models when it is built: :class:`KDContext`.

Every KD loss is built the same way, ``LossClass.from_config(cfg, context)`` (see :mod:`rdd.distill.registry`);
``context`` holds, per side, a :class:`ModelFacts` (BEV grid, feature widths, head layout) and the Distiller's
grid policy. Losses read facts from it; they never reach into the models.
"""
from dataclasses import dataclass, field
from typing import Dict, Literal, Tuple

import torch

from rdd.errors import KDConfigError
from rdd.geometry import BEVGrid

__all__ = ['HeadLayout', 'ModelFacts', 'KDContext', 'GRID_MISMATCH_POLICIES']

GRID_MISMATCH_POLICIES = ('resample', 'error')

# batch_dict key -> (detector attribute, attribute holding the map's channels)
FEATURE_CHANNEL_ATTRS = {
    'spatial_features': ('map_to_bev_module', 'num_bev_features'),
    'spatial_features_2d': ('backbone_2d', 'num_bev_features'),
}


@dataclass(frozen=True)
class HeadLayout:
    """A CenterHead's output layout (OpenPCDet ``DENSE_HEAD`` keys).

    Attributes:
        class_names: ``CLASS_NAMES``; labels are 1-based indices into it.
        class_names_each_head: class names of each head group (``CLASS_NAMES_EACH_HEAD``).
        head_order: regression maps of a group in order (``SEPARATE_HEAD_CFG.HEAD_ORDER``, e.g. center,
            center_z, dim, rot, vel); ``hm`` is not listed.
        head_channels: ``{name: channels}`` of those maps (``dim`` holds log sizes, ``rot`` sin/cos).
        code_weights: ``LOSS_CONFIG.LOSS_WEIGHTS.code_weights`` (one per regression channel).
        gaussian_overlap / min_radius: ``TARGET_ASSIGNER_CONFIG`` (CenterPoint's Gaussian radius), cells.
    """
    class_names: Tuple[str, ...]
    class_names_each_head: Tuple[Tuple[str, ...], ...]
    head_order: Tuple[str, ...]
    head_channels: Dict[str, int] = field(hash=False)
    code_weights: Tuple[float, ...]
    gaussian_overlap: float
    min_radius: int

    @classmethod
    def from_head(cls, head):
        """From a built CenterHead (``rdd.models.dense_heads.CenterHead``)."""
        cfg = head.model_cfg
        order = tuple(cfg.SEPARATE_HEAD_CFG.HEAD_ORDER)
        head_dict = cfg.SEPARATE_HEAD_CFG.HEAD_DICT
        assigner = cfg.TARGET_ASSIGNER_CONFIG
        return cls(class_names=tuple(head.class_names),
                   class_names_each_head=tuple(tuple(h) for h in head.class_names_each_head),
                   head_order=order, head_channels={k: int(head_dict[k]['out_channels']) for k in order},
                   code_weights=tuple(float(w) for w in cfg.LOSS_CONFIG.LOSS_WEIGHTS['code_weights']),
                   gaussian_overlap=float(assigner.GAUSSIAN_OVERLAP), min_radius=int(assigner.MIN_RADIUS))

    @property
    def num_reg_channels(self) -> int:
        return sum(self.head_channels[k] for k in self.head_order)

    def label_to_group(self) -> torch.Tensor:
        """``(num_classes + 1,)`` int64: head group of each 1-based label, -1 for label 0 / unmapped classes."""
        out = torch.full((len(self.class_names) + 1,), -1, dtype=torch.long)
        for g, names in enumerate(self.class_names_each_head):
            for name in names:
                out[self.class_names.index(name) + 1] = g
        return out

    def same_outputs(self, other: 'HeadLayout') -> bool:
        """Same classes, groups and regression maps (so head maps can be compared channel for channel)."""
        return (self.class_names == other.class_names and self.class_names_each_head == other.class_names_each_head
                and self.head_order == other.head_order and self.head_channels == other.head_channels)


@dataclass(frozen=True)
class ModelFacts:
    """One model's facts: ``grid`` (BEV maps), ``feature_channels`` (``{batch_dict key: C}`` of the tappable
    BEV maps) and ``head`` (its :class:`HeadLayout`)."""
    grid: BEVGrid
    feature_channels: Dict[str, int] = field(hash=False)
    head: HeadLayout

    @classmethod
    def from_model(cls, model):
        """From a built CenterPoint-style detector (``model.dataset`` gives range and voxel size)."""
        channels = {}
        for key, (attr, ch_attr) in FEATURE_CHANNEL_ATTRS.items():
            module = getattr(model, attr, None)
            if module is not None and hasattr(module, ch_attr):
                channels[key] = int(getattr(module, ch_attr))
        if 'spatial_features_2d' not in channels and 'spatial_features' in channels:
            channels['spatial_features_2d'] = channels['spatial_features']  # no 2D backbone
        head = model.dense_head
        stride = int(head.model_cfg.TARGET_ASSIGNER_CONFIG.FEATURE_MAP_STRIDE)
        return cls(grid=BEVGrid.from_dataset(model.dataset, stride), feature_channels=channels,
                   head=HeadLayout.from_head(head))


@dataclass(frozen=True)
class KDContext:
    """Teacher and student facts plus the Distiller's ``GRID_MISMATCH`` policy.

    ``grid_mismatch``: ``'resample'`` (a loss brings one model's maps onto the other's grid, as it documents) or
    ``'error'`` (a loss that would need to resample refuses at build time, :meth:`check_grid`).
    """
    teacher: ModelFacts
    student: ModelFacts
    grid_mismatch: Literal['resample', 'error'] = 'resample'

    def __post_init__(self):
        if self.grid_mismatch not in GRID_MISMATCH_POLICIES:
            raise KDConfigError(f'MODEL.GRID_MISMATCH must be one of {GRID_MISMATCH_POLICIES}, '
                                f'got {self.grid_mismatch!r}')

    @property
    def grids_differ(self) -> bool:
        return not self.teacher.grid.same_as(self.student.grid)

    def feature_channels(self, key, loss_name, cfg_key='FEATURE_KEY'):
        """``(C_teacher, C_student)`` of feature ``key``; KDConfigError naming the key when a model lacks it."""
        missing = [who for who, facts in (('teacher', self.teacher), ('student', self.student))
                   if key not in facts.feature_channels]
        if missing:
            raise KDConfigError(f'{loss_name}.{cfg_key}: feature key {key!r} is not produced by the '
                                f'{" and ".join(missing)} (available: {sorted(self.student.feature_channels)})')
        return self.teacher.feature_channels[key], self.student.feature_channels[key]

    def check_grid(self, loss_name):
        """KDConfigError when the grids differ and ``GRID_MISMATCH`` is 'error'."""
        if self.grids_differ and self.grid_mismatch == 'error':
            raise KDConfigError(
                f'{loss_name}: student and teacher BEV grids differ (student {self.student.grid}, teacher '
                f'{self.teacher.grid}) and MODEL.GRID_MISMATCH is "error"; set it to "resample" or use the '
                f'same voxel size / range / stride')

    def check_same_heads(self, loss_name):
        """KDConfigError unless both heads have the same classes, groups and regression maps."""
        t, s = self.teacher.head, self.student.head
        if not t.same_outputs(s):
            raise KDConfigError(f'{loss_name}: teacher and student heads differ (teacher groups '
                                f'{t.class_names_each_head}, maps {t.head_channels}; student groups '
                                f'{s.class_names_each_head}, maps {s.head_channels}); head maps cannot be compared')
