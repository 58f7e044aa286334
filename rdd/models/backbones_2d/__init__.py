"""BEV modules: ``map_to_bev`` (``MAP_TO_BEV.NAME``) and 2D backbones (``BACKBONE_2D.NAME``)."""
from .base_bev_backbone import BaseBEVBackbone, BaseBEVBackboneWidth
from .height_compression import HeightCompression

__all__ = {
    'BaseBEVBackbone': BaseBEVBackbone,
    'BaseBEVBackboneWidth': BaseBEVBackboneWidth,
}

map_to_bev = {
    'HeightCompression': HeightCompression,
}
