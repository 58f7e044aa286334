"""Model building: ``build_network`` (OpenPCDet's signature), ``build_model`` (from a whole config, no dataset)
and ``model_geometry`` (the :class:`DatasetFacts` a model needs, derived from a config).

Importing this package registers every module class in :mod:`rdd.models.registries`.
"""
from . import backbones_2d, backbones_3d, dense_heads, detectors, vfe  # noqa: F401  (register the classes)
from .dataset_facts import DatasetFacts, model_geometry
from .registries import DETECTORS

__all__ = ['build_network', 'build_model', 'model_geometry', 'DatasetFacts', 'DETECTORS']


def build_network(model_cfg, num_class, dataset):
    """Build the detector registered as ``model_cfg.NAME`` (OpenPCDet's ``build_network``).

    ``dataset`` provides ``class_names``, ``point_cloud_range``, ``voxel_size``, ``grid_size``,
    ``point_feature_encoder.num_point_features`` and ``depth_downsample_factor`` (a real dataset or
    ``model_geometry(cfg)``). An unknown name is a :class:`rdd.errors.RegistryError` (a KeyError) listing the
    registered names.
    """
    return DETECTORS.get(model_cfg.get('NAME', None))(model_cfg=model_cfg, num_class=num_class, dataset=dataset)


def build_model(cfg, dataset=None):
    """Build ``cfg.MODEL`` for the classes in ``cfg.CLASS_NAMES``; ``dataset`` defaults to ``model_geometry(cfg)``."""
    if dataset is None:
        dataset = model_geometry(cfg)
    return build_network(cfg.MODEL, num_class=len(cfg.CLASS_NAMES), dataset=dataset)
