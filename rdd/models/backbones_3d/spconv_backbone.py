"""VoxelResBackBone8x: OpenPCDet's residual sparse 3D backbone; VoxelResBackBone8xWidth: the same with
SparseKD's ``WIDTH`` / ``NUM_FILTERS`` channel scaling, under its own name.

Attribute names, layer order, ``indice_key`` names, bias flags and BatchNorm settings follow OpenPCDet, so
the state_dict keys and shapes are OpenPCDet's (spconv 2.x KRSC weights ``(out, kz, ky, kx, in)``).

OpenPCDet's ``VoxelResBackBone8x`` has fixed filters and ignores any width key, so a config naming that class
with a width would build a full-width backbone in OpenPCDet and load a student checkpoint only in part. Hence
the width-scaled backbone has a distinct name (registered into pcdet by :mod:`rdd.plugin`, so OpenPCDet refuses
it loudly without the plugin) and ``VoxelResBackBone8x`` refuses ``WIDTH`` / ``NUM_FILTERS``.
"""
from functools import partial

import numpy as np
import torch.nn as nn

from rdd.config_schema.model import MODEL_SECTIONS
from rdd.config_schema.sections import reject_refused_keys
from rdd.models.registries import BACKBONES_3D
from rdd.ops.spconv_compat import spconv

DEFAULT_NUM_FILTERS = (16, 16, 32, 64, 128, 128)
DEFAULT_LAYER_NUMS = (1, 2, 3, 3, 3, 1)


def scaled_filters(num_filters, width):
    """SparseKD's width rule: ``int(c * width)`` (truncation) for every entry; ``width`` None/0 = unchanged.

    >>> scaled_filters([16, 16, 32, 64, 128, 128], 0.75)
    [12, 12, 24, 48, 96, 96]
    """
    if not width:
        return [int(c) for c in num_filters]
    return [int(c) for c in (np.array(num_filters, dtype=np.int32) * float(width)).astype(int)]


def sparse_conv_block(in_channels, out_channels, kernel_size, norm_fn, indice_key, stride=1, padding=0,
                      conv_type='subm'):
    """conv (no bias) -> BN -> ReLU as a SparseSequential (OpenPCDet ``post_act_block``).

    conv_type: 'subm' (SubMConv3d), 'spconv' (strided SparseConv3d) or 'inverseconv'.
    """
    if conv_type == 'subm':
        conv = spconv.SubMConv3d(in_channels, out_channels, kernel_size, bias=False, indice_key=indice_key)
    elif conv_type == 'spconv':
        conv = spconv.SparseConv3d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                                   bias=False, indice_key=indice_key)
    elif conv_type == 'inverseconv':
        conv = spconv.SparseInverseConv3d(in_channels, out_channels, kernel_size, indice_key=indice_key,
                                          bias=False)
    else:
        raise ValueError(f"unknown conv_type {conv_type!r}; expected 'subm', 'spconv' or 'inverseconv'")
    return spconv.SparseSequential(conv, norm_fn(out_channels), nn.ReLU())


class SparseBasicBlock(spconv.SparseModule):
    """Residual block of two 3x3x3 SubM convs: relu(bn2(conv2(relu(bn1(conv1(x))))) + x).

    conv1/conv2 carry a bias by default (OpenPCDet: ``bias = norm_fn is not None``), unlike every other
    sparse conv of the backbone.
    """
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, bias=None, norm_fn=None, downsample=None, indice_key=None):
        super().__init__()
        if norm_fn is None:
            raise ValueError('SparseBasicBlock needs a norm_fn')
        if bias is None:
            bias = True
        self.conv1 = spconv.SubMConv3d(inplanes, planes, kernel_size=3, stride=stride, padding=1, bias=bias,
                                       indice_key=indice_key)
        self.bn1 = norm_fn(planes)
        self.relu = nn.ReLU()
        self.conv2 = spconv.SubMConv3d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=bias,
                                       indice_key=indice_key)
        self.bn2 = norm_fn(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        """x: SparseConvTensor (V, inplanes) -> SparseConvTensor (V, planes) on the same indices."""
        identity = x
        out = self.conv1(x)
        out = out.replace_feature(self.relu(self.bn1(out.features)))
        out = self.conv2(out)
        out = out.replace_feature(self.bn2(out.features))
        if self.downsample is not None:
            identity = self.downsample(x)
        return out.replace_feature(self.relu(out.features + identity.features))


@BACKBONES_3D.register()
class VoxelResBackBone8x(nn.Module):
    """Sparse 3D backbone, overall stride 8 in x/y (z: 41 -> 21 -> 11 -> 5 -> 2 on nuScenes).

    Args:
        model_cfg: ``MODEL.BACKBONE_3D``; optional keys ``USE_BIAS`` (bias of the residual blocks' convs,
            default True) and ``last_pad`` (conv_out padding, default 0), as OpenPCDet reads them. Filters are
            OpenPCDet's fixed [16, 16, 32, 64, 128, 128]; ``WIDTH`` / ``NUM_FILTERS`` raise ConfigError (use
            :class:`VoxelResBackBone8xWidth`).
        input_channels (int): voxel feature channels (5 after MeanVFE).
        grid_size: (3,) voxels along x, y, z; the sparse shape is ``grid_size[::-1] + [1, 0, 0]`` (z, y, x).
    """

    CONFIG_NAME = 'VoxelResBackBone8x'

    def __init__(self, model_cfg, input_channels, grid_size, **kwargs):
        super().__init__()
        self.model_cfg = model_cfg
        cfg = model_cfg if hasattr(model_cfg, 'get') else {}
        nf = self.num_filters_of(cfg)
        if len(nf) != 6:
            raise ValueError(f'MODEL.BACKBONE_3D.NUM_FILTERS needs 6 entries, got {nf}')
        layer_nums = DEFAULT_LAYER_NUMS
        use_bias = cfg.get('USE_BIAS', None)
        last_pad = cfg.get('last_pad', 0)
        norm_fn = partial(nn.BatchNorm1d, eps=1e-3, momentum=0.01)

        self.sparse_shape = [int(v) for v in (np.asarray(grid_size)[::-1] + [1, 0, 0])]

        self.conv_input = spconv.SparseSequential(
            spconv.SubMConv3d(input_channels, nf[0], 3, padding=1, bias=False, indice_key='subm1'),
            norm_fn(nf[0]),
            nn.ReLU(),
        )

        def res_blocks(channels, count, key):
            return [SparseBasicBlock(channels, channels, bias=use_bias, norm_fn=norm_fn, indice_key=key)
                    for _ in range(count)]

        self.conv1 = spconv.SparseSequential(
            SparseBasicBlock(nf[0], nf[1], bias=use_bias, norm_fn=norm_fn, indice_key='res1'),
            *res_blocks(nf[1], layer_nums[1] - 1, 'res1'))
        # each stage: strided SparseConv3d (no bias) + residual blocks at the new resolution
        stage_pads = {2: 1, 3: 1, 4: (0, 1, 1)}
        for stage in (2, 3, 4):
            down = sparse_conv_block(nf[stage - 1], nf[stage], 3, norm_fn, indice_key=f'spconv{stage}',
                                     stride=2, padding=stage_pads[stage], conv_type='spconv')
            blocks = res_blocks(nf[stage], layer_nums[stage] - 1, f'res{stage}')
            self.add_module(f'conv{stage}', spconv.SparseSequential(down, *blocks))

        self.conv_out = spconv.SparseSequential(
            spconv.SparseConv3d(nf[4], nf[5], (3, 1, 1), stride=(2, 1, 1), padding=last_pad, bias=False,
                                indice_key='spconv_down2'),
            norm_fn(nf[5]),
            nn.ReLU(),
        )
        self.num_filters = nf
        self.num_point_features = nf[5]
        self.backbone_channels = {'x_conv1': nf[1], 'x_conv2': nf[2], 'x_conv3': nf[3], 'x_conv4': nf[4]}

    def num_filters_of(self, model_cfg):
        """The six stage widths (conv_input, conv1..4, conv_out) this class builds for ``model_cfg``."""
        reject_refused_keys(MODEL_SECTIONS[self.CONFIG_NAME], model_cfg, 'MODEL.BACKBONE_3D')
        return list(DEFAULT_NUM_FILTERS)

    def forward(self, batch_dict):
        """Run the sparse backbone.

        Reads ``voxel_features`` (V, C), ``voxel_coords`` (V, 4) ``[b, z, y, x]`` and ``batch_size``.
        Sets ``encoded_spconv_tensor`` (SparseConvTensor, ``num_point_features`` channels, spatial shape
        (2, H/8, W/8) on nuScenes), ``encoded_spconv_tensor_stride`` = 8, ``multi_scale_3d_features``
        (x_conv1..4) and ``multi_scale_3d_strides`` (1, 2, 4, 8).
        """
        if batch_dict['voxel_features'].shape[0] == 0:  # spconv would stop with '!empty() assert faild'
            raise ValueError(f"VoxelResBackBone8x: the batch has no voxels (frames "
                             f"{list(batch_dict.get('frame_id', ['?']))}): no point inside POINT_CLOUD_RANGE")
        x = spconv.SparseConvTensor(
            features=batch_dict['voxel_features'],
            indices=batch_dict['voxel_coords'].int(),
            spatial_shape=self.sparse_shape,
            batch_size=batch_dict['batch_size'],
        )
        x = self.conv_input(x)
        x_conv1 = self.conv1(x)
        x_conv2 = self.conv2(x_conv1)
        x_conv3 = self.conv3(x_conv2)
        x_conv4 = self.conv4(x_conv3)
        out = self.conv_out(x_conv4)

        batch_dict['encoded_spconv_tensor'] = out
        batch_dict['encoded_spconv_tensor_stride'] = 8
        batch_dict['multi_scale_3d_features'] = {
            'x_conv1': x_conv1, 'x_conv2': x_conv2, 'x_conv3': x_conv3, 'x_conv4': x_conv4}
        batch_dict['multi_scale_3d_strides'] = {'x_conv1': 1, 'x_conv2': 2, 'x_conv3': 4, 'x_conv4': 8}
        return batch_dict


@BACKBONES_3D.register()
class VoxelResBackBone8xWidth(VoxelResBackBone8x):
    """:class:`VoxelResBackBone8x` with SparseKD's channel scaling: filters ``int(c * WIDTH)`` of ``NUM_FILTERS``
    (default [16, 16, 32, 64, 128, 128]; ``WIDTH`` default 1). Same modules and key names, other widths; e.g.
    ``WIDTH: 0.75`` gives [12, 12, 24, 48, 96, 96] (CP-Voxel-XS), so ``MAP_TO_BEV.NUM_BEV_FEATURES`` = 2 x 96."""

    CONFIG_NAME = 'VoxelResBackBone8xWidth'

    def num_filters_of(self, model_cfg):
        return scaled_filters(model_cfg.get('NUM_FILTERS', None) or DEFAULT_NUM_FILTERS, model_cfg.get('WIDTH', None))
