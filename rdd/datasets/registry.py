"""``DATASETS``: ``DATA_CONFIG.DATASET`` -> dataset class (one :class:`rdd.registry.Registry`). Dataset classes
register themselves with ``@DATASETS.register()``; importing :mod:`rdd.datasets` imports them."""
from rdd.registry import Registry

__all__ = ['DATASETS']

DATASETS = Registry('dataset', config_key='DATA_CONFIG.DATASET')
