"""Baseline KD losses on hand-made inputs: golden values, invariants and config errors (no models needed)."""
import pytest
import torch
from easydict import EasyDict

from kd_context_helpers import HEAD_CH, context, grid
from rdd.distill.baselines import FitNetLoss, LabelKDLoss, LogitKDLoss, RoIMimicLoss
from rdd.distill.registry import KD_LOSSES, build_kd_loss
from rdd.errors import ConfigError, KDConfigError, RegistryError

def pred(hm, reg=None, size=8):
    d = {k: torch.zeros(1, c, size, size) for k, c in HEAD_CH.items()} if reg is None else dict(reg)
    d['hm'] = hm
    return d


def targets(size=8, inds=(0,), offsets=((0.5, 0.5),), hm=None):
    k = 4
    ind = torch.zeros(1, k, dtype=torch.long)
    mask = torch.zeros(1, k, dtype=torch.long)
    tb = torch.zeros(1, k, 10)
    for i, (c, off) in enumerate(zip(inds, offsets)):
        ind[0, i], mask[0, i], tb[0, i, :2] = c, 1, torch.tensor(off)
    heat = hm if hm is not None else torch.zeros(1, 1, size, size)
    return {'heatmaps': [heat], 'inds': [ind], 'masks': [mask], 'target_boxes': [tb]}


# ------------------------------------------------------------------------------------------------ registry
def test_registry_names_and_errors():
    assert {'RDDLoss', 'LogitKDLoss', 'FitNetLoss', 'RoIMimicLoss', 'LabelKDLoss', 'FGLoss', 'GIDFeatureLoss',
            'GIDLogitLoss', 'LADLoss'} <= set(KD_LOSSES.names())
    with pytest.raises(KDConfigError, match=r"MODEL.KD_LOSSES\[3\].NAME: unknown KD loss .*'Nope'; known: .*FitNetLoss"):
        build_kd_loss(EasyDict(NAME='Nope'), context(), index=3)
    with pytest.raises(KDConfigError, match='needs a NAME'):
        build_kd_loss(EasyDict(WEIGHT=1.0), context())

    class Other(torch.nn.Module):
        @classmethod
        def from_config(cls, cfg, ctx):
            return cls()
    with pytest.raises(RegistryError, match='already registered'):
        KD_LOSSES.register(Other, name='FitNetLoss')
    assert KD_LOSSES.get('FitNetLoss') is FitNetLoss
    with pytest.raises(KDConfigError, match=r"MODEL.KD_LOSSES\[0\] \(FitNetLoss\): FitNetLoss: unknown key\(s\) \['LR'\]"):
        build_kd_loss(EasyDict(NAME='FitNetLoss', WEIGHT=2.0, TAG='x', LR=1), context(), index=0)


# ------------------------------------------------------------------------------------------------ logit KD
def test_logit_kd_golden_heatmap_term():
    loss_fn = LogitKDLoss.from_config(EasyDict(HM_WEIGHT=1.0, REG_WEIGHT=0.0), context())
    hm_t = torch.full((1, 1, 8, 8), -10.0)
    hm_t[0, 0, 2, 3] = 0.0  # p_t = 0.5
    hm_s = torch.full((1, 1, 8, 8), -10.0)
    hm_s[0, 0, 2, 3] = torch.logit(torch.tensor(0.2))
    gauss = torch.zeros(1, 1, 8, 8)
    gauss[0, 0, 2, 3], gauss[0, 0, 2, 4] = 1.0, 0.5
    loss, tb = loss_fn({'pred_dicts': [pred(hm_t)]}, {'pred_dicts': [pred(hm_s)], 'target_dicts': targets(hm=gauss)},
                       {})
    # mask: 0.5 * 1.0 at (2,3); ~1e-4 * 0.5 at (2,4) (clamped p_t), 0 elsewhere
    m1, m2 = 0.5, 1e-4 * 0.5
    expected = (m1 * (0.2 - 0.5) ** 2 + m2 * 0.0) / (m1 + m2 + 1e-6)
    assert float(loss) == pytest.approx(expected, rel=1e-3)
    assert tb['logit_kd_hm'] == pytest.approx(expected, rel=1e-3)


def test_logit_kd_regression_at_gt_centres_same_grid():
    loss_fn = LogitKDLoss.from_config(EasyDict(HM_WEIGHT=0.0, REG_WEIGHT=1.0), context())
    reg_t = {k: torch.zeros(1, c, 8, 8) for k, c in HEAD_CH.items()}
    reg_s = {k: torch.zeros(1, c, 8, 8, requires_grad=True) for k, c in HEAD_CH.items()}
    # codes: center 0-1, center_z 2, dim 3-5, rot 6-7, vel 8-9
    reg_t['dim'][0, 0, 1, 2] = 2.0   # at the GT cell (ind = 1*8+2): |0-2| * w[3] = 2
    reg_t['rot'][0, 0, 1, 2] = 1.0   # |0-1| * w[6]: 1 with SparseKD's all-1 KD code weights (not the head's 0.2)
    reg_t['vel'][0, 1, 5, 5] = 9.0   # not a GT cell: ignored
    hm = torch.zeros(1, 1, 8, 8)
    loss, _ = loss_fn({'pred_dicts': [pred(hm, reg_t)]}, {'pred_dicts': [pred(hm, reg_s)],
                                                           'target_dicts': targets(inds=(10,))}, {})
    assert float(loss.detach()) == pytest.approx(3.0, rel=1e-6)
    loss.backward()
    assert reg_s['dim'].grad[0, 0, 1, 2] != 0 and reg_s['vel'].grad.abs().sum() == 0
    weighted = LogitKDLoss.from_config(EasyDict(HM_WEIGHT=0.0, REG_WEIGHT=1.0,
                                                REG_CODE_WEIGHTS=[1, 1, 1, 0.5, 1, 1, 0.2, 1, 1, 1]), context())
    loss, _ = weighted({'pred_dicts': [pred(hm, reg_t)]}, {'pred_dicts': [pred(hm, reg_s)],
                                                          'target_dicts': targets(inds=(10,))}, {})
    assert float(loss.detach()) == pytest.approx(2 * 0.5 + 1 * 0.2, rel=1e-6)
    with pytest.raises(KDConfigError, match=r'REG_CODE_WEIGHTS has 3 entries for 10'):
        LogitKDLoss.from_config(EasyDict(REG_CODE_WEIGHTS=[1, 1, 1]), context())
    with pytest.raises(ConfigError, match=r'REG_CODE_WEIGHTS\[1\]: expected a number'):
        LogitKDLoss.from_config(EasyDict(REG_CODE_WEIGHTS=[1, 'x']), context())


def test_logit_kd_regression_across_grids_reexpresses_centre():
    """Teacher on a 2x finer grid predicting the exact GT centre gives the student's exact target offset."""
    s_grid, t_grid = grid(2.0), grid(1.0)
    loss_fn = LogitKDLoss.from_config(EasyDict(HM_WEIGHT=0.0, REG_WEIGHT=1.0),
                                      context(t_grid, s_grid))
    gx, gy = 3.3, -2.7  # metres
    sx, sy = (gx + 8.0) / 2.0, (gy + 8.0) / 2.0  # student map coords
    s_ind = int(sy) * 8 + int(sx)
    s_off = (sx - int(sx), sy - int(sy))
    tx, ty = (gx + 8.0), (gy + 8.0)  # teacher map coords (1 m cells)
    reg_t = {k: torch.zeros(1, c, 16, 16) for k, c in HEAD_CH.items()}
    reg_t['center'][0, 0, int(ty), int(tx)] = tx - int(tx)
    reg_t['center'][0, 1, int(ty), int(tx)] = ty - int(ty)
    reg_s = {k: torch.zeros(1, c, 8, 8) for k, c in HEAD_CH.items()}
    reg_s['center'][0, 0].fill_(s_off[0])
    reg_s['center'][0, 1].fill_(s_off[1])
    tgt = targets(inds=(s_ind,), offsets=(s_off,))
    loss, _ = loss_fn({'pred_dicts': [pred(torch.zeros(1, 1, 16, 16), reg_t)]},
                      {'pred_dicts': [pred(torch.zeros(1, 1, 8, 8), reg_s)], 'target_dicts': tgt}, {})
    assert float(loss) == pytest.approx(0.0, abs=1e-5)
    reg_s['center'][0, 0].fill_(s_off[0] + 0.25)  # 0.25 student cells off along x -> L1 0.25
    loss, _ = loss_fn({'pred_dicts': [pred(torch.zeros(1, 1, 16, 16), reg_t)]},
                      {'pred_dicts': [pred(torch.zeros(1, 1, 8, 8), reg_s)], 'target_dicts': tgt}, {})
    assert float(loss) == pytest.approx(0.25, abs=1e-5)


def test_logit_kd_grid_error_mode():
    with pytest.raises(KDConfigError, match='grids differ'):
        LogitKDLoss.from_config(EasyDict(), context(grid(1.0), grid(2.0), mode='error'))


# ------------------------------------------------------------------------------------------------ FitNet
def test_fitnet_golden_and_resample():
    ctx = context(t_ch=2, s_ch=2)
    loss_fn = FitNetLoss.from_config(EasyDict(), ctx)
    with torch.no_grad():
        loss_fn.adapter.weight.copy_(torch.eye(2)[:, :, None, None])
        loss_fn.adapter.bias.zero_()
    fs = torch.randn(2, 2, 8, 8)
    ft = fs + 0.5
    loss, tb = loss_fn({'spatial_features_2d': ft}, {'spatial_features_2d': fs}, {})
    assert float(loss) == pytest.approx(0.25, rel=1e-5)
    # coarser student (2 m cells) holding its column index j, resampled onto the 1 m teacher grid: teacher column
    # jt's centre x = -8 + jt + 0.5 is student column coordinate (x + 8) / 2 - 0.5 = jt / 2 - 0.25 (bilinear, the
    # border value beyond the outermost student cell centres)
    ctx2 = context(grid(1.0), grid(2.0), t_ch=2, s_ch=2)
    loss_fn2 = FitNetLoss.from_config(EasyDict(), ctx2)
    loss_fn2.load_state_dict(loss_fn.state_dict())
    ramp = torch.arange(8.0).expand(1, 2, 8, 8)
    expected = torch.tensor([min(max(jt / 2 - 0.25, 0.0), 7.0) for jt in range(16)]).expand(1, 2, 16, 16)
    loss, _ = loss_fn2({'spatial_features_2d': expected}, {'spatial_features_2d': ramp}, {})
    assert float(loss.detach()) == pytest.approx(0.0, abs=1e-12)
    unclamped = torch.tensor([jt / 2 - 0.25 for jt in range(16)]).expand(1, 2, 16, 16)
    loss, _ = loss_fn2({'spatial_features_2d': unclamped}, {'spatial_features_2d': ramp}, {})
    assert float(loss.detach()) == pytest.approx(2 * 0.25 ** 2 / 16, rel=1e-6)  # columns 0 and 15 differ by 0.25


def test_fitnet_config_errors():
    with pytest.raises(KDConfigError, match='ADAPTER.TEACHER_CHANNELS'):
        FitNetLoss.from_config(EasyDict(ADAPTER={'TEACHER_CHANNELS': 3}), context())
    with pytest.raises(KDConfigError, match="'spatial_features_3d'"):
        FitNetLoss.from_config(EasyDict(FEATURE_KEY='spatial_features_3d'), context())
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['LR'\]"):
        FitNetLoss.from_config(EasyDict(LR=1), context())
    with pytest.raises(ConfigError, match='FEATURE_KEY: expected str'):
        FitNetLoss.from_config(EasyDict(FEATURE_KEY=3), context())


# ------------------------------------------------------------------------------------------------ RoI mimic
def test_roi_mimic_zero_boxes_and_identity():
    loss_fn = RoIMimicLoss.from_config(EasyDict(GRID_SIZE=3), context(t_ch=2, s_ch=2))
    fs = torch.randn(2, 2, 8, 8, requires_grad=True)
    empty = {'gt_boxes': torch.zeros(2, 3, 10)}
    loss, tb = loss_fn({'spatial_features_2d': fs.detach() + 1}, {'spatial_features_2d': fs}, empty)
    assert float(loss) == 0.0 and tb['roi_mimic_boxes'] == 0.0
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in loss_fn.parameters())
    with torch.no_grad():
        loss_fn.adapter.weight.copy_(torch.eye(2)[:, :, None, None])
        loss_fn.adapter.bias.zero_()
    gt = torch.zeros(2, 3, 10)
    gt[0, 0] = torch.tensor([1.0, -2.0, 0.0, 4.0, 2.0, 1.5, 0.7, 0, 0, 1])
    loss, tb = loss_fn({'spatial_features_2d': fs.detach()}, {'spatial_features_2d': fs}, {'gt_boxes': gt})
    assert float(loss) == pytest.approx(0.0, abs=1e-10) and tb['roi_mimic_boxes'] == 0.5
    loss, _ = loss_fn({'spatial_features_2d': fs.detach() + 1.0}, {'spatial_features_2d': fs}, {'gt_boxes': gt})
    assert float(loss) == pytest.approx(1.0, rel=1e-5)  # box well inside the map: every cell differs by 1


# ------------------------------------------------------------------------------------------------ label KD
def test_label_kd_joins_confident_teacher_boxes():
    loss_fn = LabelKDLoss.from_config(EasyDict(), context())
    gt = torch.zeros(2, 2, 10)
    gt[0, 0] = torch.tensor([0, 0, 0, 4, 2, 1.5, 0, 0, 0, 1])
    gt_before = gt.clone()
    tboxes = [{'pred_boxes': torch.tensor([[5.0, 5, 0, 4, 2, 1.5, 0.1, 1, 0], [9.0, 9, 0, 1, 1, 1, 0, 0, 0]]),
               'pred_scores': torch.tensor([0.9, 0.5]), 'pred_labels': torch.tensor([2, 3])},
              {'pred_boxes': torch.tensor([[1.0, 1, 0, 1, 1, 1, 0, 0, 0]] * 3),
               'pred_scores': torch.tensor([0.61, 0.7, 0.95]), 'pred_labels': torch.tensor([9, 9, 9])}]
    batch = {'gt_boxes': gt}
    out = loss_fn.prepare_student_batch({'boxes': tboxes}, batch)
    assert torch.equal(batch['gt_boxes'], gt_before) and out is not batch
    new = out['gt_boxes']
    assert new.shape == (2, 3, 10)
    assert torch.equal(new[0, 0], gt[0, 0]) and new[0, 1, -1] == 2 and new[0, 1, 0] == 5.0
    assert (new[0, 2] == 0).all()
    assert (new[1, :, -1] == 9).all()
    loss, tb = loss_fn({}, {}, out)
    assert float(loss) == 0.0 and tb['label_kd_boxes'] == 2.0
    dedup = LabelKDLoss.from_config(EasyDict(DEDUP_IOU=0.5), context())
    tb0 = [{'pred_boxes': torch.tensor([[0.1, 0, 0, 4, 2, 1.5, 0, 0, 0]]), 'pred_scores': torch.tensor([0.9]),
            'pred_labels': torch.tensor([1])}, tboxes[1]]
    out = dedup.prepare_student_batch({'boxes': tb0}, batch)
    assert (out['gt_boxes'][0, 1:] == 0).all()  # the teacher's copy of the GT box is dropped
    with pytest.raises(ConfigError, match='SCORE_THRESH'):
        LabelKDLoss.from_config(EasyDict(SCORE_THRESH=6), context())
