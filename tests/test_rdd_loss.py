"""RDDLoss end to end: config, a hand-computed golden batch, invariants, gradients, metric placement across grids,
the disparity histogram."""
import math

import pytest
import torch

from kd_context_helpers import context, grid, head_layout
from rdd.config_schema import section_to_mapping
from rdd.distill.rdd import RDDConfig, RDDLoss
from rdd.distill.registry import build_kd_loss
from rdd.errors import ConfigError, KDConfigError

LN3, LOW = math.log(3.0), -math.log(19.0)  # sigmoid(LOW) = 0.05, below SCORE_THRESH 0.1
T_SIGNS = [1, 1, 1, 1, 1, 0, 0, 0, 0]
S_SIGNS = [1, 1, 1, 1, -1, 0, 0, 0, 0]


def test_config_defaults_are_design_4_1():
    assert section_to_mapping(RDDConfig()) == {
        'PROPOSAL': {'SCORE_THRESH': 0.1, 'MAX_PER_SOURCE': 100}, 'REGION': 'gaussian', 'GRID_SIZE': 7,
        'TAU': 4.0, 'LAMBDA': 0.1, 'ALPHA_FEAT': 0.2, 'ALPHA_LOGIT': 0.2, 'REG_WEIGHT': 0.0,
        'LOG_HIST_INTERVAL': 500}
    loss = RDDLoss.from_config({'LAMBDA': 0.3, 'PROPOSAL': {'MAX_PER_SOURCE': 50}}, context())
    assert loss.cfg.lambda_ == 0.3 and loss.cfg.proposal.max_per_source == 50 and loss.cfg.proposal.score_thresh == 0.1
    assert loss.REQUIRES == ('features', 'pred_dicts')  # no decoded boxes needed


@pytest.mark.parametrize('cfg, key', [({'GAMMA': 0.6}, 'GAMMA'), ({'LAMBDA': 1.5}, 'LAMBDA'),
                                      ({'LAMBDA': 'x'}, 'LAMBDA'), ({'REGION': 'circle'}, 'REGION'),
                                      ({'TAU': 0}, 'TAU'), ({'PROPOSAL': {'MAX_PER_SOURCE': 0}}, 'MAX_PER_SOURCE'),
                                      ({'PROPOSAL': {'NMS_THRESH': 0.2}}, 'NMS_THRESH'),
                                      ({'ALPHA_FEAT': -1}, 'ALPHA_FEAT'), ({'LOG_HIST_INTERVAL': -1}, 'LOG_HIST')])
def test_config_errors_name_the_key(cfg, key):
    with pytest.raises(ConfigError, match=key):
        RDDLoss.from_config(cfg, context())
    with pytest.raises(KDConfigError, match=r'MODEL\.KD_LOSSES\[0\] \(RDDLoss\).*' + key):
        build_kd_loss({'NAME': 'RDDLoss', **cfg}, context(), index=0)


def test_heads_must_match():
    ctx = context(head=head_layout())
    other = head_layout(('car', 'truck'), (('car',), ('truck',)))
    bad = type(ctx)(teacher=ctx.teacher, student=type(ctx.student)(ctx.student.grid, ctx.student.feature_channels,
                                                                     other))
    with pytest.raises(KDConfigError, match='heads differ'):
        RDDLoss.from_config({}, bad)


# ----------------------------------------------------------------------------------------------------------------
# golden batch

def identity_psi(loss):
    """ψ = identity: conv weight I, BatchNorm in eval with mean 0 and var + eps = 1 (ReLU keeps inputs >= 0)."""
    with torch.no_grad():
        loss.psi.conv.weight.copy_(torch.eye(loss.psi.conv.weight.shape[0])[:, :, None, None])
        loss.psi.bn.running_mean.zero_()
        loss.psi.bn.running_var.fill_(1.0 - loss.psi.bn.eps)
    loss.psi.eval()
    return loss


def golden_outputs(log_size):
    """8 x 8 maps of 1 m cells over +-4 m, 2 samples, one head group ('car'), 2 feature channels.

    Sample 0: the teacher heatmap has one peak, logit ln 3 (0.75), at (row 3, col 3), its 8 neighbours logit 0
    (0.5), every other cell LOW (0.05); the student heatmap is LOW everywhere. So M = 1, N = 0. The peak's box:
    offsets (0.5, 0.5) (centre on the cell centre (-0.5, -0.5) m), log sizes ``log_size``, yaw 0.
    Features: 10 everywhere on both channels (softmax 1/2, 1/2), except the 3 x 3 block of rows / cols 2-4 where
    channel 0 is 10 + 4 ln 3 · t (teacher t = T_SIGNS, student s = S_SIGNS, row-major): the golden pair of
    tests/test_rdd_terms.py (ρ = 0.6, d = 0.8, ‖ΔN‖₂ = √½). Sample 1: every heatmap LOW, no proposal.
    """
    def side(signs, peak):
        feat = torch.full((2, 2, 8, 8), 10.0)
        feat[0, 0, 2:5, 2:5] += 4 * LN3 * torch.tensor(signs, dtype=torch.float32).view(3, 3)
        hm = torch.full((2, 1, 8, 8), LOW)
        if peak:
            hm[0, 0, 2:5, 2:5] = 0.0
            hm[0, 0, 3, 3] = LN3
        reg = {'center': torch.full((2, 2, 8, 8), 0.5), 'center_z': torch.zeros(2, 1, 8, 8),
               'dim': torch.full((2, 3, 8, 8), float(log_size)),
               'rot': torch.cat([torch.ones(2, 1, 8, 8), torch.zeros(2, 1, 8, 8)], 1), 'vel': torch.zeros(2, 2, 8, 8)}
        return {'spatial_features_2d': feat, 'pred_dicts': [{'hm': hm, **reg}]}
    return side(T_SIGNS, True), side(S_SIGNS, False)


@pytest.mark.parametrize('region, log_size', [('box', math.log(3.0)), ('gaussian', 0.0)])
def test_golden_batch(region, log_size):
    """Both regions read exactly the 3 x 3 cells around the peak with GRID_SIZE 3: ``box`` a 3 x 3 m box on the
    cell centre; ``gaussian`` a 1 x 1 m box whose CenterPoint radius is 0.43 -> 0 -> MIN_RADIUS 1, i.e. a 3-cell
    square. The one pair (sample 0, M + N = 1): d = 0.8 >= λ = 0.1, so m = 1; ‖ΔN‖₂ = 0.70710678; heatmap L1 =
    (0.75 − 0.05) + 8 (0.5 − 0.05) = 4.3. Batch mean over B = 2 (sample 1 adds 0): L_feat = 0.35355339,
    L_logit = 2.15, loss = 0.2 · 0.35355339 + 0.2 · 2.15 = 0.50071068."""
    ctx = context(t_grid=grid(1.0, half=4.0), s_grid=grid(1.0, half=4.0), t_ch=2, s_ch=2,
                  head=head_layout(min_radius=1))
    loss_fn = identity_psi(RDDLoss.from_config({'REGION': region, 'GRID_SIZE': 3}, ctx))
    teacher, student = golden_outputs(log_size)
    loss, tb = loss_fn(teacher, student)
    assert tb['rdd_feat'] == pytest.approx(0.35355339, rel=1e-5)
    assert tb['rdd_logit'] == pytest.approx(2.15, rel=1e-5)
    assert loss.item() == pytest.approx(0.50071068, rel=1e-5)
    assert (tb['rdd_pairs'], tb['rdd_pairs_teacher'], tb['rdd_pairs_student']) == (0.5, 0.5, 0.0)
    assert tb['rdd_kept_fraction'] == 1.0 and tb['rdd_disp_kept'] == pytest.approx(0.8, abs=1e-5)
    # λ above d: the pair is dropped, both terms vanish
    loss_fn = identity_psi(RDDLoss.from_config({'REGION': region, 'GRID_SIZE': 3, 'LAMBDA': 0.9}, ctx))
    loss, tb = loss_fn(teacher, student)
    assert loss.item() == 0.0 and tb['rdd_kept_fraction'] == 0.0 and tb['rdd_disp_dropped'] == pytest.approx(0.8)


# ----------------------------------------------------------------------------------------------------------------
# invariants on random maps

def random_outputs(gen, bsz=2, size=16, channels=4, scale=None, requires_grad=False):
    """Random non-negative features and heatmaps with many peaks above 0.1 on a ``size`` x ``size`` map."""
    feat = torch.rand(bsz, channels, size, size, generator=gen) * 3
    if scale is not None:  # noise whose amplitude grows along x: the pairs' disparities spread over [0, 1]
        feat = feat + scale * torch.rand(bsz, channels, size, size, generator=gen) * torch.linspace(0, 3, size)
    pd = [{'hm': torch.randn(bsz, 1, size, size, generator=gen) - 1.0,
           'center': torch.rand(bsz, 2, size, size, generator=gen), 'center_z': torch.zeros(bsz, 1, size, size),
           'dim': torch.rand(bsz, 3, size, size, generator=gen) + 0.5,
           'rot': torch.randn(bsz, 2, size, size, generator=gen), 'vel': torch.zeros(bsz, 2, size, size)}]
    out = {'spatial_features_2d': feat, 'pred_dicts': pd}
    if requires_grad:
        out['spatial_features_2d'].requires_grad_(True)
        pd[0]['hm'].requires_grad_(True)
    return out


def ctx16(**kw):
    return context(t_grid=grid(1.0, half=8.0), s_grid=grid(1.0, half=8.0), t_ch=4, s_ch=4, **kw)


def test_identical_patches_are_dropped_and_cost_nothing():
    gen = torch.Generator().manual_seed(0)
    teacher = random_outputs(gen)
    student = {'spatial_features_2d': teacher['spatial_features_2d'].clone(),
               'pred_dicts': [{k: v.clone() for k, v in teacher['pred_dicts'][0].items()}]}
    loss_fn = identity_psi(RDDLoss.from_config({}, ctx16()))
    loss, tb = loss_fn(teacher, student)
    assert tb['rdd_pairs'] > 10 and tb['rdd_kept_fraction'] == 0.0  # d = 0 < λ = 0.1 for every pair
    assert tb['rdd_disp_mean'] < 1e-5 and loss.item() == 0.0
    loss_fn = identity_psi(RDDLoss.from_config({'LAMBDA': 0.0}, ctx16()))
    loss, tb = loss_fn(teacher, student)
    assert tb['rdd_kept_fraction'] == 1.0 and tb['rdd_feat'] == 0.0 and tb['rdd_logit'] == 0.0


def test_kept_fraction_falls_with_lambda():
    """Student features = teacher features + noise whose amplitude grows along x: the pairs' disparities spread
    over [0, 1], so the kept fraction visits several values as λ rises."""
    gen = torch.Generator().manual_seed(1)
    teacher, student = random_outputs(gen), random_outputs(gen)
    ramp = torch.linspace(0, 3, 16)
    student['spatial_features_2d'] = teacher['spatial_features_2d'] + torch.rand(2, 4, 16, 16, generator=gen) * ramp
    fractions = []
    for lam in (0.0, 0.1, 0.3, 0.6, 1.0):
        loss_fn = identity_psi(RDDLoss.from_config({'LAMBDA': lam}, ctx16()))
        fractions.append(loss_fn(teacher, student)[1]['rdd_kept_fraction'])
    assert fractions[0] == 1.0 and fractions[-1] < 1.0
    assert all(a >= b for a, b in zip(fractions, fractions[1:])), fractions
    assert len(set(fractions)) == 5, fractions  # the batch's disparities really spread over the λ range


@pytest.mark.parametrize('mode', ['train', 'eval'])
def test_zero_proposals_give_zero_with_every_parameter_in_the_graph(mode):
    gen = torch.Generator().manual_seed(2)
    teacher, student = random_outputs(gen), random_outputs(gen, requires_grad=True)
    for out in (teacher, student):
        out['pred_dicts'][0]['hm'] = out['pred_dicts'][0]['hm'].detach() * 0 + LOW
    student['pred_dicts'][0]['hm'].requires_grad_(True)
    loss_fn = RDDLoss.from_config({}, ctx16()).train(mode == 'train')
    loss, tb = loss_fn(teacher, student)
    assert loss.item() == 0.0 and tb['rdd_pairs'] == 0.0 and tb['rdd_kept_fraction'] == 0.0
    loss.backward()
    params = dict(loss_fn.named_parameters())
    assert set(params) == {'psi.conv.weight', 'psi.bn.weight', 'psi.bn.bias'}
    assert all(p.grad is not None and torch.all(p.grad == 0) for p in params.values())


def test_gradients_reach_student_and_psi_never_teacher():
    gen = torch.Generator().manual_seed(3)
    teacher, student = random_outputs(gen, requires_grad=True), random_outputs(gen, requires_grad=True)
    loss_fn = RDDLoss.from_config({'REG_WEIGHT': 1.0}, ctx16()).train()
    loss, tb = loss_fn(teacher, student)
    assert tb['rdd_kept_fraction'] > 0 and tb['rdd_logit_reg'] > 0
    loss.backward()
    assert teacher['spatial_features_2d'].grad is None and teacher['pred_dicts'][0]['hm'].grad is None
    assert student['spatial_features_2d'].grad.abs().sum() > 0 and student['pred_dicts'][0]['hm'].grad.abs().sum() > 0
    for name, p in loss_fn.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_training_forward_exposes_the_disparity_histogram():
    gen = torch.Generator().manual_seed(4)
    loss_fn = RDDLoss.from_config({'LOG_HIST_INTERVAL': 7}, ctx16()).train()
    _, tb = loss_fn(random_outputs(gen), random_outputs(gen))
    d = loss_fn.histograms['rdd_disparity']
    assert loss_fn.hist_interval == 7 and d.shape == (round(tb['rdd_pairs'] * 2),)
    assert float(d.mean()) == pytest.approx(tb['rdd_disp_mean'], rel=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# metric placement across grids

def linear_map(g, bsz=1):
    """(bsz, 4, H, W) features that are affine in the metric position of each cell centre (plus 20: >= 0)."""
    h, w = g.map_size
    x, y = g.cell_to_metric(torch.arange(w, dtype=torch.float64) + 0.5, torch.arange(h, dtype=torch.float64) + 0.5)
    xx, yy = x.view(1, w).expand(h, w), y.view(h, 1).expand(h, w)
    chans = torch.stack([20 + xx, 20 + yy, 20 + 0.5 * xx - yy, 20 + 0.0 * xx]).float()
    return chans[None].expand(bsz, -1, -1, -1).contiguous()


def exact_centre_maps(g, centre, peak_cell):
    """One group whose heatmap peaks at ``peak_cell`` and whose ``center`` map points from every cell to the metric
    ``centre`` (an exact prediction): offset = metric_to_cell(centre) − cell index."""
    h, w = g.map_size
    u, v = g.metric_to_cell(*centre)
    col, row = torch.arange(w, dtype=torch.float32).view(1, w), torch.arange(h, dtype=torch.float32).view(h, 1)
    hm = torch.full((1, 1, h, w), LOW)
    hm[0, 0, peak_cell[0], peak_cell[1]] = 2.0
    return [{'hm': hm, 'center': torch.stack([u - col.expand(h, w), v - row.expand(h, w)])[None],
             'center_z': torch.zeros(1, 1, h, w), 'dim': torch.full((1, 3, h, w), math.log(2.0)),
             'rot': torch.cat([torch.ones(1, 1, h, w), torch.zeros(1, 1, h, w)], 1), 'vel': torch.zeros(1, 2, h, w)}]


def test_regions_are_cropped_at_the_same_metric_place_on_different_grids():
    """Teacher 1 m cells, student 0.5 m cells, features affine in metric position on both: bilinear RoIAlign at the
    same metric points reads the same values, so (ψ = identity) every pair is identical: d = 0, L_feat = 0."""
    tg, sg = grid(1.0, half=8.0), grid(0.5, half=8.0)
    ctx = context(t_grid=tg, s_grid=sg, t_ch=4, s_ch=4)
    loss_fn = identity_psi(RDDLoss.from_config({'LAMBDA': 0.0, 'REGION': 'box'}, ctx))
    teacher = {'spatial_features_2d': linear_map(tg), 'pred_dicts': exact_centre_maps(tg, (1.3, -0.7), (7, 9))}
    student = {'spatial_features_2d': linear_map(sg), 'pred_dicts': exact_centre_maps(sg, (1.3, -0.7), (14, 18))}
    _, tb = loss_fn(teacher, student)
    assert tb['rdd_pairs'] == 2.0 and tb['rdd_disp_mean'] < 1e-3 and tb['rdd_feat'] < 1e-4


def test_regression_term_compares_metric_centres():
    """Both models predict the same metric centre from every cell, on 1 m and 0.5 m grids: their offsets differ
    (cell units of two grids) but the metric positions agree, so the regression L1 is 0; moving the student's
    centre by 0.25 m in x adds 0.25 per sampled point: 49 · 0.25 = 12.25 per pair, (12.25 + 12.25) / (M + N = 2)."""
    tg, sg = grid(1.0, half=8.0), grid(0.5, half=8.0)
    ctx = context(t_grid=tg, s_grid=sg, t_ch=4, s_ch=4)
    loss_fn = RDDLoss.from_config({'LAMBDA': 0.0, 'REG_WEIGHT': 1.0}, ctx)
    teacher = {'spatial_features_2d': linear_map(tg), 'pred_dicts': exact_centre_maps(tg, (1.3, -0.7), (7, 9))}
    student = {'spatial_features_2d': linear_map(sg), 'pred_dicts': exact_centre_maps(sg, (1.3, -0.7), (14, 18))}
    assert loss_fn(teacher, student)[1]['rdd_logit_reg'] == pytest.approx(0.0, abs=1e-4)
    student['pred_dicts'] = exact_centre_maps(sg, (1.55, -0.7), (14, 18))
    assert loss_fn(teacher, student)[1]['rdd_logit_reg'] == pytest.approx(12.25, rel=1e-4)


def test_histogram_hook_writes_every_interval(tmp_path):
    """The trainer hook writes each KD loss's ``histograms`` at iterations ``it + 1`` that are multiples of its
    ``hist_interval``, under ``train/kd/<key>/<name>``; ScalarWriter writes them to TensorBoard."""
    from types import SimpleNamespace

    from rdd.engine.hooks import KDHistogramHook
    from rdd.engine.logging_utils import ScalarWriter

    class Writer:
        def __init__(self):
            self.calls = []

        def add_histogram(self, tag, values, step):
            self.calls.append((tag, step, len(values)))
    gen = torch.Generator().manual_seed(5)
    loss_fn = RDDLoss.from_config({'LOG_HIST_INTERVAL': 2}, ctx16()).train()
    _, tb = loss_fn(random_outputs(gen), random_outputs(gen))
    hook = KDHistogramHook(Writer())
    trainer = SimpleNamespace(rank=0, core_model=SimpleNamespace(kd_losses={'RDDLoss': loss_fn}))
    for it in range(5):
        hook.after_step(trainer, {'it': it})
    n = round(tb['rdd_pairs'] * 2)
    assert hook.writer.calls == [('train/kd/RDDLoss/rdd_disparity', 2, n), ('train/kd/RDDLoss/rdd_disparity', 4, n)]
    trainer.rank = 1  # other ranks write nothing
    hook.after_step(trainer, {'it': 5})
    assert len(hook.writer.calls) == 2
    writer = ScalarWriter(tb_dir=tmp_path)
    writer.add_histogram('train/kd/RDDLoss/rdd_disparity', loss_fn.histograms['rdd_disparity'], 2)
    writer.close()
    assert any(p.name.startswith('events.out.tfevents') for p in tmp_path.iterdir())


def test_psi_cell_form_equals_map_form_and_survives_sync_bn_conversion():
    """ψ on the cells the regions read gives RoIAlign(ψ(F)) exactly (eval: running statistics); ``--sync_bn``
    leaves its BatchNorm rank-local (a rank without pairs does not call it, a SyncBatchNorm would hang the others)."""
    from rdd.ops.bev_pool import roi_grid_pool, roi_grid_taps
    gen = torch.Generator().manual_seed(6)
    loss_fn = RDDLoss.from_config({}, context(t_grid=grid(1.0, half=8.0), s_grid=grid(1.0, half=8.0), t_ch=3, s_ch=4))
    psi = loss_fn.psi.eval()
    with torch.no_grad():
        psi.bn.running_mean.uniform_(-0.5, 0.5, generator=gen)
        psi.bn.running_var.uniform_(0.5, 2.0, generator=gen)
    fmap = torch.randn(2, 4, 16, 16, generator=gen, dtype=torch.float64)
    psi.double()
    boxes = torch.tensor([[0.3, -1.2, 0, 4.0, 2.0, 1, 0.7], [-5.0, 3.0, 0, 3.0, 3.0, 1, 0.0]], dtype=torch.float64)
    bidx = torch.tensor([0, 1])
    taps = roi_grid_taps(boxes, bidx, grid(1.0, half=8.0), fmap.shape, 7)
    cells = taps.interpolate(psi.cells(taps.gather(fmap)))
    assert torch.allclose(cells, roi_grid_pool(psi(fmap), boxes, bidx, grid(1.0, half=8.0), 7), atol=1e-12)
    converted = torch.nn.SyncBatchNorm.convert_sync_batchnorm(loss_fn)
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in converted.modules())
    assert {k for k in loss_fn.state_dict()} == {'psi.conv.weight', 'psi.bn.weight', 'psi.bn.bias',
                                                 'psi.bn.running_mean', 'psi.bn.running_var',
                                                 'psi.bn.num_batches_tracked'}
