"""OpenPCDet's ``PointFeatureEncoder`` (``absolute_coordinates_encoding``): selects point channels."""
import numpy as np


class PointFeatureEncoder:
    """Keeps ``x, y, z`` and then the ``used_feature_list`` channels found in ``src_feature_list``.

    Args:
        config (dict): ``encoding_type`` ('absolute_coordinates_encoding'), ``used_feature_list``,
            ``src_feature_list`` (the latter starting with x, y, z).
    """

    def __init__(self, config, point_cloud_range=None):
        self.point_encoding_config = config
        self.src_feature_list = list(config['src_feature_list'])
        self.used_feature_list = list(config['used_feature_list'])
        if self.src_feature_list[:3] != ['x', 'y', 'z']:
            raise ValueError(f'POINT_FEATURE_ENCODING.src_feature_list must start with x, y, z; '
                             f'got {self.src_feature_list}')
        if config['encoding_type'] != 'absolute_coordinates_encoding':
            raise ValueError(f"POINT_FEATURE_ENCODING.encoding_type {config['encoding_type']!r} is not supported "
                             f"(only absolute_coordinates_encoding)")
        missing = [f for f in self.used_feature_list if f not in self.src_feature_list]
        if missing:
            raise ValueError(f'POINT_FEATURE_ENCODING.used_feature_list names {missing} not in src_feature_list')
        self._cols = [0, 1, 2] + [self.src_feature_list.index(f) for f in self.used_feature_list
                                  if f not in ('x', 'y', 'z')]
        self.point_cloud_range = point_cloud_range

    @property
    def num_point_features(self):
        return len(self.used_feature_list)

    def forward(self, data_dict):
        """``points (N, len(src))`` -> ``points (N, num_point_features)``; sets ``use_lead_xyz`` True."""
        points = data_dict['points']
        if points.shape[1] != len(self.src_feature_list):
            raise ValueError(f'points have {points.shape[1]} channels but POINT_FEATURE_ENCODING.src_feature_list '
                             f'has {len(self.src_feature_list)}')
        if self._cols != list(range(points.shape[1])):
            points = points[:, self._cols]
        data_dict['points'] = np.ascontiguousarray(points)
        data_dict['use_lead_xyz'] = True
        return data_dict
