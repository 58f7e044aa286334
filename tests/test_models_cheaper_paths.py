"""Cheaper computations of the same model outputs (train-step work): each against the way OpenPCDet computes it."""
import torch
import torch.nn as nn
import torch.nn.functional as F
from easydict import EasyDict

from rdd.models.backbones_2d.base_bev_backbone import BaseBEVBackbone, PointwiseConvTranspose2d
from rdd.models.backbones_2d.height_compression import sparse_to_dense
from rdd.ops.spconv_compat import spconv


def test_sparse_to_dense_is_spconvs_dense_forward_and_backward():
    g = torch.Generator().manual_seed(0)
    flat = torch.randperm(2 * 2 * 40 * 30, generator=g)[:700]  # unique (b, z, y, x) sites
    idx = torch.stack([flat // 2400, (flat // 1200) % 2, (flat // 30) % 40, flat % 30], 1).int()
    feats = torch.randn(700, 6, generator=g, requires_grad=True)
    x = spconv.SparseConvTensor(feats, idx, [2, 40, 30], 2)
    weight = torch.randn(2, 6, 2, 40, 30, generator=g)
    ours = sparse_to_dense(x)
    theirs = x.dense()
    assert ours.shape == (2, 6, 2, 40, 30) and ours.is_contiguous() and torch.equal(ours, theirs)
    g_ours, = torch.autograd.grad((ours * weight).sum(), feats)
    g_theirs, = torch.autograd.grad((theirs * weight).sum(), feats)
    assert torch.equal(g_ours, g_theirs)
    # by hand: site 0's channel 3 lands at [b, 3, z, y, x]
    b, z, y, xx = idx[0].tolist()
    assert ours[b, 3, z, y, xx] == feats[0, 3]


def test_pointwise_conv_transpose_is_the_1x1_transposed_conv():
    torch.manual_seed(0)
    ours = PointwiseConvTranspose2d(8, 5)
    ref = nn.ConvTranspose2d(8, 5, 1, stride=1, bias=False)
    ref.load_state_dict(ours.state_dict())  # same keys and shapes: weight (in, out, 1, 1)
    x = torch.randn(2, 8, 7, 9, requires_grad=True)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-6, atol=1e-6)
    ga, = torch.autograd.grad(ours(x).square().sum(), x)
    gb, = torch.autograd.grad(ref(x).square().sum(), x)
    torch.testing.assert_close(ga, gb, rtol=1e-5, atol=1e-6)


def test_bev_block_pads_in_the_conv_as_openpcdets_zero_pad():
    cfg = EasyDict({'LAYER_NUMS': [1], 'LAYER_STRIDES': [2], 'NUM_FILTERS': [6], 'UPSAMPLE_STRIDES': [1],
                    'NUM_UPSAMPLE_FILTERS': [4]})
    torch.manual_seed(0)
    bev = BaseBEVBackbone(cfg, 3).eval()
    assert isinstance(bev.blocks[0][0], nn.Identity) and isinstance(bev.deblocks[0][0], PointwiseConvTranspose2d)
    x = torch.randn(1, 3, 11, 13)
    conv = bev.blocks[0][1]
    openpcdet = F.conv2d(F.pad(x, (1, 1, 1, 1)), conv.weight, stride=2)  # ZeroPad2d(1) + Conv2d(padding=0)
    torch.testing.assert_close(bev.blocks[0][:2](x), openpcdet, rtol=1e-6, atol=1e-6)
    assert sorted(bev.state_dict()) == sorted(
        ['blocks.0.1.weight', 'blocks.0.2.weight', 'blocks.0.2.bias', 'blocks.0.2.running_mean',
         'blocks.0.2.running_var', 'blocks.0.2.num_batches_tracked', 'blocks.0.4.weight', 'blocks.0.5.weight',
         'blocks.0.5.bias', 'blocks.0.5.running_mean', 'blocks.0.5.running_var', 'blocks.0.5.num_batches_tracked',
         'deblocks.0.0.weight', 'deblocks.0.1.weight', 'deblocks.0.1.bias', 'deblocks.0.1.running_mean',
         'deblocks.0.1.running_var', 'deblocks.0.1.num_batches_tracked'])
