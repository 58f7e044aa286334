"""Schemas of a detector's ``MODEL`` sections (OpenPCDet's keys; every key the modules read, and no other).

:data:`MODEL_SECTIONS` maps a module section's ``NAME`` to its dataclass; a ``NAME`` not listed (a class that
code outside this file registers, e.g. :mod:`rdd.plugin`'s aliases) is left to the registry that builds it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Dict, Mapping, Optional, Tuple

from rdd.errors import ConfigError

from .sections import ByName, key_field

__all__ = ['MODEL_SECTIONS', 'CenterPointConfig', 'VoxelResBackBone8xConfig', 'VoxelResBackBone8xWidthConfig',
           'BaseBEVBackboneConfig', 'BaseBEVBackboneWidthConfig', 'CenterHeadConfig', 'bev_output_stride']

Floats6 = Tuple[float, float, float, float, float, float]


@dataclass(frozen=True)
class MeanVFEConfig:
    """``VFE: {NAME: MeanVFE}``: no options."""


# OpenPCDet's classes of these names read only the keys of their schemas here (pcdet/models/backbones_3d/
# spconv_backbone.py: fixed filters 16-16-32-64-128-128; backbones_2d/base_bev_backbone.py: the five lists). A width
# key on them would build OpenPCDet's full-width module and load only part of a student checkpoint, so it is
# refused; the plugin's distinct class names (``...Width``) carry the widths where OpenPCDet cannot express them.
_UPSTREAM_3D_WIDTH = ("OpenPCDet's VoxelResBackBone8x has fixed filters [16, 16, 32, 64, 128, 128] and ignores "
                      "WIDTH / NUM_FILTERS (it would build the full-width backbone and load the checkpoint only in "
                      "part); name the plugin's class instead: NAME: VoxelResBackBone8xWidth (registered by "
                      "rdd.plugin; it reads WIDTH and NUM_FILTERS)")


def _upstream_bev_width(section: Mapping) -> str:
    width = section.get('WIDTH')
    try:
        explicit = ', '.join(f'{key}: {[int(c * float(width)) for c in section[key]]}'
                             for key in ('NUM_FILTERS', 'NUM_UPSAMPLE_FILTERS') if key in section)
    except (TypeError, ValueError):
        explicit = ''
    spelled = f' ({explicit} for WIDTH {width})' if explicit else ''
    return ("OpenPCDet's BaseBEVBackbone ignores WIDTH (it would build the full-width backbone and load the "
            "checkpoint only in part); write the scaled NUM_FILTERS / NUM_UPSAMPLE_FILTERS out" + spelled +
            ", or name the plugin's class BaseBEVBackboneWidth (registered by rdd.plugin; it reads WIDTH)")


@dataclass(frozen=True)
class VoxelResBackBone8xConfig:
    """``BACKBONE_3D: {NAME: VoxelResBackBone8x}``: OpenPCDet's fixed filters 16-16-32-64-128-128, no options."""
    XY_DOWNSAMPLE: ClassVar[int] = 8  # three stride-2 sparse convs in x and y
    REFUSED: ClassVar[Dict[str, Any]] = {'WIDTH': _UPSTREAM_3D_WIDTH, 'NUM_FILTERS': _UPSTREAM_3D_WIDTH}


@dataclass(frozen=True)
class VoxelResBackBone8xWidthConfig(VoxelResBackBone8xConfig):
    """``BACKBONE_3D: {NAME: VoxelResBackBone8xWidth}``: SparseKD's ``WIDTH`` multiplies ``NUM_FILTERS`` (6 widths,
    default 16-16-32-64-128-128)."""
    REFUSED: ClassVar[Dict[str, Any]] = {}
    width: Optional[float] = None
    num_filters: Optional[Tuple[int, int, int, int, int, int]] = None

    def __post_init__(self):
        if self.width is not None and self.width <= 0:
            raise ConfigError(f'must be > 0, got {self.width}', key='WIDTH')


@dataclass(frozen=True)
class HeightCompressionConfig:
    """``MAP_TO_BEV``: ``NUM_BEV_FEATURES`` = 3D output channels x z slices."""
    num_bev_features: int


def bev_output_stride(layer_strides, upsample_strides):
    """Stride of ``BaseBEVBackbone``'s output relative to its input: every branch must give the same one
    (its blocks' cumulative stride divided by its upsampling); ValueError otherwise."""
    if not upsample_strides:
        out = 1
        for s in layer_strides:
            out *= s
        return out
    strides, cumulative = set(), 1
    for layer, up in zip(layer_strides, upsample_strides):
        cumulative *= layer
        strides.add(cumulative / up)
    if len(strides) != 1:
        raise ValueError(f'the branches of LAYER_STRIDES {list(layer_strides)} / UPSAMPLE_STRIDES '
                         f'{list(upsample_strides)} give maps of different strides {sorted(strides)}')
    return strides.pop()


@dataclass(frozen=True)
class BaseBEVBackboneConfig:
    """``BACKBONE_2D: {NAME: BaseBEVBackbone}`` (OpenPCDet's five lists, filters written out)."""
    REFUSED: ClassVar[Dict[str, Any]] = {'WIDTH': _upstream_bev_width}
    layer_nums: Tuple[int, ...]
    layer_strides: Tuple[int, ...]
    num_filters: Tuple[int, ...]
    upsample_strides: Optional[Tuple[float, ...]] = None
    num_upsample_filters: Optional[Tuple[int, ...]] = None
    use_conv_for_no_stride: Optional[bool] = None

    def __post_init__(self):
        if not len(self.layer_nums) == len(self.layer_strides) == len(self.num_filters):
            raise ConfigError('LAYER_NUMS, LAYER_STRIDES and NUM_FILTERS need the same length')
        if len(self.upsample_strides or ()) != len(self.num_upsample_filters or ()):
            raise ConfigError('UPSAMPLE_STRIDES and NUM_UPSAMPLE_FILTERS need the same length')
        bev_output_stride(self.layer_strides, self.upsample_strides)

    @property
    def output_stride(self) -> float:
        return bev_output_stride(self.layer_strides, self.upsample_strides)

    @property
    def input_divisor(self) -> int:
        """The input map size must be a multiple of this (every strided block halves it exactly)."""
        out = 1
        for s in self.layer_strides:
            out *= s
        return out


@dataclass(frozen=True)
class BaseBEVBackboneWidthConfig(BaseBEVBackboneConfig):
    """``BACKBONE_2D: {NAME: BaseBEVBackboneWidth}``: SparseKD's ``WIDTH`` scales ``NUM_FILTERS`` and
    ``NUM_UPSAMPLE_FILTERS``."""
    REFUSED: ClassVar[Dict[str, Any]] = {}
    width: Optional[float] = None

    def __post_init__(self):
        super().__post_init__()
        if self.width is not None and self.width <= 0:
            raise ConfigError(f'must be > 0, got {self.width}', key='WIDTH')


@dataclass(frozen=True)
class HeadSpec:
    out_channels: int = key_field('out_channels')
    num_conv: int = key_field('num_conv')


@dataclass(frozen=True)
class SeparateHeadConfig:
    head_order: Tuple[str, ...]
    head_dict: Dict[str, HeadSpec]

    def __post_init__(self):
        missing = [name for name in self.head_order if name not in self.head_dict]
        if missing:
            raise ConfigError(f'HEAD_ORDER names {missing} that HEAD_DICT lacks', key='HEAD_ORDER')


@dataclass(frozen=True)
class TargetAssignerConfig:
    feature_map_stride: int
    num_max_objs: int
    gaussian_overlap: float
    min_radius: int


@dataclass(frozen=True)
class LossWeights:
    cls_weight: float = key_field('cls_weight')
    loc_weight: float = key_field('loc_weight')
    code_weights: Tuple[float, ...] = key_field('code_weights')


@dataclass(frozen=True)
class LossConfig:
    """``LOSS_CONFIG``: the weights of the heatmap and regression losses."""
    loss_weights: LossWeights


@dataclass(frozen=True)
class NMSConfig:
    """``NMS_CONFIG``: OpenPCDet's class-agnostic rotated NMS (``nms_gpu``; ``circle_nms`` is refused when
    the head is built)."""
    nms_type: str
    nms_thresh: float        # suppress above this BEV IoU
    nms_pre_maxsize: int     # boxes entering NMS, per head
    nms_post_maxsize: int    # boxes kept, per head


@dataclass(frozen=True)
class HeadPostProcessing:
    score_thresh: float
    post_center_limit_range: Floats6
    max_obj_per_sample: int
    nms_config: NMSConfig


@dataclass(frozen=True)
class CenterHeadConfig:
    """``DENSE_HEAD: {NAME: CenterHead, ...}`` (OpenPCDet's CenterHead keys)."""
    class_names_each_head: Tuple[Tuple[str, ...], ...]
    shared_conv_channel: int
    separate_head_cfg: SeparateHeadConfig
    target_assigner_config: TargetAssignerConfig
    loss_config: LossConfig
    post_processing: HeadPostProcessing
    class_agnostic: Optional[bool] = None        # one heatmap class
    use_bias_before_norm: Optional[bool] = None  # biases in the convs followed by BN
    num_hm_conv: Optional[int] = None            # convs of the heatmap branch
    bn_eps: Optional[float] = None
    bn_mom: Optional[float] = None
    init_bias: Optional[float] = None            # heatmap logit bias at init (-2.19: prior 0.1)

    def __post_init__(self):
        if self.shared_conv_channel < 1:
            raise ConfigError(f'must be >= 1, got {self.shared_conv_channel}', key='SHARED_CONV_CHANNEL')


@dataclass(frozen=True)
class DetectorPostProcessing:
    recall_thresh_list: Optional[Tuple[float, ...]] = None
    eval_metric: Optional[str] = None


#: module section ``NAME`` -> its schema
MODEL_SECTIONS: Dict[str, type] = {
    'MeanVFE': MeanVFEConfig, 'VoxelResBackBone8x': VoxelResBackBone8xConfig,
    'VoxelResBackBone8xWidth': VoxelResBackBone8xWidthConfig, 'HeightCompression': HeightCompressionConfig,
    'BaseBEVBackbone': BaseBEVBackboneConfig, 'BaseBEVBackboneWidth': BaseBEVBackboneWidthConfig,
    'CenterHead': CenterHeadConfig, 'CenterHeadRDD': CenterHeadConfig,
}
Module = Annotated[Mapping, ByName(MODEL_SECTIONS, unknown='pass')]


@dataclass(frozen=True)
class CenterPointConfig:
    """``MODEL: {NAME: CenterPoint, ...}``: the five module sections, each validated by its ``NAME``."""
    vfe: Module
    backbone_3d: Module
    map_to_bev: Module
    backbone_2d: Module
    dense_head: Module
    post_processing: Optional[DetectorPostProcessing] = None
    ignore_pretrain_modules: Optional[Any] = None
