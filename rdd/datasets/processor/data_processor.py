"""OpenPCDet's ``DataProcessor``: runs ``DATA_PROCESSOR`` steps in order on every sample.

Steps (``NAME``):

* ``mask_points_and_boxes_outside_range``: keep points with ``x_min <= x <= x_max`` and ``y_min <= y <= y_max``
  (z is left to the voxelizer, as in OpenPCDet); in training with ``REMOVE_OUTSIDE_BOXES``, keep boxes whose
  centre lies in the full 3D range (``USE_CENTER_TO_FILTER``, default True, OpenPCDet's current default) or
  with at least ``min_num_corners`` BEV corners inside (``USE_CENTER_TO_FILTER: False``).
* ``shuffle_points``: random permutation of the points when ``SHUFFLE_ENABLED[mode]``.
* ``transform_points_to_voxels``: ``VOXEL_SIZE``, ``MAX_POINTS_PER_VOXEL``, ``MAX_NUMBER_OF_VOXELS[mode]``;
  adds ``voxels (V, P, C)``, ``voxel_coords (V, 3)`` ``[z, y, x]``, ``voxel_num_points (V,)``.

The range mask and the shuffle only select and order rows: they compose an index (``data_dict['point_index']``,
pending) that is applied to the points once, with one ``np.take``, before voxelization and at the end of
``forward`` (same rows in the same order as masking then permuting, and the same ``np.random.permutation`` draw).
"""
from functools import partial

import numpy as np

from ..augmentor.augmentor_utils import boxes_to_corners_3d
from .voxelizer import Voxelizer


def mask_points_by_range(points, limit_range):
    """``(N,)`` bool: points inside the BEV rectangle of ``limit_range`` (bounds inclusive)."""
    return ((points[:, 0] >= limit_range[0]) & (points[:, 0] <= limit_range[3])
            & (points[:, 1] >= limit_range[1]) & (points[:, 1] <= limit_range[4]))


def mask_boxes_outside_range(boxes, limit_range, min_num_corners=1, use_center_to_filter=True):
    """``(M,)`` bool: boxes ``(M, 7+)`` to keep for ``limit_range (6,)``."""
    if use_center_to_filter:
        c = boxes[:, 0:3]
        return ((c >= limit_range[0:3]) & (c <= limit_range[3:6])).all(axis=-1)
    corners = boxes_to_corners_3d(boxes[:, :7])[:, :, 0:2]
    inside = ((corners >= limit_range[0:2]) & (corners <= limit_range[3:5])).all(axis=2)
    return inside.sum(axis=1) >= min_num_corners


class DataProcessor:
    """Args: processor_configs (list of step dicts), point_cloud_range (6,), training (bool),
    num_point_features (int, channels of the encoded points; needed for voxelization)."""

    SUPPORTED = ('mask_points_and_boxes_outside_range', 'shuffle_points', 'transform_points_to_voxels')

    def __init__(self, processor_configs, point_cloud_range, training, num_point_features=None):
        self.point_cloud_range = np.asarray(point_cloud_range, dtype=np.float32)
        self.training = training
        self.mode = 'train' if training else 'test'
        self.num_point_features = num_point_features
        self.grid_size = self.voxel_size = None
        self.voxelizer = None
        self.data_processor_queue = []
        for cur_cfg in processor_configs:
            name = cur_cfg['NAME']
            if name not in self.SUPPORTED:
                raise ValueError(f'DATA_PROCESSOR: unknown step NAME {name!r}; supported: {self.SUPPORTED}')
            self.data_processor_queue.append(getattr(self, name)(config=cur_cfg))

    def mask_points_and_boxes_outside_range(self, data_dict=None, config=None):
        if data_dict is None:
            return partial(self.mask_points_and_boxes_outside_range, config=config)
        points = self.take_points(data_dict)['points']
        data_dict['point_index'] = np.flatnonzero(mask_points_by_range(points, self.point_cloud_range))
        if data_dict.get('gt_boxes', None) is not None and config.get('REMOVE_OUTSIDE_BOXES', False) \
                and self.training:
            mask = mask_boxes_outside_range(data_dict['gt_boxes'], self.point_cloud_range,
                                            min_num_corners=config.get('min_num_corners', 1),
                                            use_center_to_filter=config.get('USE_CENTER_TO_FILTER', True))
            data_dict['gt_boxes'] = data_dict['gt_boxes'][mask]
            if 'gt_names' in data_dict:
                data_dict['gt_names'] = data_dict['gt_names'][mask]
        return data_dict

    def shuffle_points(self, data_dict=None, config=None):
        if data_dict is None:
            return partial(self.shuffle_points, config=config)
        if config['SHUFFLE_ENABLED'][self.mode]:
            pending = data_dict.get('point_index')
            if pending is None:
                pending = np.arange(data_dict['points'].shape[0])
            data_dict['point_index'] = pending[np.random.permutation(pending.shape[0])]
        return data_dict

    @staticmethod
    def take_points(data_dict):
        """Apply the pending ``point_index`` (if any) to ``points`` with one gather; returns the dict."""
        index = data_dict.pop('point_index', None)
        if index is not None:
            data_dict['points'] = np.take(data_dict['points'], index, axis=0)
        return data_dict

    def transform_points_to_voxels(self, data_dict=None, config=None):
        if data_dict is None:
            if self.num_point_features is None:
                raise ValueError('transform_points_to_voxels needs num_point_features')
            self.voxelizer = Voxelizer.from_processor_config(config, self.point_cloud_range,
                                                             self.num_point_features, self.mode)
            self.grid_size = self.voxelizer.grid_size
            self.voxel_size = config['VOXEL_SIZE']
            return partial(self.transform_points_to_voxels, config=config)
        voxels, coords, num_points = self.voxelizer(self.take_points(data_dict)['points'])
        if not data_dict.get('use_lead_xyz', True):
            voxels = voxels[..., 3:]
        data_dict['voxels'] = voxels
        data_dict['voxel_coords'] = coords
        data_dict['voxel_num_points'] = num_points
        return data_dict

    def forward(self, data_dict):
        """Run every step on ``data_dict`` (``points (N, C)``, optional ``gt_boxes``/``gt_names``)."""
        for step in self.data_processor_queue:
            data_dict = step(data_dict=data_dict)
        return self.take_points(data_dict)
