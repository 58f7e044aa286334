"""HeightCompression: densify the sparse 3D output and fold z into channels (OpenPCDet ``HeightCompression``)."""
import torch
import torch.nn as nn

from rdd.models.registries import MAP_TO_BEV


class _ScatterChannelsFirst(torch.autograd.Function):
    """Sparse features ``(V, C)`` at ``indices (V, 4)`` ``[b, z, y, x]`` -> dense ``(B, C, D, H, W)``, zeros elsewhere.

    The rows are written straight into the channels-first layout (V x C strided writes), instead of spconv's
    ``dense()``: a channels-last scatter followed by a full ``(B, D, H, W, C) -> (B, C, D, H, W)`` transpose copy
    (and the same transpose again in backward). Same values, bitwise; the backward is the matching gather.
    """

    @staticmethod
    def forward(ctx, features, indices, shape):
        idx = indices.long()
        ctx.save_for_backward(idx)
        out = features.new_zeros(shape)
        out.permute(0, 2, 3, 4, 1)[idx[:, 0], idx[:, 1], idx[:, 2], idx[:, 3]] = features
        return out

    @staticmethod
    def backward(ctx, grad_out):
        (idx,) = ctx.saved_tensors
        return grad_out.permute(0, 2, 3, 4, 1)[idx[:, 0], idx[:, 1], idx[:, 2], idx[:, 3]], None, None


def sparse_to_dense(sp_tensor):
    """spconv ``SparseConvTensor`` -> dense ``(B, C, D, H, W)`` tensor (what ``SparseConvTensor.dense()`` returns)."""
    feats = sp_tensor.features
    shape = (sp_tensor.batch_size, feats.shape[1], *[int(s) for s in sp_tensor.spatial_shape])
    return _ScatterChannelsFirst.apply(feats, sp_tensor.indices, shape)


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
        dense = sparse_to_dense(batch_dict['encoded_spconv_tensor'])
        n, c, d, h, w = dense.shape
        if c * d != self.num_bev_features:
            raise ValueError(f'MAP_TO_BEV.NUM_BEV_FEATURES is {self.num_bev_features} but the 3D backbone gives '
                             f'{c} channels x {d} z-slices = {c * d}')
        batch_dict['spatial_features'] = dense.view(n, c * d, h, w)
        batch_dict['spatial_features_stride'] = batch_dict['encoded_spconv_tensor_stride']
        return batch_dict
