"""Sparse 3D backbones, looked up by the config's ``BACKBONE_3D.NAME``."""
from .spconv_backbone import SparseBasicBlock, VoxelResBackBone8x  # noqa: F401  (SparseBasicBlock: public)

__all__ = {
    'VoxelResBackBone8x': VoxelResBackBone8x,
}
