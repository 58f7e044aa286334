"""FGLoss (fine-grained feature imitation) on a hand-made 1-object scene: mask, golden values, empty GT, config."""
import pytest
import torch
from easydict import EasyDict

from kd_context_helpers import context, grid
from rdd.distill.baselines import FGLoss
from rdd.errors import ConfigError, KDConfigError
from rdd.models.dense_heads.targets import TargetParams, assign_targets

GRID = grid(2.0)  # 2 m cells over +-8 m: 8 x 8 maps, cell (row i, col j) centred at (-7 + 2j, -7 + 2i)


def car_targets(boxes):
    """CenterPoint's own targets (one group 'car', GAUSSIAN_OVERLAP 0.1, MIN_RADIUS 2) of (M, 10) GT rows."""
    gt = torch.zeros(1, max(len(boxes), 1), 10)
    for m, box in enumerate(boxes):
        gt[0, m] = torch.tensor(box)
    return assign_targets(gt, ['car'], [['car']], (8, 8), GRID, TargetParams(gaussian_overlap=0.1, min_radius=2))


# one car 2 m x 1 m at (-1, 1): centre cell (row 4, col 3); its gaussian radius is below MIN_RADIUS, so 2
CAR = [-1.0, 1.0, 0.0, 2.0, 1.0, 1.5, 0.0, 0.0, 0.0, 1.0]


def identity_fg(t_ch=2, s_ch=2, ctx=None, **cfg):
    """FGLoss whose 3x3 adapter is the identity on the first min(t_ch, s_ch) channels (then the ReLU)."""
    loss_fn = FGLoss.from_config(EasyDict(cfg), context(t_ch=t_ch, s_ch=s_ch, **(ctx or {})))
    conv = loss_fn.adapter[0]
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        for c in range(min(t_ch, s_ch)):
            conv.weight[c, c, 1, 1] = 1.0
    return loss_fn


def test_mask_is_the_gaussian_support_of_the_gt():
    loss_fn = identity_fg()
    mask = loss_fn.foreground_mask(car_targets([CAR])['heatmaps'])
    expected = torch.zeros(1, 8, 8)
    expected[0, 2:7, 1:6] = 1.0  # the 5 x 5 square of radius 2 around (row 4, col 3)
    assert torch.equal(mask, expected)
    strict = FGLoss.from_config(EasyDict(FG_THRESH=0.5), context())
    only_peak = torch.zeros(1, 8, 8)
    only_peak[0, 4, 3] = 1.0  # 4-neighbours: exp(-1 / (2 (5/6)^2)) = 0.487 < 0.5
    assert torch.equal(strict.foreground_mask(car_targets([CAR])['heatmaps']), only_peak)


def test_golden_value_one_car():
    loss_fn = identity_fg()
    teacher = torch.zeros(1, 2, 8, 8)
    teacher[0, 0] = 1.0 + torch.arange(8.0)[:, None]  # channel 0: 1 + the row index
    teacher[0, 1] = 2.0
    student = torch.ones(1, 2, 8, 8, requires_grad=True)  # A(1) = 1: differences row index and 1
    loss, tb = loss_fn({'spatial_features_2d': teacher}, {'spatial_features_2d': student,
                                                           'target_dicts': car_targets([CAR])}, {})
    # rows 2..6 x 5 columns: sum of row^2 = 5 * (4 + 9 + 16 + 25 + 36) = 450, plus 25 cells * 1^2; / (2 * 25)
    assert float(loss.detach()) == pytest.approx((450 + 25) / 50, rel=1e-6)
    assert tb['fg_cells'] == 25.0
    loss.backward()
    outside = student.grad.clone()
    outside[0, :, 2:7, 1:6] = 0
    assert outside.abs().sum() == 0 and student.grad[0, 0, 4, 3] != 0


def test_golden_value_across_grids_resamples_the_teacher():
    """Teacher on 1 m cells holding its column index: bilinear at the student cell centres gives 2j + 0.5."""
    loss_fn = identity_fg(t_ch=1, s_ch=1, FG_THRESH=0.5, ctx={'t_grid': grid(1.0), 's_grid': GRID})
    teacher = torch.arange(16.0).expand(1, 1, 16, 16).clone()
    loss, _ = loss_fn({'spatial_features_2d': teacher}, {'spatial_features_2d': torch.zeros(1, 1, 8, 8),
                                                          'target_dicts': car_targets([CAR])}, {})
    assert float(loss) == pytest.approx((2 * 3 + 0.5) ** 2 / 2, rel=1e-6)  # mask = the peak cell, column 3


def test_empty_gt_gives_zero_with_parameters_in_the_graph():
    loss_fn = identity_fg()
    student = torch.randn(2, 2, 8, 8, requires_grad=True)
    empty = car_targets([])
    empty['heatmaps'] = [torch.zeros(2, 1, 8, 8)]
    loss, tb = loss_fn({'spatial_features_2d': torch.randn(2, 2, 8, 8)},
                       {'spatial_features_2d': student, 'target_dicts': empty}, {})
    assert float(loss) == 0.0 and tb == {'fg_mse': 0.0, 'fg_cells': 0.0}
    loss.backward()
    assert all(p.grad is not None and float(p.grad.abs().sum()) == 0.0 for p in loss_fn.parameters())
    assert student.grad is not None


def test_bad_config_names_the_key():
    with pytest.raises(ConfigError, match='FGLoss: FG_THRESH must be in'):
        FGLoss.from_config(EasyDict(FG_THRESH=1.5), context())
    with pytest.raises(ConfigError, match='ADAPTER_KERNEL must be an odd'):
        FGLoss.from_config(EasyDict(ADAPTER_KERNEL=2), context())
    with pytest.raises(ConfigError, match=r"FGLoss: unknown key\(s\) \['FG_TRESH'\]"):
        FGLoss.from_config(EasyDict(FG_TRESH=0.1), context())
    with pytest.raises(KDConfigError, match='FGLoss.ADAPTER.STUDENT_CHANNELS is 5'):
        FGLoss.from_config(EasyDict(ADAPTER={'STUDENT_CHANNELS': 5}), context())
    with pytest.raises(KDConfigError, match='grids differ'):
        FGLoss.from_config(EasyDict(), context(grid(1.0), GRID, mode='error'))
