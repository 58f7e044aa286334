"""RDDLoss end to end: config validation, golden values, gradients, empty batches, grid mismatch, full-size run."""
import math

import pytest
import torch

from rdd.errors import ConfigError
from rdd.distill.context import HeadLayout, KDContext, ModelFacts
from rdd.distill.rdd import RDD_DEFAULTS, RDDLoss, rdd_config_with_defaults
from rdd.geometry import BEVGrid

CLASS_NAMES = ['car', 'truck', 'construction_vehicle', 'bus', 'trailer', 'barrier', 'motorcycle', 'bicycle',
               'pedestrian', 'traffic_cone']
HEADS = [['car'], ['truck', 'construction_vehicle'], ['bus', 'trailer'], ['barrier'], ['motorcycle', 'bicycle'],
         ['pedestrian', 'traffic_cone']]
REG = {'center': 2, 'center_z': 1, 'dim': 3, 'rot': 2, 'vel': 2}
SMALL = {'point_cloud_range': [-12.0, -12.0, -5.0, 12.0, 12.0, 3.0], 'voxel_size': [0.3, 0.3, 0.2],
         'feature_map_stride': 2}  # 0.6 m cells, 40 x 40


def head_info(t_ch, s_ch, teacher=SMALL, student=SMALL, student_heads=HEADS):
    """KDContext of two models with ``t_ch`` / ``s_ch`` neck channels on the given grids."""
    def facts(geo, heads, ch):
        head = HeadLayout(tuple(CLASS_NAMES), tuple(tuple(h) for h in heads), tuple(REG), dict(REG),
                          (1.0,) * 10, 0.1, 2)
        grid = BEVGrid(tuple(geo['point_cloud_range']), tuple(geo['voxel_size']), geo['feature_map_stride'])
        return ModelFacts(grid=grid, feature_channels={'spatial_features_2d': ch}, head=head)
    return KDContext(teacher=facts(teacher, HEADS, t_ch), student=facts(student, student_heads, s_ch))


def pred_dicts(bsz, hw, gen, scale=1.0):
    return [{**{k: scale * torch.randn(bsz, c, *hw, generator=gen) for k, c in REG.items()},
             'hm': scale * torch.randn(bsz, len(h), *hw, generator=gen)} for h in HEADS]


def box_dicts(bsz, num, gen, extent=10.0):
    out = []
    for _ in range(bsz):
        b = torch.zeros(num, 9)
        b[:, :2] = (torch.rand(num, 2, generator=gen) * 2 - 1) * extent
        b[:, 3:6] = torch.rand(num, 3, generator=gen) * 3 + 0.5
        b[:, 6] = (torch.rand(num, generator=gen) * 2 - 1) * math.pi
        out.append({'pred_boxes': b, 'pred_scores': torch.rand(num, generator=gen) * 0.7 + 0.3,
                    'pred_labels': torch.randint(1, 11, (num,), generator=gen)})
    return out


def outputs(bsz, ch, hw, gen, num_boxes=6, feat=None, preds=None):
    f = torch.randn(bsz, ch, *hw, generator=gen) if feat is None else feat
    return {'spatial_features_2d': f, 'pred_dicts': preds if preds is not None else pred_dicts(bsz, hw, gen),
            'boxes': box_dicts(bsz, num_boxes, gen)}


def identity_adapter(loss):
    with torch.no_grad():
        loss.adapter.weight.copy_(torch.eye(loss.adapter.weight.shape[0])[:, :, None, None])
        loss.adapter.bias.zero_()


def test_config_defaults_match_design():
    c = rdd_config_with_defaults({})
    assert c['PROPOSAL'] == {'SCORE_THRESH': 0.3, 'NMS_THRESH': 0.2, 'MAX_PER_SOURCE': 100, 'USE_GT': False,
                             'MERGE_IOU': 0.5, 'SOURCES': ['teacher', 'student']}
    assert c['LEARN_VAR'] is True and c['VAR_INIT'] == 1.0 and c['VAR_EPS'] == 1e-4
    assert (c['GRID_SIZE'], c['GAMMA'], c['TEMPERATURE'], c['DISPARITY']) == (7, 0.6, 1.0, 'kl')
    assert (c['LAMBDA_FEAT'], c['LAMBDA_LOGIT'], c['LAMBDA_REG'], c['COMPRESSION_BETA']) == (1.0, 1.0, 0.2, 0.0)
    assert c['BALANCE'] == {'SIZE': True, 'SOURCE': True, 'CLASS': True} and c['GRID_MISMATCH'] == 'resample'
    assert rdd_config_with_defaults({'PROPOSAL': {'USE_GT': True}})['PROPOSAL']['SCORE_THRESH'] == 0.3
    assert RDD_DEFAULTS['PROPOSAL']['USE_GT'] is False  # filling defaults does not mutate them


@pytest.mark.parametrize('cfg, name', [({'GAMA': 0.5}, 'GAMMA'), ({'PROPOSAL': {'SCORE': 0.1}}, 'PROPOSAL.SCORE'),
                                       ({'LOGIT_HEADS': 'some'}, 'LOGIT_HEADS'), ({'BALANCE': 1}, 'BALANCE'),
                                       ({'DISPARITY': 'l2'}, 'DISPARITY'), ({'GAMMA': 0}, 'GAMMA'),
                                       ({'VAR_INIT': 1e-5}, 'VAR_INIT'), ({'LAMBDA_REG': -1}, 'LAMBDA_REG')])
def test_config_errors_name_the_key(cfg, name):
    with pytest.raises(ConfigError, match=name.split('.')[-1] if '.' not in name else r'PROPOSAL\.SCORE'):
        rdd_config_with_defaults(cfg)


def test_class_layout_mismatch_is_an_error():
    with pytest.raises(ValueError, match='heads differ'):
        RDDLoss.from_config({}, head_info(8, 8, student_heads=HEADS[::-1]))


def test_identical_regions_give_variance_only_values():
    gen = torch.Generator().manual_seed(1)
    loss_fn = RDDLoss.from_config({'LOGIT_HEADS': 'own'}, head_info(8, 8))
    identity_adapter(loss_fn)
    with torch.no_grad():
        loss_fn.feat_var.s.copy_(torch.linspace(-2, 2, 8))
        loss_fn.reg_var.s.copy_(torch.linspace(-1, 1, 60).view(6, 10))
    t = outputs(2, 8, (40, 40), gen)
    s = {'spatial_features_2d': t['spatial_features_2d'].clone(), 'boxes': box_dicts(2, 5, gen),
         'pred_dicts': [{k: v.clone() for k, v in d.items()} for d in t['pred_dicts']]}
    loss, tb = loss_fn(t, s, {'batch_size': 2})
    assert tb['rdd_pairs_kept'] > 0
    assert tb['rdd_feat'] == pytest.approx(0.5 * torch.log(loss_fn.feat_var()).mean().item(), abs=1e-5)
    assert tb['rdd_disp_kept'] == pytest.approx(0.0, abs=1e-4)
    # heatmap term at matching logits is the teacher's binary entropy (> 0); regression variance-only value
    # depends on the head mix of the kept pairs and lies within the per-head range
    reg_vo = 0.5 * torch.log(loss_fn.reg_var()).mean(1)
    assert reg_vo.min().item() - 1e-5 <= tb['rdd_reg'] <= reg_vo.max().item() + 1e-5
    assert 0 < tb['rdd_hm'] < math.log(2) + 1e-6
    assert loss.item() == pytest.approx(tb['rdd_feat'] + tb['rdd_hm'] + 0.2 * tb['rdd_reg'], abs=1e-5)


def test_logit_term_uses_own_head_group_only():
    gen = torch.Generator().manual_seed(2)
    t = outputs(1, 8, (40, 40), gen)
    t['boxes'][0]['pred_labels'][:] = 1  # all proposals are cars (head 0)
    preds = [{k: v.clone() for k, v in d.items()} for d in t['pred_dicts']]
    for k in preds[3]:
        preds[3][k] += 5.0  # the student differs from the teacher only in the barrier head
    s = {'spatial_features_2d': t['spatial_features_2d'].clone(), 'pred_dicts': preds, 'boxes': box_dicts(1, 0, gen)}
    own = RDDLoss.from_config({}, head_info(8, 8))
    _, tb_own = own(t, s, {})
    assert tb_own['rdd_reg'] == pytest.approx(0.0, abs=1e-6)  # sigma^2 = 1, identical car maps
    every = RDDLoss.from_config({'LOGIT_HEADS': 'all'}, head_info(8, 8))
    _, tb_all = every(t, s, {})
    assert tb_all['rdd_reg'] > 1.0 and tb_all['rdd_hm'] > tb_own['rdd_hm']


def test_gradients_reach_student_adapter_and_variances_not_teacher():
    gen = torch.Generator().manual_seed(3)
    loss_fn = RDDLoss.from_config({}, head_info(8, 4))
    t, s = outputs(2, 8, (40, 40), gen), outputs(2, 4, (40, 40), gen)
    t['spatial_features_2d'].requires_grad_(True)
    s['spatial_features_2d'].requires_grad_(True)
    for d in t['pred_dicts'] + s['pred_dicts']:
        for v in d.values():
            v.requires_grad_(True)
    loss, tb = loss_fn(t, s, {})
    loss.backward()
    assert t['spatial_features_2d'].grad is None
    assert all(v.grad is None for d in t['pred_dicts'] for v in d.values())
    assert s['spatial_features_2d'].grad.abs().sum() > 0
    assert s['pred_dicts'][0]['hm'].grad is not None
    for name, p in loss_fn.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(isinstance(v, float) for v in tb.values())


def test_zero_proposals_give_zero_connected_loss():
    gen = torch.Generator().manual_seed(4)
    loss_fn = RDDLoss.from_config({}, head_info(8, 4))
    t, s = outputs(2, 8, (40, 40), gen, num_boxes=0), outputs(2, 4, (40, 40), gen, num_boxes=0)
    loss, tb = loss_fn(t, s, {})
    assert loss.item() == 0.0 and not torch.isnan(loss) and loss.requires_grad
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() == 0 for p in loss_fn.parameters())
    assert tb['rdd_pairs_proposed'] == 0.0 and tb['rdd_feat'] == 0.0


def test_grid_mismatch_resample_native_and_error():
    gen = torch.Generator().manual_seed(5)
    coarse = dict(SMALL, feature_map_stride=4)  # 20 x 20 student grid
    t = outputs(1, 8, (40, 40), gen)
    fs = torch.full((1, 8, 20, 20), 0.5)
    s = {'spatial_features_2d': fs, 'pred_dicts': pred_dicts(1, (20, 20), gen), 'boxes': box_dicts(1, 4, gen)}
    with pytest.raises(ValueError, match='GRID_MISMATCH'):
        RDDLoss.from_config({'GRID_MISMATCH': 'error'}, head_info(8, 8, student=coarse))(t, s, {})
    feats = {}
    for mode in ('resample', 'native'):
        loss_fn = RDDLoss.from_config({'GRID_MISMATCH': mode, 'LAMBDA_LOGIT': 0.0}, head_info(8, 8, student=coarse))
        identity_adapter(loss_fn)
        loss, tb = loss_fn(t, s, {})
        assert torch.isfinite(loss)
        feats[mode] = tb['rdd_feat']
    assert feats['resample'] == pytest.approx(feats['native'], rel=1e-4)  # constant student map: same regions
    with pytest.raises(ValueError, match=r'H=20, W=20 but its grid'):
        RDDLoss.from_config({}, head_info(8, 8))(t, s, {})  # student map size contradicts its stride


def test_use_gt_and_compression_terms():
    gen = torch.Generator().manual_seed(6)
    loss_fn = RDDLoss.from_config({'PROPOSAL': {'USE_GT': True}, 'COMPRESSION_BETA': 0.1}, head_info(8, 4))
    t, s = outputs(1, 8, (40, 40), gen, num_boxes=0), outputs(1, 4, (40, 40), gen, num_boxes=0)
    gt = torch.zeros(1, 2, 10)
    gt[0, 0] = torch.tensor([1.0, 2.0, 0.0, 4.0, 2.0, 1.5, 0.3, 0.0, 0.0, 9.0])
    loss, tb = loss_fn(t, s, {'gt_boxes': gt})
    assert tb['rdd_pairs_gt'] == 1.0 and tb['rdd_pairs_kept'] == 1.0 and tb['rdd_compress'] > 0
    with pytest.raises(ValueError, match='no head group'):
        gt[0, 0, 9] = 11.0
        loss_fn(t, s, {'gt_boxes': gt})


def test_full_size_forward_runs():
    """2 samples at the teacher's 180 x 180 grid, ~200 proposals in total (timing belongs to bench/kd_step.py)."""
    gen = torch.Generator().manual_seed(7)
    geo = {'point_cloud_range': [-54.0, -54.0, -5.0, 54.0, 54.0, 3.0], 'voxel_size': [0.075, 0.075, 0.2],
           'feature_map_stride': 8}
    loss_fn = RDDLoss.from_config({}, head_info(512, 256, geo, geo))
    t = outputs(2, 512, (180, 180), gen, num_boxes=60)
    s = outputs(2, 256, (180, 180), gen, num_boxes=60)
    for o in (t, s):
        for d in o['boxes']:
            d['pred_boxes'][:, :2] *= 5.0  # spread over the scene
    s['spatial_features_2d'].requires_grad_(True)
    loss, tb = loss_fn(t, s, {'batch_size': 2})
    loss.backward()
    assert torch.isfinite(loss) and s['spatial_features_2d'].grad is not None
    assert 60 <= tb['rdd_pairs_proposed'] <= 120
    assert tb['rdd_pairs_kept'] == pytest.approx(tb['rdd_pairs_proposed'] * 0.6, abs=1.0)
    assert tb['rdd_disp_kept'] >= tb['rdd_disp_dropped']


def test_ablation_switches_one_sided_proposals_and_fixed_variances():
    gen = torch.Generator().manual_seed(8)
    t, s = outputs(1, 8, (40, 40), gen), outputs(1, 4, (40, 40), gen)
    loss_fn = RDDLoss.from_config({'PROPOSAL': {'SOURCES': ['teacher']}, 'LEARN_VAR': False, 'DISPARITY': 'snr'},
                                  head_info(8, 4))
    assert 'student_boxes' not in loss_fn.REQUIRES
    s['boxes'] = None  # the Distiller does not decode the student then
    loss, tb = loss_fn(t, s, {})
    assert tb['rdd_pairs_student'] == 0.0 and tb['rdd_pairs_teacher'] > 0
    loss.backward()
    assert loss_fn.feat_var.s.grad is None and loss_fn.adapter.weight.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match='SOURCES'):
        RDDLoss.from_config({'PROPOSAL': {'SOURCES': ['gt']}}, head_info(8, 4))
    bilateral = RDDLoss.from_config({}, head_info(8, 4))
    assert 'student_boxes' in bilateral.REQUIRES
    with pytest.raises(ValueError, match='student boxes'):
        bilateral(t, s, {})


def test_optimising_the_loss_pulls_student_regions_to_the_teacher():
    torch.manual_seed(0)  # adapter init (passes for seeds 0-5 with margin)
    gen = torch.Generator().manual_seed(9)
    t = outputs(1, 8, (40, 40), gen, num_boxes=8)
    student_map = torch.randn(1, 4, 40, 40, generator=gen).requires_grad_(True)
    s_preds = pred_dicts(1, (40, 40), gen)
    for d in s_preds:
        for v in d.values():
            v.requires_grad_(True)
    loss_fn = RDDLoss.from_config({'GAMMA': 1.0}, head_info(8, 4))
    params = [student_map] + [v for d in s_preds for v in d.values()] + list(loss_fn.parameters())
    opt = torch.optim.Adam(params, lr=0.1)
    history = []
    for _ in range(20):
        s = {'spatial_features_2d': student_map, 'pred_dicts': s_preds, 'boxes': box_dicts(1, 0, gen)}
        loss, tb = loss_fn(t, s, {})
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(tb)
    first, last = history[0], history[-1]
    assert last['rdd_loss'] < first['rdd_loss'] - 0.5
    assert last['rdd_disp_kept'] < 0.5 * first['rdd_disp_kept']
    assert last['rdd_hm'] < first['rdd_hm'] and last['rdd_reg'] < first['rdd_reg']


def test_feature_term_and_gradients_match_plain_reference():
    """The loss differentiates only the kept pairs' adapter rows (values reused from the no-grad disparity pass);
    it must equal plain autograd through the documented steps, values and gradients."""
    from rdd.distill.rdd.balanced_mask import balanced_pair_weights, weighted_sample_mean
    from rdd.distill.rdd.disparity import gaussian_kl_disparity, select_top_fraction
    from rdd.distill.rdd.mi_bounds import gaussian_bound
    from rdd.ops.bev_pool import roi_grid_pool
    gen = torch.Generator().manual_seed(11)
    loss_fn = RDDLoss.from_config({'LAMBDA_LOGIT': 0.0, 'COMPRESSION_BETA': 0.3}, head_info(8, 4))
    with torch.no_grad():
        loss_fn.feat_var.s.normal_(generator=gen)
    t, s = outputs(2, 8, (40, 40), gen, num_boxes=9), outputs(2, 4, (40, 40), gen, num_boxes=9)
    fs = s['spatial_features_2d'].requires_grad_(True)
    loss, tb = loss_fn(t, s, {})
    loss.backward()
    got = [fs.grad.clone()] + [p.grad.clone() for p in loss_fn.parameters()]
    fs.grad = None
    loss_fn.zero_grad(set_to_none=True)

    props = loss_fn.proposals(t['boxes'], s['boxes'])
    head = loss_fn.label_to_head[props.labels]
    rt = roi_grid_pool(t['spatial_features_2d'], props.boxes, props.batch_idx, loss_fn.t_geom, 7)
    rs_raw = roi_grid_pool(fs, props.boxes, props.batch_idx, loss_fn.s_geom, 7)
    rs = loss_fn.adapt(rs_raw)
    keep = select_top_fraction(gaussian_kl_disparity(rt, rs), props.batch_idx, 2, 0.6)
    assert 0 < int(keep.sum()) < len(props)  # some pairs are dropped: their rows get no gradient
    b = props.batch_idx[keep]
    w = balanced_pair_weights(b, props.sources[keep], head[keep], 2, len(HEADS))
    ref = (weighted_sample_mean(gaussian_bound(rt[keep], rs[keep], loss_fn.feat_var()), w, b, 2)
           + 0.3 * weighted_sample_mean(0.5 * rs_raw[keep].pow(2).flatten(1).mean(1), w, b, 2))
    ref = ref + sum(p.sum() for p in loss_fn.parameters()) * 0.0
    ref.backward()
    want = [fs.grad] + [p.grad for p in loss_fn.parameters()]
    assert tb['rdd_pairs_kept'] == float(keep.sum()) / 2
    assert torch.allclose(loss, ref, rtol=1e-6, atol=1e-7)
    for g, r in zip(got, want):
        assert torch.allclose(g, r, rtol=1e-5, atol=1e-8)
