"""GISM, GID-F and GID-L on a hand-made scene: selected instances, golden values, no instance, bad configs."""
import math

import pytest
import torch
from easydict import EasyDict

from kd_context_helpers import HEAD_CH, context, grid, head_layout
from rdd.distill.baselines import GIDFeatureLoss, GIDLogitLoss
from rdd.distill.baselines.gism import GISMConfig, select_general_instances
from rdd.errors import ConfigError, KDConfigError

GRID = grid(2.0)  # 2 m cells over +-8 m: 8 x 8 maps, cell (row i, col j) centred at (-7 + 2j, -7 + 2i)
BG = -10.0  # background logit of both models (equal: GI score exactly 0 there)
CAR_CODES = [0.5, 0.5, 0.0, math.log(4.0), math.log(2.0), math.log(1.5), 1.0, 0.0, 0.0, 0.0]  # 4 x 2 x 1.5 m, yaw 0
SMALL_CODES = [0.5, 0.5, 0.0, math.log(2.0), math.log(2.0), math.log(2.0), 1.0, 0.0, 0.0, 0.0]


def maps(peaks):
    """One head group ('car') of raw maps, 8 x 8: ``peaks`` {(row, col): (probability, codes)}."""
    pred = {k: torch.zeros(1, c, 8, 8) for k, c in HEAD_CH.items()}
    pred['hm'] = torch.full((1, 1, 8, 8), BG)
    for (i, j), (prob, codes) in peaks.items():
        pred['hm'][0, 0, i, j] = math.log(prob / (1 - prob))
        start = 0
        for name in ('center', 'center_z', 'dim', 'rot', 'vel'):
            pred[name][0, :, i, j] = torch.tensor(codes[start:start + HEAD_CH[name]])
            start += HEAD_CH[name]
    return pred


# teacher: a confident car at (4, 3) -> box (-1, 1), a duplicate of it at (4, 4) (offset -0.5: the same box, to
# be suppressed by NMS), a weaker car at (1, 6) -> box (5, -5); student: a car the teacher misses at (6, 1) -> (-5, 5)
TEACHER = maps({(4, 3): (0.9, CAR_CODES), (4, 4): (0.8, [-0.5] + CAR_CODES[1:]), (1, 6): (0.5, CAR_CODES)})
STUDENT = maps({(6, 1): (0.7, SMALL_CODES)})
P_BG = 1 / (1 + math.exp(-BG))


def test_gism_selects_disagreements_with_nms():
    gis = select_general_instances([TEACHER], [STUDENT], GRID, GRID, head_layout(), GISMConfig())
    assert len(gis) == 3  # (4, 4) is suppressed by (4, 3): the same box, IoU 1 > 0.3
    assert torch.allclose(gis.scores, torch.tensor([0.9 - P_BG, 0.7 - P_BG, 0.5 - P_BG]), atol=1e-6)
    assert torch.allclose(gis.boxes, torch.tensor([[-1.0, 1.0, 0.0, 4.0, 2.0, 1.5, 0.0],
                                                   [-5.0, 5.0, 0.0, 2.0, 2.0, 2.0, 0.0],
                                                   [5.0, -5.0, 0.0, 4.0, 2.0, 1.5, 0.0]]), atol=1e-5)
    assert gis.from_teacher.tolist() == [True, False, True]
    assert (gis.rows.tolist(), gis.cols.tolist()) == ([4, 6, 1], [3, 1, 6])
    assert gis.batch_idx.tolist() == [0, 0, 0] and gis.group.tolist() == [0, 0, 0]
    top1 = select_general_instances([TEACHER], [STUDENT], GRID, GRID, head_layout(), GISMConfig(top_k=1))
    assert top1.rows.tolist() == [4]
    keep_dup = select_general_instances([TEACHER], [STUDENT], GRID, GRID, head_layout(), GISMConfig(nms_thresh=1.0))
    assert len(keep_dup) == 4  # IoU 1 is not > 1.0


def gid_f(t_ch=2, s_ch=1):
    loss_fn = GIDFeatureLoss.from_config(EasyDict(GRID_SIZE=1), context(t_ch=t_ch, s_ch=s_ch))
    with torch.no_grad():
        loss_fn.adapter.weight.copy_(torch.tensor([[1.0], [2.0]])[:, :, None, None])  # A(s) = (s, 2 s)
        loss_fn.adapter.bias.zero_()
    return loss_fn


def test_gid_feature_golden_value():
    """GRID_SIZE 1 pools each box at its centre, here a cell centre: the instances read cells (4,3), (6,1), (1,6)."""
    ft, fs = torch.zeros(1, 2, 8, 8), torch.zeros(1, 1, 8, 8, requires_grad=False)
    for (i, j), t, s in (((4, 3), (0.0, 0.0), 0.0), ((6, 1), (3.0, 4.0), 1.0), ((1, 6), (6.0, 8.0), 3.0)):
        ft[0, :, i, j] = torch.tensor(t)
        fs[0, 0, i, j] = s
    fs.requires_grad_(True)
    loss, tb = gid_f()({'spatial_features_2d': ft, 'pred_dicts': [TEACHER]},
                       {'spatial_features_2d': fs, 'pred_dicts': [STUDENT]}, {})
    feat = (0 + (2 ** 2 + 2 ** 2) + (3 ** 2 + 2 ** 2)) / 3  # ||(s, 2s) - t||^2 per instance, / N G^2
    # distances: student |s_i - s_j| = 1, 3, 2 (mean 2); teacher 5, 10, 5 (mean 20/3); normalised pairs
    # (0.5 vs 0.75), (1.5 vs 1.5), (1.0 vs 0.75): smooth L1 (beta 1) = 0.5 d^2 -> (0.03125 + 0 + 0.03125) / 3
    rel = (0.5 * 0.25 ** 2 * 2) / 3
    assert tb['gid_feat'] == pytest.approx(feat, rel=1e-6) and tb['gid_rel'] == pytest.approx(rel, rel=1e-5)
    assert float(loss.detach()) == pytest.approx(0.005 * feat + 40.0 * rel, rel=1e-5)
    assert tb['gid_instances'] == 3.0
    loss.backward()
    assert fs.grad[0, 0, 6, 1] != 0 and fs.grad[0, 0, 0, 0] == 0


def test_gid_feature_no_instance_is_zero_with_parameters_in_the_graph():
    loss_fn = gid_f()
    fs = torch.randn(1, 1, 8, 8, requires_grad=True)
    loss, tb = loss_fn({'spatial_features_2d': torch.randn(1, 2, 8, 8), 'pred_dicts': [TEACHER]},
                       {'spatial_features_2d': fs, 'pred_dicts': [TEACHER]}, {})  # the same maps: no disagreement
    assert float(loss) == 0.0 and tb['gid_instances'] == 0.0
    loss.backward()
    assert all(p.grad is not None and float(p.grad.abs().sum()) == 0 for p in loss_fn.parameters())


def bce(logit, p):
    return math.log1p(math.exp(logit)) - p * logit


def test_gid_logit_golden_value():
    """Responses at the cells holding the instances' centres, (4,3), (6,1), (1,6); default weights 0.1 / 0.1."""
    student = {k: v.clone().requires_grad_(True) for k, v in STUDENT.items()}
    loss, tb = GIDLogitLoss.from_config(EasyDict(), context())({'pred_dicts': [TEACHER]},
                                                               {'pred_dicts': [student]}, {})
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    hm = (bce(BG, 0.9) + bce(logit(0.7), P_BG) + bce(BG, 0.5)) / 3
    car_l1 = 0.5 + 0.5 + math.log(4.0) + math.log(2.0) + math.log(1.5) + 1.0  # teacher car codes vs student 0
    small_l1 = 0.5 + 0.5 + 3 * math.log(2.0) + 1.0  # student's own box codes vs teacher 0 at (6, 1)
    reg = (2 * car_l1 + small_l1) / 3
    assert tb['gid_hm'] == pytest.approx(hm, rel=1e-5) and tb['gid_reg'] == pytest.approx(reg, rel=1e-5)
    assert float(loss.detach()) == pytest.approx(0.1 * hm + 0.1 * reg, rel=1e-5)
    loss.backward()
    assert student['dim'].grad[0, 0, 4, 3] != 0 and student['dim'].grad[0, 0, 4, 4] == 0


def test_gid_logit_across_grids_reads_the_teacher_at_its_own_cells():
    """A teacher on 1 m cells with the same boxes gives the same regression codes at the student cells."""
    fine = {k: torch.zeros(1, c, 16, 16) for k, c in HEAD_CH.items()}
    fine['hm'] = torch.full((1, 1, 16, 16), BG)
    fine['hm'][0, 0, 9, 7] = math.log(0.9 / 0.1)  # 1 m cell holding (-1, 1) -> (row 9, col 7), centre (-0.5, 1.5)
    fine['center'][0, :, 9, 7] = torch.tensor([0.0, 0.0])  # box centre (-1, 1) = that cell's corner
    for name, value in (('dim', [math.log(4.0), math.log(2.0), math.log(1.5)]), ('rot', [1.0, 0.0])):
        fine[name][0, :, 9, 7] = torch.tensor(value)
    student = maps({(4, 3): (0.9 - 1e-3, CAR_CODES)})  # the same car, almost the same score
    loss_fn = GIDLogitLoss.from_config(EasyDict(HM_WEIGHT=0.0, REG_WEIGHT=1.0), context(grid(1.0), GRID))
    loss, tb = loss_fn({'pred_dicts': [fine]}, {'pred_dicts': [student]}, {})
    # GI at student cell (4, 3) (box (-1, 1)); the teacher cell holding its centre (-1, 1) is (9, 7), whose box
    # centre is (-1, 1) = student cell (4, 3) offsets (0.5, 0.5): the student's own codes, L1 = 0
    assert tb['gid_instances'] >= 1 and float(loss) == pytest.approx(0.0, abs=1e-5)


def test_gid_logit_no_instance_is_zero_in_the_graph():
    student = {k: v.clone().requires_grad_(True) for k, v in TEACHER.items()}
    loss, tb = GIDLogitLoss.from_config(EasyDict(), context())({'pred_dicts': [TEACHER]},
                                                               {'pred_dicts': [student]}, {})
    assert float(loss) == 0.0 and tb['gid_instances'] == 0.0
    loss.backward()
    assert all(v.grad is not None for v in student.values())


def test_bad_configs_name_the_key():
    with pytest.raises(ConfigError, match=r'GIDFeatureLoss.GISM: TOP_K must be >= 1'):
        GIDFeatureLoss.from_config(EasyDict(GISM={'TOP_K': 0}), context())
    with pytest.raises(ConfigError, match=r"GIDFeatureLoss.GISM: unknown key\(s\) \['NMS'\]"):
        GIDFeatureLoss.from_config(EasyDict(GISM={'NMS': 0.3}), context())
    with pytest.raises(ConfigError, match='GIDFeatureLoss: GRID_SIZE must be >= 1'):
        GIDFeatureLoss.from_config(EasyDict(GRID_SIZE=0), context())
    with pytest.raises(ConfigError, match=r'GIDLogitLoss.GISM.NMS_THRESH: expected a number'):
        GIDLogitLoss.from_config(EasyDict(GISM={'NMS_THRESH': 'x'}), context())
    with pytest.raises(KDConfigError, match='GIDLogitLoss.REG_CODE_WEIGHTS has 2 entries for 10'):
        GIDLogitLoss.from_config(EasyDict(REG_CODE_WEIGHTS=[1, 1]), context())
    with pytest.raises(ConfigError, match='GIDLogitLoss: HM_WEIGHT and REG_WEIGHT must be >= 0'):
        GIDLogitLoss.from_config(EasyDict(HM_WEIGHT=-1), context())
    other = head_layout(class_names=('car', 'truck'), groups=(('car', 'truck'),))
    from rdd.distill.context import KDContext, ModelFacts
    ctx = context()
    mixed = KDContext(teacher=ModelFacts(ctx.teacher.grid, ctx.teacher.feature_channels, other), student=ctx.student)
    with pytest.raises(KDConfigError, match='GIDLogitLoss: teacher and student heads differ'):
        GIDLogitLoss.from_config(EasyDict(), mixed)
    from rdd.distill.context import HeadLayout
    no_z = HeadLayout(('car',), (('car',),), ('center', 'dim', 'rot'), {'center': 2, 'dim': 3, 'rot': 2},
                      (1.0,) * 7, 0.1, 2)
    facts = ModelFacts(ctx.teacher.grid, ctx.teacher.feature_channels, no_z)
    with pytest.raises(KDConfigError, match=r"GIDFeatureLoss: decoding boxes needs the head maps .*'center_z': 1"):
        GIDFeatureLoss.from_config(EasyDict(), KDContext(teacher=facts, student=facts))
