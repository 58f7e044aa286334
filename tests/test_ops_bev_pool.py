"""Rotated-RoI grid pooling: golden values on hand-made BEV maps."""
import math

import pytest
import torch
import torch.nn.functional as F

from rdd.geometry import BEVGrid
from rdd.ops.bev_pool import resample_to_grid, roi_grid_points, roi_grid_pool

GEOM = BEVGrid((-6.0, -6.0, -5.0, 6.0, 6.0, 3.0), (0.25, 0.25, 0.2), 2)  # 0.5 m cells, 24 x 24


def _cell_centre(i, j):
    return -6.0 + (j + 0.5) * 0.5, -6.0 + (i + 0.5) * 0.5  # 0.5 m cells from -6 m


def _box(x, y, dx, dy, yaw):
    return torch.tensor([[x, y, 0.0, dx, dy, 1.5, yaw]], dtype=torch.float64)


def test_grid_facts():
    assert (GEOM.x_min, GEOM.y_min, GEOM.cell_size, GEOM.map_size) == (-6.0, -6.0, (0.5, 0.5), (24, 24))
    GEOM.check_shape(24, 24)
    with pytest.raises(ValueError, match='H=24, W=24'):
        GEOM.check_shape(12, 12)
    assert GEOM.metric_to_cell(-6.0, 0.25) == (0.0, 12.5)  # edge-based: 0 at the left edge of column 0
    assert GEOM.cell_to_metric(0.5, 12.5) == (-5.75, 0.25)


def test_constant_map_pools_constant():
    fmap = torch.full((2, 3, 24, 24), 2.5, dtype=torch.float64)
    boxes = torch.cat([_box(0.3, -1.2, 4.0, 1.8, 0.7), _box(-2.0, 2.0, 2.0, 2.0, -2.5), _box(1.0, 1.0, 3.0, 1.0, 0.0)])
    out = roi_grid_pool(fmap, boxes, torch.tensor([0, 1, 1]), GEOM, 7)
    assert out.shape == (3, 49, 3)
    assert torch.allclose(out, torch.full_like(out, 2.5))


def test_axis_aligned_box_pools_map_patch():
    fmap = torch.randn(1, 4, 24, 24, dtype=torch.float64)
    x, y = _cell_centre(10, 5)
    out = roi_grid_pool(fmap, _box(x, y, 1.5, 1.5, 0.0), torch.tensor([0]), GEOM, 3)  # 3 x 3 cells, one map cell each
    expected = fmap[0, :, 9:12, 4:7].reshape(4, 9).t()  # (cells, channels)
    assert torch.allclose(out[0], expected, atol=1e-10)


def test_rotated_box_pools_expected_cells():
    fmap = torch.randn(1, 2, 24, 24, dtype=torch.float64)
    i0, j0 = 12, 8
    x, y = _cell_centre(i0, j0)
    out = roi_grid_pool(fmap, _box(x, y, 1.5, 1.5, math.pi / 2), torch.tensor([0]), GEOM, 3)[0].t().view(2, 3, 3)
    # yaw 90 deg: local x (columns j) runs along +y (map rows), local y (rows i) along -x (map columns)
    for i in range(3):
        for j in range(3):
            assert torch.allclose(out[:, i, j], fmap[0, :, i0 + (j - 1), j0 - (i - 1)], atol=1e-9)


def test_linear_map_is_reproduced_at_rotated_points():
    a, b = 0.7, -1.3
    xs = -6.0 + (torch.arange(24, dtype=torch.float64) + 0.5) * 0.5  # cell centres, metres
    ys = -6.0 + (torch.arange(24, dtype=torch.float64) + 0.5) * 0.5
    fmap = (a * xs[None, :] + b * ys[:, None])[None, None]  # value at every cell centre
    boxes = torch.cat([_box(0.4, -0.9, 3.3, 1.7, 0.37), _box(-1.1, 1.9, 2.2, 4.1, -2.2)])
    out = roi_grid_pool(fmap, boxes, torch.tensor([0, 0]), GEOM, 5)[:, :, 0]
    pts = roi_grid_points(boxes, 5)
    assert torch.allclose(out, a * pts[..., 0] + b * pts[..., 1], atol=1e-9)


def test_grid_point_order_and_extent():
    pts = roi_grid_points(_box(1.0, 2.0, 4.0, 2.0, 0.0), 2)[0]
    expected = torch.tensor([[0.0, 1.5], [2.0, 1.5], [0.0, 2.5], [2.0, 2.5]], dtype=torch.float64)
    assert torch.allclose(pts, expected)


def test_batched_unsorted_boxes_use_their_own_sample():
    fmap = torch.stack([torch.full((1, 24, 24), 1.0), torch.full((1, 24, 24), 2.0), torch.full((1, 24, 24), 3.0)])
    boxes = torch.cat([_box(0, 0, 1, 1, 0)] * 4).float()
    out = roi_grid_pool(fmap, boxes, torch.tensor([2, 0, 2, 1]), GEOM, 2)
    assert out[:, 0, 0].tolist() == [3.0, 1.0, 3.0, 2.0]


def test_outside_map_is_zero_and_empty_boxes():
    fmap = torch.ones(1, 2, 24, 24)
    out = roi_grid_pool(fmap, _box(40.0, 0.0, 2.0, 2.0, 0.3).float(), torch.tensor([0]), GEOM, 3)
    assert torch.count_nonzero(out) == 0
    empty = roi_grid_pool(fmap, torch.zeros(0, 7), torch.zeros(0, dtype=torch.long), GEOM, 3)
    assert empty.shape == (0, 9, 2)


def test_gradient_reaches_map():
    fmap = torch.randn(1, 2, 24, 24, requires_grad=True)
    roi_grid_pool(fmap, _box(0.2, 0.1, 2.0, 1.0, 0.4).float(), torch.tensor([0]), GEOM, 3).sum().backward()
    assert fmap.grad is not None and fmap.grad.abs().sum() > 0


def test_resample_matches_interpolate_on_same_range():
    src = BEVGrid((-6.0, -6.0, -5.0, 6.0, 6.0, 3.0), (0.25, 0.25, 0.2), 4)  # 12 x 12
    fmap = torch.randn(2, 3, 12, 12, dtype=torch.float64)
    out = resample_to_grid(fmap, src, GEOM)
    assert resample_to_grid(out, GEOM, GEOM) is out
    ref = F.interpolate(fmap, size=(24, 24), mode='bilinear', align_corners=False)
    assert torch.allclose(out, ref, atol=1e-9)
    shifted = BEVGrid((-5.0, -6.0, -5.0, 7.0, 6.0, 3.0), (0.25, 0.25, 0.2), 4)  # 1 m along +x
    moved = resample_to_grid(fmap, shifted, GEOM)
    assert torch.allclose(moved[..., 2:], ref[..., :-2], atol=1e-9)  # dst column j+2 sits where src had j


def _grid_sample_reference(fmap, boxes, batch_idx, geom, g):
    """Per-box ``grid_sample`` (bilinear, zero padding, align_corners=False) at the box's grid points."""
    height, width = fmap.shape[-2:]
    pts = roi_grid_points(boxes, g)
    u = 2.0 * (pts[..., 0] - (-6.0)) / (0.5 * width) - 1.0  # GEOM: origin -6 m, 0.5 m cells
    v = 2.0 * (pts[..., 1] - (-6.0)) / (0.5 * height) - 1.0
    out = [F.grid_sample(fmap[b:b + 1], torch.stack([u[n], v[n]], -1)[None, None].to(fmap.dtype), mode='bilinear',
                         padding_mode='zeros', align_corners=False)[0, :, 0].t()
           for n, b in enumerate(batch_idx.tolist())]
    return torch.stack(out)


@pytest.mark.parametrize('layout', [torch.contiguous_format, torch.channels_last])
def test_matches_grid_sample_values_and_gradient(layout):
    torch.manual_seed(3)
    boxes = torch.cat([_box(0.3, -1.2, 4.0, 1.8, 0.7), _box(5.6, 5.2, 3.0, 2.0, -2.5),  # over a map corner
                       _box(-5.9, 0.4, 2.6, 1.1, 1.9), _box(1.0, 1.0, 3.0, 1.0, 0.0), _box(0.8, 1.1, 2.0, 2.5, 0.3),
                       _box(30.0, 0.0, 2.0, 2.0, 0.1)])  # wholly outside
    batch_idx = torch.tensor([1, 0, 2, 1, 1, 0])  # unsorted, overlapping boxes share cells
    fmap = torch.randn(3, 5, 24, 24, dtype=torch.float64).contiguous(memory_format=layout).requires_grad_(True)
    ref_map = fmap.detach().clone().requires_grad_(True)
    out = roi_grid_pool(fmap, boxes, batch_idx, GEOM, 7)
    ref = _grid_sample_reference(ref_map, boxes, batch_idx, GEOM, 7)
    assert out.shape == (6, 49, 5)
    assert torch.allclose(out, ref, atol=1e-12)
    assert torch.count_nonzero(out[5]) == 0 and torch.count_nonzero(out[1]) > 0
    upstream = torch.randn_like(out)
    (out * upstream).sum().backward()
    (ref * upstream).sum().backward()
    assert torch.allclose(fmap.grad, ref_map.grad, atol=1e-12)


def test_float32_map_matches_grid_sample():
    torch.manual_seed(4)
    fmap = torch.randn(2, 16, 24, 24)
    boxes = torch.cat([_box(0.3, -1.2, 4.0, 1.8, 0.7), _box(-5.7, 5.5, 3.0, 2.0, -2.5)]).float()
    out = roi_grid_pool(fmap, boxes, torch.tensor([0, 1]), GEOM, 7)
    assert torch.allclose(out, _grid_sample_reference(fmap, boxes, torch.tensor([0, 1]), GEOM, 7), atol=1e-5)
