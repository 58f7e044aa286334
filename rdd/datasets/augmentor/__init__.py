"""Training-time augmentation: ``DataAugmentor`` (the queue), ``DataBaseSampler`` (gt_sampling), utils."""
from .data_augmentor import DataAugmentor
from .database_sampler import DataBaseSampler

__all__ = ['DataAugmentor', 'DataBaseSampler']
