"""BatchNorm folding (rdd.models.fold_bn): hand-computed folds, whole detectors unchanged to 1e-5, inference mode
outputs usable in autograd."""
import numpy as np
import pytest
import torch
import torch.nn as nn

from rdd.config import cfg_from_yaml_file
from rdd.models import build_model
from rdd.models.fold_bn import count_batchnorms, fold_batchnorm, freeze_for_inference, run_frozen
from rdd.ops.spconv_compat import spconv

from test_distill_helpers import STUDENT_CFG, TEACHER_CFG, make_batch

REPO = TEACHER_CFG.parents[2]


def _bn(cls, n, mean, var, gamma, beta, eps):
    bn = cls(n, eps=eps)
    with torch.no_grad():
        bn.running_mean.fill_(mean)
        bn.running_var.fill_(var)
        bn.weight.fill_(gamma)
        bn.bias.fill_(beta)
    return bn.eval()


def test_fold_by_hand_dense_and_transposed():
    """W = 2, gamma 3, beta 1, mean .5, var 3, eps 1: s = 3 / sqrt(4) = 1.5, W' = 3, b' = 1.5 (0 - .5) + 1 = .25."""
    for conv in (nn.Conv2d(1, 1, 1, bias=False), nn.ConvTranspose2d(1, 1, 1, bias=False)):
        with torch.no_grad():
            conv.weight.fill_(2.0)
        net = nn.Sequential(conv, _bn(nn.BatchNorm2d, 1, 0.5, 3.0, 3.0, 1.0, 1.0)).eval()
        folded = fold_batchnorm(net)
        assert isinstance(folded[1], nn.Identity) and isinstance(net[1], nn.BatchNorm2d)  # the original is intact
        assert folded[0].weight.item() == 3.0 and folded[0].bias.item() == 0.25 and net[0].bias is None
        x = torch.tensor([[[[4.0]]]])
        assert folded(x).item() == 12.25 == net(x).item()  # 1.5 * (8 - .5) + 1


def test_fold_by_hand_sparse_with_bias():
    """SubMConv3d with bias b = 1 (as in the residual blocks): b' = 1.5 (1 - .5) + 1 = 1.75."""
    conv = spconv.SubMConv3d(1, 1, 1, bias=True, indice_key='k')
    with torch.no_grad():
        conv.weight.fill_(2.0)
        conv.bias.fill_(1.0)
    net = spconv.SparseSequential(conv, _bn(nn.BatchNorm1d, 1, 0.5, 3.0, 3.0, 1.0, 1.0)).eval()
    folded = fold_batchnorm(net)
    assert folded[0].weight.item() == 3.0 and folded[0].bias.item() == 1.75
    x = spconv.SparseConvTensor(torch.tensor([[4.0]]), torch.tensor([[0, 0, 0, 0]], dtype=torch.int32), [1, 1, 1], 1)
    with torch.no_grad():
        assert folded(x).features.item() == 13.75 == net(x).features.item()  # 1.5 * (9 - .5) + 1


def _randomise_bn(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.2)


def _maps(model, batch):
    """``spatial_features_2d`` and every raw head map of an eval-mode forward (no box decoding)."""
    b = dict(batch)
    for module in model.module_list:
        if module is model.dense_head:
            break
        b = module(b)
    x = model.dense_head.shared_conv(b['spatial_features_2d'])
    maps = {'spatial_features_2d': b['spatial_features_2d']}
    for i, head in enumerate(model.dense_head.heads_list):
        maps.update({f'{i}.{k}': v for k, v in head(x).items()})
    return maps


def _assert_folded_equal(cfg_file, half_range=None, **batch_kwargs):
    cfg = cfg_from_yaml_file(cfg_file)
    if half_range:
        cfg.DATA_CONFIG.POINT_CLOUD_RANGE = [-half_range, -half_range, -5.0, half_range, half_range, 3.0]
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    _randomise_bn(model, 1)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    n_bn = count_batchnorms(model)
    folded = freeze_for_inference(model)
    assert count_batchnorms(folded) == 0 and count_batchnorms(model) == n_bn > 0
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # original untouched
    assert not any(p.requires_grad for p in folded.parameters()) and not folded.training
    batch = make_batch(cfg, **batch_kwargs)
    with torch.no_grad():
        ref, got = _maps(model, batch), _maps(folded, batch)
    assert got['spatial_features_2d'].is_contiguous(memory_format=torch.channels_last)
    for key, r in ref.items():
        err = (got[key] - r).abs().max().item() / max(r.abs().max().item(), 1e-12)
        assert err <= 1e-5, f'{key}: relative error {err:.2e}'
    return model, folded


def test_folded_tiny_teacher_and_student_match_unfolded():
    for cfg_file in (TEACHER_CFG, STUDENT_CFG):
        _assert_folded_equal(cfg_file)


def test_folded_full_width_student_matches_unfolded():
    """CP-Voxel-S at full width (every layer as shipped, 0.075 m voxels) on a +-21.6 m range (72 x 72 BEV, as the
    OpenPCDet reference test) to keep the test fast."""
    _assert_folded_equal(REPO / 'configs' / 'cp_voxel_s.yaml', half_range=21.6, batch_size=1, num_boxes=3,
                         clutter=3000)


def test_fold_refuses_batch_statistics():
    model = build_model(cfg_from_yaml_file(TEACHER_CFG))
    with pytest.raises(ValueError, match='eval mode'):
        fold_batchnorm(model)  # training mode
    model.eval()
    model.backbone_2d.blocks[0][2].train()  # e.g. TEACHER_BN: batch
    with pytest.raises(ValueError, match='BatchNorm2d must be in eval mode'):
        fold_batchnorm(model)


def test_run_frozen_outputs_enter_the_students_graph():
    """``a * t`` saves ``t`` for backward: a raw inference tensor fails there, run_frozen's output does not, and
    the student's gradient equals the one with a plain no_grad teacher."""
    cfg = cfg_from_yaml_file(TEACHER_CFG)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    _randomise_bn(model, 2)
    batch = make_batch(cfg, batch_size=1)
    with torch.inference_mode():
        raw = _maps(model, batch)['spatial_features_2d']
    a = torch.randn(raw.shape, requires_grad=True)
    with pytest.raises(RuntimeError, match='[Ii]nference tensors'):
        (a * raw).sum().backward()
    t = run_frozen(_maps, fold_batchnorm(model), batch, select=lambda m: m['spatial_features_2d'])
    assert not t.is_inference() and not t.requires_grad
    (a * t).sum().backward()
    with torch.no_grad():
        t_ref = _maps(model, batch)['spatial_features_2d']
    np.testing.assert_allclose(a.grad.numpy(), t_ref.numpy(), rtol=1e-5, atol=1e-5 * t_ref.abs().max().item())
