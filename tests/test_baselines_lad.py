"""LADLoss: the teacher picks the responsible cell of each GT box; the head's target path honours it."""
import math

import pytest
import torch
from easydict import EasyDict

from kd_context_helpers import HEAD_CH, context, grid
from rdd.distill.baselines import LADLoss
from rdd.errors import ConfigError
from rdd.models.dense_heads.targets import assign_targets

GRID = grid(2.0)  # 2 m cells over +-8 m: 8 x 8 maps, cell (row i, col j) centred at (-7 + 2j, -7 + 2i)
CAR = [-1.0, 1.0, 0.0, 4.0, 2.0, 1.5, 0.0, 0.0, 0.0, 1.0]  # centre cell (row 4, col 3), corner (-2, 0)


def teacher_maps():
    """Background logit -10 and zero codes (1 m cubes at the cell corners), except two cells near the car:
    (4, 4) p 0.9, its box exactly the car (offset (-0.5, 0.5) from corner (0, 0)): quality 0.9 * 1;
    (4, 3) p 0.5, its box the car shifted 1 m to -x (offset (0, 0.5)): IoU 6 / 10, quality 0.3."""
    pred = {k: torch.zeros(1, c, 8, 8) for k, c in HEAD_CH.items()}
    pred['hm'] = torch.full((1, 1, 8, 8), -10.0)
    for (i, j), prob, off in (((4, 4), 0.9, (-0.5, 0.5)), ((4, 3), 0.5, (0.0, 0.5))):
        pred['hm'][0, 0, i, j] = math.log(prob / (1 - prob))
        pred['center'][0, :, i, j] = torch.tensor(off)
        pred['dim'][0, :, i, j] = torch.tensor([math.log(4.0), math.log(2.0), math.log(1.5)])
        pred['rot'][0, :, i, j] = torch.tensor([1.0, 0.0])
    return pred


def gt_batch(*rows, pad=2):
    gt = torch.zeros(1, len(rows) + pad, 10)
    for m, row in enumerate(rows):
        gt[0, m] = torch.tensor(row)
    return gt


def test_teacher_picks_the_cell_and_the_targets_follow():
    lad = LADLoss.from_config(EasyDict(), context())
    gt = gt_batch(CAR)
    before = gt.clone()
    out = lad.prepare_student_batch({'pred_dicts': [teacher_maps()]}, {'gt_boxes': gt})
    assert torch.equal(gt, before) and out['gt_boxes'] is gt
    assert out['gt_assigned_cells'].tolist() == [[4 * 8 + 4, -1, -1]]  # (4, 4) beats the centre cell (4, 3)
    loss, tb = lad({}, {}, out)
    assert float(loss) == 0.0 and tb['lad_moved'] == 1.0 and tb['lad_quality'] == pytest.approx(0.9, rel=1e-4)
    t = assign_targets(gt, ['car'], [['car']], (8, 8), GRID, assigned_cells=out['gt_assigned_cells'])
    assert t['inds'][0][0, 0] == 36 and t['masks'][0][0].tolist()[:2] == [1, 0]
    assert t['target_boxes'][0][0, 0, :2].tolist() == [-0.5, 0.5]  # centre (3.5, 4.5) cells minus corner (4, 4)
    heat = t['heatmaps'][0][0, 0]
    assert heat[4, 4] == 1.0 and heat[4, 3] < 1.0 and heat.argmax() == 36


def test_min_quality_and_search_radius_keep_centerpoints_cell():
    maps = {'pred_dicts': [teacher_maps()]}
    strict = LADLoss.from_config(EasyDict(MIN_QUALITY=0.95), context())
    assert strict.prepare_student_batch(maps, {'gt_boxes': gt_batch(CAR)})['gt_assigned_cells'].tolist() == \
        [[-1, -1, -1]]
    centre_only = LADLoss.from_config(EasyDict(SEARCH_RADIUS=0), context())
    out = centre_only.prepare_student_batch(maps, {'gt_boxes': gt_batch(CAR)})
    assert out['gt_assigned_cells'].tolist() == [[35, -1, -1]]  # the centre cell itself, quality 0.3 > 0
    assert centre_only({}, {}, out)[1]['lad_moved'] == 0.0


def test_no_gt_no_teacher_signal():
    lad = LADLoss.from_config(EasyDict(), context())
    out = lad.prepare_student_batch({'pred_dicts': [teacher_maps()]}, {'gt_boxes': torch.zeros(2, 3, 10)})
    assert out['gt_assigned_cells'].tolist() == [[-1] * 3] * 2
    loss, tb = lad({}, {}, out)
    assert float(loss) == 0.0 and tb == {'lad_moved': 0.0, 'lad_quality': 0.0}  # LAD has no parameters
    blind = teacher_maps()
    blind['center'].fill_(100.0)  # every teacher box 200 m away: quality 0 everywhere -> CenterPoint's cell
    out = lad.prepare_student_batch({'pred_dicts': [blind]}, {'gt_boxes': gt_batch(CAR)})
    assert out['gt_assigned_cells'].tolist() == [[-1, -1, -1]]


def test_head_target_path_hook():
    gt = gt_batch(CAR, [5.0, -5.0, 0.0, 2.0, 2.0, 1.5, 0.0, 0.0, 0.0, 1.0], pad=0)
    args = (['car'], [['car']], (8, 8), GRID)
    plain = assign_targets(gt, *args)
    same = assign_targets(gt, *args, assigned_cells=torch.tensor([[-1]]))  # M' = 1 < M = 2: the rest -1
    for key in plain:
        assert all(torch.equal(a, b) for a, b in zip(plain[key], same[key]))
    with pytest.raises(ValueError, match=r'gt_assigned_cells must be -1 or a cell index in \[0, 64\)'):
        assign_targets(gt, *args, assigned_cells=torch.tensor([[64, -1]]))
    with pytest.raises(ValueError, match=r"gt_assigned_cells \(1, 3\) must be \(B, M'\)"):
        assign_targets(gt, *args, assigned_cells=torch.tensor([[1, 2, 3]]))


def test_distiller_student_targets_use_the_teachers_cells(tiny_teacher_ckpt):
    from test_distill_helpers import build_distiller, kd_cfg, make_batch
    cfg = kd_cfg(tiny_teacher_ckpt, losses=[{'NAME': 'LADLoss'}])
    d = build_distiller(cfg)
    d.train()
    batch = make_batch(cfg)
    teacher_out = d.forward_teacher(batch)
    lad = d.kd_losses['LADLoss']
    cells, _ = lad.assign(teacher_out['pred_dicts'], batch['gt_boxes'])
    ret, tb, _ = d(batch)
    targets = d.student.dense_head.forward_ret_dict['target_dicts']
    expected = d.student.dense_head.assign_targets(batch['gt_boxes'], lad.student_grid.map_size, cells)
    assert all(torch.equal(a, b) for a, b in zip(targets['inds'], expected['inds']))
    plain = d.student.dense_head.assign_targets(batch['gt_boxes'], lad.student_grid.map_size)
    assert (cells >= 0).any() and not all(torch.equal(a, b) for a, b in zip(plain['inds'], expected['inds']))
    assert 'kd/LADLoss/lad_moved' in tb and torch.isfinite(ret['loss'])


def test_bad_config_names_the_key():
    with pytest.raises(ConfigError, match='LADLoss: SEARCH_RADIUS must be >= 0'):
        LADLoss.from_config(EasyDict(SEARCH_RADIUS=-1), context())
    with pytest.raises(ConfigError, match='LADLoss.SEARCH_RADIUS: expected an integer'):
        LADLoss.from_config(EasyDict(SEARCH_RADIUS=1.5), context())
    with pytest.raises(ConfigError, match=r"LADLoss: unknown key\(s\) \['SCORE_THRESH'\]"):
        LADLoss.from_config(EasyDict(SCORE_THRESH=0.6), context())
    with pytest.raises(ConfigError, match='MIN_QUALITY must be in'):
        LADLoss.from_config(EasyDict(MIN_QUALITY=1.0), context())
