"""Model building: ``build_network`` (OpenPCDet's signature), ``build_model`` (from a whole config, no dataset)
and ``model_geometry`` (the dataset-side facts a model needs, derived from a config)."""
import importlib
from types import SimpleNamespace

import numpy as np

from rdd.config import ConfigError, voxel_processor_cfg

from .detectors import DETECTORS, register_detector

__all__ = ['build_network', 'build_model', 'model_geometry', 'DETECTORS', 'register_detector',
           'UnknownDetectorError']


class UnknownDetectorError(KeyError):
    """``MODEL.NAME`` names no registered detector (a KeyError whose message is printed as is)."""

    def __str__(self):
        return str(self.args[0]) if self.args else ''


def model_geometry(cfg):
    """Dataset-side facts a detector needs, from a loaded config (no data on disk).

    Returns a SimpleNamespace with ``class_names`` (list[str], ``CLASS_NAMES``), ``point_cloud_range``
    (6,) float32 (``DATA_CONFIG.POINT_CLOUD_RANGE``, metres), ``voxel_size`` (list of 3 floats, metres, from the
    ``transform_points_to_voxels`` processor), ``grid_size`` (3,) int64 voxels along x, y, z =
    round((max - min) / voxel_size) (OpenPCDet's DataProcessor formula), ``point_feature_encoder`` with
    ``num_point_features`` = len(``POINT_FEATURE_ENCODING.used_feature_list``), ``num_point_features`` (same),
    and ``depth_downsample_factor`` None. The object can be passed as ``dataset`` to ``build_network``.
    """
    if 'DATA_CONFIG' not in cfg:
        raise KeyError('config has no DATA_CONFIG')
    data_cfg = cfg.DATA_CONFIG
    for key in ('POINT_CLOUD_RANGE', 'POINT_FEATURE_ENCODING'):
        if key not in data_cfg:
            raise KeyError(f'config has no DATA_CONFIG.{key}')
    if 'CLASS_NAMES' not in cfg:
        raise KeyError('config has no CLASS_NAMES')
    pc_range = np.array(data_cfg.POINT_CLOUD_RANGE, dtype=np.float32)
    if pc_range.shape != (6,):
        raise ValueError(f'DATA_CONFIG.POINT_CLOUD_RANGE needs 6 numbers, got {list(data_cfg.POINT_CLOUD_RANGE)}')
    try:
        voxel_size = [float(v) for v in voxel_processor_cfg(data_cfg)['VOXEL_SIZE']]
    except ConfigError as err:  # model_geometry reports every missing config key as a KeyError
        raise KeyError(str(err)) from None
    grid_size = np.round((pc_range[3:6] - pc_range[0:3]) / np.array(voxel_size)).astype(np.int64)
    used = data_cfg.POINT_FEATURE_ENCODING.get('used_feature_list', None)
    if not used:
        raise KeyError('config has no DATA_CONFIG.POINT_FEATURE_ENCODING.used_feature_list')
    num_point_features = len(used)
    return SimpleNamespace(
        class_names=list(cfg.CLASS_NAMES), point_cloud_range=pc_range, voxel_size=voxel_size,
        grid_size=grid_size, point_feature_encoder=SimpleNamespace(num_point_features=num_point_features),
        num_point_features=num_point_features, depth_downsample_factor=None)


def build_network(model_cfg, num_class, dataset):
    """Build the detector named ``model_cfg.NAME`` (OpenPCDet's ``build_network``).

    ``dataset`` provides ``class_names``, ``point_cloud_range``, ``voxel_size``, ``grid_size``,
    ``point_feature_encoder.num_point_features`` and ``depth_downsample_factor`` (a real dataset or
    ``model_geometry(cfg)``). Unknown names trigger a lazy import of ``rdd.distill`` (which registers
    ``Distiller``); a name still unknown raises UnknownDetectorError (a KeyError) listing the registered names.
    """
    name = model_cfg.get('NAME', None)
    if name not in DETECTORS:
        import_error = None
        try:
            importlib.import_module('rdd.distill')
        except ImportError as exc:
            import_error = exc
        if name not in DETECTORS:
            msg = f'unknown MODEL.NAME {name!r}; known detectors: {sorted(DETECTORS)}'
            if import_error is not None:
                msg += f' (importing rdd.distill failed: {import_error})'
            raise UnknownDetectorError(msg)
    return DETECTORS[name](model_cfg=model_cfg, num_class=num_class, dataset=dataset)


def build_model(cfg, dataset=None):
    """Build ``cfg.MODEL`` for the classes in ``cfg.CLASS_NAMES``; ``dataset`` defaults to ``model_geometry(cfg)``."""
    if dataset is None:
        dataset = model_geometry(cfg)
    return build_network(cfg.MODEL, num_class=len(cfg.CLASS_NAMES), dataset=dataset)
