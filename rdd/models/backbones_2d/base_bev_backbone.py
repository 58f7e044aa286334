"""BaseBEVBackbone: OpenPCDet's 2D BEV backbone (strided conv stages + deconv upsampling + concat);
BaseBEVBackboneWidth: the same with SparseKD's ``WIDTH`` scaling of ``NUM_FILTERS`` / ``NUM_UPSAMPLE_FILTERS``,
under its own name (OpenPCDet's ``BaseBEVBackbone`` ignores ``WIDTH``, so ``BaseBEVBackbone`` refuses it: a
student config names the scaled filters explicitly, which OpenPCDet builds identically).

Module layout (and so state_dict keys) follow OpenPCDet: ``blocks.{i}`` = [ZeroPad2d(1), Conv2d(stride),
BN, ReLU, (Conv2d, BN, ReLU) x LAYER_NUMS[i]], ``deblocks.{i}`` = [ConvTranspose2d | Conv2d, BN, ReLU].
Two modules compute the same thing more cheaply, with the same parameters: the leading ``ZeroPad2d(1)`` is an
``nn.Identity`` and the strided conv pads by 1 itself (no padded copy of the map, forward or backward), and a
stride-1 (1 x 1) ``ConvTranspose2d`` runs as the 1 x 1 ``conv2d`` it is (torch sends a 1 x 1 transposed conv to
its slow im2col path).
"""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from rdd.config_schema.model import MODEL_SECTIONS
from rdd.config_schema.sections import reject_refused_keys
from rdd.models.registries import BACKBONES_2D

from ..backbones_3d.spconv_backbone import scaled_filters


def _bn(channels):
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class PointwiseConvTranspose2d(nn.ConvTranspose2d):
    """1 x 1, stride-1 ``ConvTranspose2d`` (weight ``(in, out, 1, 1)``, state_dict unchanged) computed as ``conv2d``
    with the transposed weight: ``out[o] = sum_i W[i, o] x[i] (+ b[o])``."""

    def __init__(self, in_channels, out_channels, bias=False):
        super().__init__(in_channels, out_channels, 1, stride=1, bias=bias)

    def forward(self, x, output_size=None):
        return F.conv2d(x, self.weight.transpose(0, 1).contiguous(), self.bias)  # contiguous: mkldnn's path


@BACKBONES_2D.register()
class BaseBEVBackbone(nn.Module):
    """Args:
        model_cfg: ``MODEL.BACKBONE_2D`` with ``LAYER_NUMS``, ``LAYER_STRIDES``, ``NUM_FILTERS``,
            ``UPSAMPLE_STRIDES``, ``NUM_UPSAMPLE_FILTERS``; optional ``USE_CONV_FOR_NO_STRIDE``. ``WIDTH`` raises
            ConfigError (use :class:`BaseBEVBackboneWidth`).
        input_channels (int): channels of ``spatial_features``.
    ``num_bev_features`` = sum(NUM_UPSAMPLE_FILTERS) after scaling.
    """

    CONFIG_NAME = 'BaseBEVBackbone'

    def width_of(self, model_cfg):
        """The channel multiplier applied to the filter lists (None: as written)."""
        reject_refused_keys(MODEL_SECTIONS[self.CONFIG_NAME], model_cfg, 'MODEL.BACKBONE_2D')
        return None

    def __init__(self, model_cfg, input_channels):
        super().__init__()
        self.model_cfg = model_cfg
        if model_cfg.get('LAYER_NUMS', None) is not None:
            layer_nums, layer_strides = list(model_cfg.LAYER_NUMS), list(model_cfg.LAYER_STRIDES)
            num_filters = list(model_cfg.NUM_FILTERS)
            if not len(layer_nums) == len(layer_strides) == len(num_filters):
                raise ValueError('BACKBONE_2D.LAYER_NUMS, LAYER_STRIDES and NUM_FILTERS need the same length, got '
                                 f'{layer_nums}, {layer_strides}, {num_filters}')
        else:
            layer_nums = layer_strides = num_filters = []
        if model_cfg.get('UPSAMPLE_STRIDES', None) is not None:
            upsample_strides, num_upsample_filters = list(model_cfg.UPSAMPLE_STRIDES), list(model_cfg.NUM_UPSAMPLE_FILTERS)
            if len(upsample_strides) != len(num_upsample_filters):
                raise ValueError('BACKBONE_2D.UPSAMPLE_STRIDES and NUM_UPSAMPLE_FILTERS need the same length, got '
                                 f'{upsample_strides}, {num_upsample_filters}')
        else:
            upsample_strides = num_upsample_filters = []
        width = self.width_of(model_cfg)
        num_filters = scaled_filters(num_filters, width)
        num_upsample_filters = scaled_filters(num_upsample_filters, width)

        c_in_list = [input_channels, *num_filters[:-1]]
        self.blocks = nn.ModuleList()
        self.deblocks = nn.ModuleList()
        for idx, (n_layers, stride, c_out) in enumerate(zip(layer_nums, layer_strides, num_filters)):
            layers = [nn.Identity(),  # OpenPCDet's ZeroPad2d(1), done by the conv's own padding
                      nn.Conv2d(c_in_list[idx], c_out, kernel_size=3, stride=stride, padding=1, bias=False),
                      _bn(c_out), nn.ReLU()]
            for _ in range(n_layers):
                layers += [nn.Conv2d(c_out, c_out, kernel_size=3, padding=1, bias=False), _bn(c_out), nn.ReLU()]
            self.blocks.append(nn.Sequential(*layers))
            if upsample_strides:
                self.deblocks.append(self._upsample(c_out, num_upsample_filters[idx], upsample_strides[idx]))

        c_in = sum(num_upsample_filters)
        if len(upsample_strides) > len(layer_nums):
            self.deblocks.append(nn.Sequential(
                nn.ConvTranspose2d(c_in, c_in, upsample_strides[-1], stride=upsample_strides[-1], bias=False),
                _bn(c_in), nn.ReLU()))
        self.num_bev_features = c_in

    def _upsample(self, c_in, c_out, stride):
        """Deconv (stride >= 1; stride 1 becomes a 1x1 conv only with USE_CONV_FOR_NO_STRIDE) or a strided conv
        for fractional strides (downsampling by round(1/stride))."""
        if stride == 1 and not self.model_cfg.get('USE_CONV_FOR_NO_STRIDE', False):
            conv = PointwiseConvTranspose2d(c_in, c_out, bias=False)
        elif stride > 1:
            conv = nn.ConvTranspose2d(c_in, c_out, stride, stride=stride, bias=False)
        else:
            k = int(np.round(1 / stride))
            conv = nn.Conv2d(c_in, c_out, k, stride=k, bias=False)
        return nn.Sequential(conv, _bn(c_out), nn.ReLU())

    def forward(self, data_dict):
        """``spatial_features`` (B, C_in, H, W) -> ``spatial_features_2d`` (B, num_bev_features, H', W')."""
        x = data_dict['spatial_features']
        ups = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            ups.append(self.deblocks[i](x) if len(self.deblocks) > 0 else x)
        if len(ups) > 1:
            x = torch.cat(ups, dim=1)
        elif len(ups) == 1:
            x = ups[0]
        if len(self.deblocks) > len(self.blocks):
            x = self.deblocks[-1](x)
        data_dict['spatial_features_2d'] = x
        return data_dict


@BACKBONES_2D.register()
class BaseBEVBackboneWidth(BaseBEVBackbone):
    """:class:`BaseBEVBackbone` whose ``NUM_FILTERS`` / ``NUM_UPSAMPLE_FILTERS`` are scaled by ``WIDTH`` (SparseKD,
    ``int(c * WIDTH)``; default 1). Same modules and key names."""

    CONFIG_NAME = 'BaseBEVBackboneWidth'

    def width_of(self, model_cfg):
        return model_cfg.get('WIDTH', None)
