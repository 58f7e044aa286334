"""What a detector needs to know about its data: :class:`DatasetFacts` and :func:`model_geometry`.

OpenPCDet's ``build_network(model_cfg, num_class, dataset)`` reads a few attributes of ``dataset``
(``class_names``, ``point_cloud_range``, ``voxel_size``, ``grid_size``, ``point_feature_encoder
.num_point_features``, ``depth_downsample_factor``). A real dataset has them; :func:`model_geometry` derives the
same facts from a config alone (no data on disk), for building a teacher, an exported student or a test model.
"""
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Tuple

import numpy as np

from rdd.errors import ConfigError
from rdd.geometry import BEVGrid, voxel_processor_cfg

__all__ = ['DatasetFacts', 'model_geometry']


@dataclass(frozen=True)
class DatasetFacts:
    """Dataset-side facts of a detector, with OpenPCDet's dataset attribute names.

    Attributes:
        class_names: ``CLASS_NAMES``.
        grid: the voxel grid (``DATA_CONFIG.POINT_CLOUD_RANGE`` and the voxel processor's ``VOXEL_SIZE``, metres;
            stride 1).
        num_point_features: features per point (``POINT_FEATURE_ENCODING.used_feature_list``).
    """
    class_names: Tuple[str, ...]
    grid: BEVGrid
    num_point_features: int

    @property
    def point_cloud_range(self) -> np.ndarray:
        """(6,) float32 metres, as a dataset holds it."""
        return np.array(self.grid.point_cloud_range, dtype=np.float32)

    @property
    def voxel_size(self) -> list:
        """3 floats, metres."""
        return list(self.grid.voxel_size)

    @property
    def grid_size(self) -> np.ndarray:
        """(3,) int64 voxels along x, y, z = round((max - min) / voxel_size) (OpenPCDet's DataProcessor)."""
        pcr = self.point_cloud_range
        return np.round((pcr[3:6] - pcr[0:3]) / np.array(self.voxel_size)).astype(np.int64)

    @property
    def point_feature_encoder(self):
        return SimpleNamespace(num_point_features=self.num_point_features)

    @property
    def depth_downsample_factor(self):
        return None


def model_geometry(cfg) -> DatasetFacts:
    """The :class:`DatasetFacts` of a loaded config (``CLASS_NAMES`` and ``DATA_CONFIG``); :class:`ConfigError`
    naming the first missing key. The result can be passed as ``dataset`` to ``build_network``."""
    for key in ('CLASS_NAMES', 'DATA_CONFIG'):
        if key not in cfg:
            raise ConfigError(f'config has no {key}')
    data_cfg = cfg['DATA_CONFIG']
    for key in ('POINT_CLOUD_RANGE', 'POINT_FEATURE_ENCODING'):
        if key not in data_cfg:
            raise ConfigError(f'config has no DATA_CONFIG.{key}')
    used = data_cfg['POINT_FEATURE_ENCODING'].get('used_feature_list', None)
    if not used:
        raise ConfigError('config has no DATA_CONFIG.POINT_FEATURE_ENCODING.used_feature_list')
    pcr = list(data_cfg['POINT_CLOUD_RANGE'])
    if len(pcr) != 6:
        raise ConfigError(f'DATA_CONFIG.POINT_CLOUD_RANGE needs 6 numbers, got {pcr}')
    grid = BEVGrid(tuple(float(np.float32(v)) for v in pcr), tuple(voxel_processor_cfg(data_cfg)['VOXEL_SIZE']), 1)
    return DatasetFacts(class_names=tuple(cfg['CLASS_NAMES']), grid=grid, num_point_features=len(used))
