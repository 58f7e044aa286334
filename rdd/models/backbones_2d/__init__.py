"""BEV modules: map-to-BEV (``MODEL.MAP_TO_BEV.NAME``, :data:`rdd.models.registries.MAP_TO_BEV`) and 2D
backbones (``MODEL.BACKBONE_2D.NAME``, :data:`rdd.models.registries.BACKBONES_2D`)."""
from .base_bev_backbone import BaseBEVBackbone, BaseBEVBackboneWidth
from .height_compression import HeightCompression

__all__ = ['BaseBEVBackbone', 'BaseBEVBackboneWidth', 'HeightCompression']
