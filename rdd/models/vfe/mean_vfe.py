"""MeanVFE: a voxel's feature is the mean of its points (OpenPCDet ``MeanVFE``)."""
import torch
import torch.nn as nn

from rdd.models.registries import VFES


@VFES.register()
class MeanVFE(nn.Module):
    """Average the points of each voxel; no parameters.

    Args:
        model_cfg: the ``MODEL.VFE`` config (only ``NAME`` is used).
        num_point_features (int): features per point (5 for nuScenes: x, y, z, intensity, time_lag).
        **kwargs: ``point_cloud_range``, ``voxel_size`` (accepted for OpenPCDet's builder, unused).
    """

    def __init__(self, model_cfg, num_point_features, **kwargs):
        super().__init__()
        self.model_cfg = model_cfg
        self.num_point_features = int(num_point_features)

    def get_output_feature_dim(self):
        """Number of output channels per voxel (= ``num_point_features``)."""
        return self.num_point_features

    def forward(self, batch_dict, **kwargs):
        """Set ``batch_dict['voxel_features']`` (V, C) = mean over the valid points of each voxel.

        Reads ``voxels`` (V, P, C) zero-padded and ``voxel_num_points`` (V,). Voxels with zero points
        give zeros (the count is clamped to 1, as OpenPCDet does).
        """
        voxels, num_points = batch_dict['voxels'], batch_dict['voxel_num_points']
        summed = voxels.sum(dim=1)
        normalizer = torch.clamp_min(num_points.view(-1, 1), min=1.0).type_as(voxels)
        batch_dict['voxel_features'] = (summed / normalizer).contiguous()
        return batch_dict
