"""Sparse 3D backbones (``MODEL.BACKBONE_3D.NAME``, registry :data:`rdd.models.registries.BACKBONES_3D`)."""
from .spconv_backbone import SparseBasicBlock, VoxelResBackBone8x, VoxelResBackBone8xWidth

__all__ = ['SparseBasicBlock', 'VoxelResBackBone8x', 'VoxelResBackBone8xWidth']
