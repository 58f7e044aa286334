"""HeightCompression: densify the sparse 3D output and fold z into channels (OpenPCDet ``HeightCompression``)."""
import torch.nn as nn

from rdd.models.registries import MAP_TO_BEV


@MAP_TO_BEV.register()
class HeightCompression(nn.Module):
    """(N, C, D, H, W) dense volume -> BEV map (N, C*D, H, W); channel index = c*D + d.

    Args:
        model_cfg: ``MODEL.MAP_TO_BEV`` with ``NUM_BEV_FEATURES`` (= C*D, 256 for the teacher).
        **kwargs: ``grid_size`` (accepted for OpenPCDet's builder, unused).
    """

    def __init__(self, model_cfg, **kwargs):
        super().__init__()
        self.model_cfg = model_cfg
        self.num_bev_features = int(model_cfg.NUM_BEV_FEATURES)

    def forward(self, batch_dict):
        """Set ``spatial_features`` (B, C*D, H, W) and ``spatial_features_stride`` from
        ``encoded_spconv_tensor`` / ``encoded_spconv_tensor_stride``.

        Raises ValueError when C*D differs from ``NUM_BEV_FEATURES`` (a config/width mismatch).
        """
        dense = batch_dict['encoded_spconv_tensor'].dense()
        n, c, d, h, w = dense.shape
        if c * d != self.num_bev_features:
            raise ValueError(f'MAP_TO_BEV.NUM_BEV_FEATURES is {self.num_bev_features} but the 3D backbone gives '
                             f'{c} channels x {d} z-slices = {c * d}')
        batch_dict['spatial_features'] = dense.view(n, c * d, h, w)
        batch_dict['spatial_features_stride'] = batch_dict['encoded_spconv_tensor_stride']
        return batch_dict
