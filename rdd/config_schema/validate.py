"""Validation of a whole config file at load (:func:`validate_config`), with errors naming the key and the file.

:class:`ConfigFile` is the top level (``CLASS_NAMES``, ``DATA_CONFIG``, ``MODEL``, ``OPTIMIZATION``); ``MODEL`` is
validated by its ``NAME`` (:data:`rdd.config_schema.model.MODEL_SECTIONS`, plus ``Distiller``, whose ``STUDENT``
and ``TEACHER`` are whole configs again). After the sections, the grid is checked against the model's strides
(:func:`check_grid`). ``MODEL.KD_LOSSES`` entries are validated by the KD-loss registry when the Distiller builds
them (their schemas live with the losses).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Mapping, Optional, Tuple

from rdd.errors import ConfigError
from rdd.geometry import BEVGrid

from .data import DataConfig
from .model import BaseBEVBackboneConfig, CenterHeadConfig, CenterPointConfig, VoxelResBackBone8xConfig
from .optimization import OptimizationConfig
from .sections import ByName, parse_section

__all__ = ['ConfigFile', 'DistillerConfig', 'validate_config', 'check_grid', 'source_of']


@dataclass(frozen=True)
class DistillerConfig:
    """``MODEL: {NAME: Distiller, ...}`` (see :mod:`rdd.distill.distiller`)."""
    REFUSED = {'ADAPTERS': 'adapters belong to the KD loss that needs them (e.g. FitNetLoss ADAPTER, RDDLoss)'}
    student: 'ConfigFile'
    teacher: 'ConfigFile'
    kd_losses: Tuple[Mapping, ...]
    teacher_ckpt: Optional[str] = None
    teacher_bn: Literal['eval', 'batch'] = 'eval'
    teacher_precision: Literal['fp32', 'bf16', 'fp16'] = 'fp32'
    grid_mismatch: Literal['resample', 'error'] = 'resample'
    loss_det_weight: float = 1.0

    def __post_init__(self):
        if not self.kd_losses:
            raise ConfigError('is empty: a Distiller without KD losses trains the student alone behind a teacher '
                              'forward that nothing uses; list at least one loss (e.g. [{NAME: RDDLoss}]), or train '
                              'the student config itself', key='KD_LOSSES')


DETECTOR_SECTIONS = {'CenterPoint': CenterPointConfig, 'Distiller': DistillerConfig}


@dataclass(frozen=True)
class ConfigFile:
    """A whole OpenPCDet-schema config."""
    class_names: Tuple[str, ...]
    data_config: DataConfig
    model: Annotated[Mapping, ByName(DETECTOR_SECTIONS, unknown='pass')]
    optimization: Optional[OptimizationConfig] = None
    root_dir: Optional[str] = None
    cfg_file: Optional[str] = None

    def __post_init__(self):
        check_grid(self)


def check_grid(cfg: ConfigFile) -> None:
    """The voxel grid must fit a CenterPoint's strides: ``MODEL.DENSE_HEAD.TARGET_ASSIGNER_CONFIG
    .FEATURE_MAP_STRIDE`` = the 3D backbone's x/y downsampling x the BEV backbone's output stride, and the voxel
    grid's x and y sizes multiples of every downsampling (else the maps and the targets disagree). ConfigError
    naming the key; models the schema does not know are not checked."""
    model = cfg.model
    if not isinstance(model, CenterPointConfig) or not isinstance(model.backbone_3d, VoxelResBackBone8xConfig) \
            or not isinstance(model.dense_head, CenterHeadConfig):
        return
    bev = model.backbone_2d
    bev_divisor, bev_stride = (bev.input_divisor, bev.output_stride) if isinstance(bev, BaseBEVBackboneConfig) \
        else (1, 1)
    down = model.backbone_3d.XY_DOWNSAMPLE
    stride = model.dense_head.target_assigner_config.feature_map_stride
    if down * bev_stride != stride:
        raise ConfigError(f'is {stride} but the model\'s BEV maps have stride {down} (BACKBONE_3D) x {bev_stride:g} '
                          f'(BACKBONE_2D) = {down * bev_stride:g}',
                          key='MODEL.DENSE_HEAD.TARGET_ASSIGNER_CONFIG.FEATURE_MAP_STRIDE')
    data = cfg.data_config
    voxel = data.voxel_processor.voxel_size
    gx, gy, _ = BEVGrid(data.point_cloud_range, voxel, 1).voxel_grid_size
    divisor = math.lcm(down * bev_divisor, stride)
    if gx % divisor or gy % divisor:
        raise ConfigError(
            f'{list(voxel)} with POINT_CLOUD_RANGE {list(data.point_cloud_range)} gives a {gx} x {gy} voxel grid; '
            f'x and y must be multiples of {divisor} (BACKBONE_3D downsamples by {down}, BACKBONE_2D by '
            f'{bev_divisor}, FEATURE_MAP_STRIDE {stride})',
            key=f'DATA_CONFIG.DATA_PROCESSOR[{data.voxel_processor_index()}].VOXEL_SIZE',
            related=('DATA_CONFIG.POINT_CLOUD_RANGE',))


def source_of(key: str, origin: Mapping[str, Path]) -> Optional[Path]:
    """The file that set the dotted ``key`` (or its nearest enclosing mapping), from a loader's ``origin`` map;
    list indices (``A[2].B``) fall back to the list's key."""
    while key:
        if key in origin:
            return origin[key]
        key = key.rsplit('.', 1)[0] if '.' in key else ''
        if key.endswith(']'):
            key = key[:key.rindex('[')]
    return None


def validate_config(cfg: Mapping, origin: Optional[Mapping[str, Path]] = None, cfg_file: Optional[Path] = None):
    """Validate a loaded config; :class:`ConfigError` ``'<file>: <key>: <problem>'``, the file being the one that
    set the key (``origin``: dotted key -> file, from :func:`rdd.config.load_config_with_origin`; overrides map
    to ``'--set'``), else ``cfg_file``. Returns the parsed :class:`ConfigFile`."""
    origin = origin or {}
    try:
        return parse_section(ConfigFile, cfg, '')
    except ConfigError as err:
        src = source_of(err.key or '', origin) or cfg_file
        others = [(k, source_of(k, origin)) for k in err.related]
        also = ''.join(f' ({k} set in {f})' for k, f in others if f is not None and f != src)
        raise ConfigError(f'{src}: {err}{also}' if src else f'{err}{also}', key=err.key) from None
