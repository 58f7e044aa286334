"""Per-sample processing: point feature encoding, range masking, shuffling, voxelization."""
from .data_processor import DataProcessor, mask_boxes_outside_range, mask_points_by_range
from .point_feature_encoder import PointFeatureEncoder
from .voxelizer import Voxelizer, voxelize_batch

__all__ = ['DataProcessor', 'PointFeatureEncoder', 'Voxelizer', 'voxelize_batch', 'mask_points_by_range',
           'mask_boxes_outside_range']
