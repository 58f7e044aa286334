"""Voxel feature encoders (``MODEL.VFE.NAME``, registry :data:`rdd.models.registries.VFES`)."""
from .mean_vfe import MeanVFE

__all__ = ['MeanVFE']
