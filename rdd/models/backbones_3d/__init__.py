"""Sparse 3D backbones, looked up by the config's ``BACKBONE_3D.NAME``."""
from .spconv_backbone import SparseBasicBlock, VoxelResBackBone8x, VoxelResBackBone8xWidth  # noqa: F401

__all__ = {
    'VoxelResBackBone8x': VoxelResBackBone8x,
    'VoxelResBackBone8xWidth': VoxelResBackBone8xWidth,
}
