"""The one BEV grid type: where a model's BEV maps lie in metres.

Convention (OpenPCDet's, docs/architecture.md): a BEV map is ``(B, C, H, W)``, ``H`` along y and ``W`` along x;
cell ``(i, j)`` covers ``x in [x_min + j*sx, x_min + (j+1)*sx)`` and ``y in [y_min + i*sy, y_min + (i+1)*sy)``
with ``sx = voxel_size_x * feature_map_stride`` metres. *Cell coordinates* are continuous and edge-based:
``u = (x - x_min) / sx`` is 0 at the left edge of column 0, ``j + 0.5`` at the centre of column ``j`` (the
encoding CenterPoint's ``center`` offsets use: cell index ``floor(u)`` plus offset ``u - floor(u)``).

A leaf module (imports only :mod:`rdd.errors`): the config schema, the models, the datasets and the KD losses all
describe grids with it. A voxel grid is a ``BEVGrid`` with ``feature_map_stride`` 1.
"""
from dataclasses import dataclass
from typing import Tuple

import numpy as np

from rdd.errors import ConfigError

__all__ = ['BEVGrid', 'voxel_processor_cfg']


def voxel_processor_cfg(data_cfg) -> dict:
    """The ``transform_points_to_voxels`` entry of ``DATA_CONFIG.DATA_PROCESSOR`` (voxel size and limits).

    Raises :class:`ConfigError` when the config has none.
    """
    for entry in data_cfg.get('DATA_PROCESSOR', None) or []:
        if entry.get('NAME') == 'transform_points_to_voxels':
            return entry
    raise ConfigError("DATA_CONFIG.DATA_PROCESSOR has no 'transform_points_to_voxels' entry (needed for VOXEL_SIZE)")


@dataclass(frozen=True)
class BEVGrid:
    """BEV map geometry.

    Attributes:
        point_cloud_range: ``(x_min, y_min, z_min, x_max, y_max, z_max)`` metres.
        voxel_size: ``(vx, vy, vz)`` metres.
        feature_map_stride: voxels per BEV map cell (8 for CenterPoint-Voxel).
    """
    point_cloud_range: Tuple[float, float, float, float, float, float]
    voxel_size: Tuple[float, float, float]
    feature_map_stride: int

    def __post_init__(self):
        pcr = tuple(float(v) for v in self.point_cloud_range)
        vs = tuple(float(v) for v in self.voxel_size)
        if len(pcr) != 6 or len(vs) != 3:
            raise ConfigError(f'BEVGrid needs a 6-value point_cloud_range and a 3-value voxel_size, got {pcr}, {vs}')
        if any(v <= 0 for v in vs) or int(self.feature_map_stride) < 1:
            raise ConfigError(f'BEVGrid: voxel_size {vs} must be > 0 and feature_map_stride '
                              f'{self.feature_map_stride} >= 1')
        if not all(pcr[k + 3] > pcr[k] for k in range(3)):
            raise ConfigError(f'BEVGrid: point_cloud_range {list(pcr)} must have max > min on every axis')
        object.__setattr__(self, 'point_cloud_range', pcr)
        object.__setattr__(self, 'voxel_size', vs)
        object.__setattr__(self, 'feature_map_stride', int(self.feature_map_stride))

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, cfg, feature_map_stride=None):
        """From a whole config: ``DATA_CONFIG.POINT_CLOUD_RANGE``, the voxel processor's ``VOXEL_SIZE`` and
        ``MODEL.DENSE_HEAD.TARGET_ASSIGNER_CONFIG.FEATURE_MAP_STRIDE`` (or ``feature_map_stride``)."""
        if feature_map_stride is None:
            try:
                feature_map_stride = cfg['MODEL']['DENSE_HEAD']['TARGET_ASSIGNER_CONFIG']['FEATURE_MAP_STRIDE']
            except KeyError:
                raise ConfigError('MODEL.DENSE_HEAD.TARGET_ASSIGNER_CONFIG.FEATURE_MAP_STRIDE is needed for the '
                                  'BEV grid') from None
        data_cfg = cfg['DATA_CONFIG']
        return cls(tuple(data_cfg['POINT_CLOUD_RANGE']), tuple(voxel_processor_cfg(data_cfg)['VOXEL_SIZE']),
                   int(feature_map_stride))

    @classmethod
    def from_dataset(cls, dataset, feature_map_stride=1):
        """From anything with ``point_cloud_range`` and ``voxel_size`` (a dataset, ``model_geometry(cfg)``); with
        the default stride 1 it is the dataset's voxel grid."""
        return cls(tuple(np.asarray(dataset.point_cloud_range, dtype=np.float64).tolist()),
                   tuple(float(v) for v in dataset.voxel_size), int(feature_map_stride))

    # ------------------------------------------------------------------ derived facts
    @property
    def x_min(self) -> float:
        return self.point_cloud_range[0]

    @property
    def y_min(self) -> float:
        return self.point_cloud_range[1]

    @property
    def x_max(self) -> float:
        return self.point_cloud_range[3]

    @property
    def y_max(self) -> float:
        return self.point_cloud_range[4]

    @property
    def cell_size(self) -> Tuple[float, float]:
        """``(sx, sy)`` metres per map cell."""
        return (self.voxel_size[0] * self.feature_map_stride, self.voxel_size[1] * self.feature_map_stride)

    @property
    def voxel_grid_size(self) -> Tuple[int, int, int]:
        """Voxels along x, y, z: ``round((max - min) / voxel_size)`` (OpenPCDet's DataProcessor formula)."""
        pcr = np.asarray(self.point_cloud_range, dtype=np.float32)
        return tuple(int(v) for v in np.round((pcr[3:6] - pcr[0:3]) / np.asarray(self.voxel_size, np.float32)))

    @property
    def map_size(self) -> Tuple[int, int]:
        """``(H, W)`` cells of the BEV maps (voxel grid // stride, as the sparse backbone gives)."""
        gx, gy, _ = self.voxel_grid_size
        return (gy // self.feature_map_stride, gx // self.feature_map_stride)

    # ------------------------------------------------------------------ comparisons and conversions
    def same_as(self, other: 'BEVGrid') -> bool:
        """Same map size, origin (1e-5 m) and cell size (1e-9 m): maps of the two grids align cell for cell."""
        return (self.map_size == other.map_size
                and all(abs(a - b) < 1e-5 for a, b in zip((self.x_min, self.y_min), (other.x_min, other.y_min)))
                and all(abs(a - b) < 1e-9 for a, b in zip(self.cell_size, other.cell_size)))

    def same_voxels(self, other: 'BEVGrid') -> bool:
        """Same voxelisation: point-cloud range (1e-5 m) and voxel size (1e-6 m) on all three axes, so points
        voxelised for one grid are the voxels of the other (the stride is not compared)."""
        return (np.allclose(np.asarray(self.voxel_size), np.asarray(other.voxel_size), atol=1e-6)
                and np.allclose(np.asarray(self.point_cloud_range), np.asarray(other.point_cloud_range), atol=1e-5))

    def metric_to_cell(self, x, y):
        """Metres -> continuous edge-based cell coordinates ``(u, v)`` (column, row); works on numbers, numpy
        arrays and tensors alike."""
        sx, sy = self.cell_size
        return (x - self.x_min) / sx, (y - self.y_min) / sy

    def cell_to_metric(self, u, v):
        """Continuous edge-based cell coordinates ``(u, v)`` -> metres ``(x, y)`` (inverse of metric_to_cell)."""
        sx, sy = self.cell_size
        return u * sx + self.x_min, v * sy + self.y_min

    def check_shape(self, height, width, what='BEV map'):
        """ValueError naming ``what`` when a ``(height, width)`` map is not ``map_size``."""
        if (int(height), int(width)) != self.map_size:
            raise ValueError(f'{what} has H={height}, W={width} but its grid (range {list(self.point_cloud_range)}, '
                             f'voxel {list(self.voxel_size)}, stride {self.feature_map_stride}) gives '
                             f'H={self.map_size[0]}, W={self.map_size[1]}')

    def __str__(self):
        return (f'BEVGrid(range={list(self.point_cloud_range)}, voxel={list(self.voxel_size)}, '
                f'stride={self.feature_map_stride}, map H x W={self.map_size[0]} x {self.map_size[1]})')
