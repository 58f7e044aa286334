"""Voxel feature encoders, looked up by the config's ``VFE.NAME``."""
from .mean_vfe import MeanVFE

__all__ = {
    'MeanVFE': MeanVFE,
}
