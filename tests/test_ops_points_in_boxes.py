"""points_in_boxes_mask / points_in_boxes_index invariants."""
import math

import numpy as np
import pytest
import torch

from rdd.ops import points_in_boxes as pib
from rdd.ops.points_in_boxes import points_in_boxes_index, points_in_boxes_mask


def _boxes():
    return np.array([
        [0.0, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0],
        [10.0, -3.0, 1.0, 1.0, 3.0, 2.0, 0.7],
        [-20.0, 15.0, -1.0, 0.6, 0.6, 1.8, -2.5],
        [40.0, 40.0, 0.5, 12.0, 2.9, 3.5, math.pi / 2],
    ])


def _corners3d(b, scale):
    """(8, 3) corners of box b with local offsets scaled by ``scale`` (independent rotation code)."""
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=float)
    local = signs * b[3:6] / 2 * scale
    c, s = math.cos(b[6]), math.sin(b[6])
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    return local @ rot.T + b[:3]


def _face_points(b, offset):
    """Points at the centres of the 6 faces, moved ``offset`` metres outwards along the face normal."""
    pts = []
    for axis in range(3):
        for sign in (-1, 1):
            local = np.zeros(3)
            local[axis] = sign * (b[3 + axis] / 2 + offset)
            c, s = math.cos(b[6]), math.sin(b[6])
            pts.append([b[0] + c * local[0] - s * local[1], b[1] + s * local[0] + c * local[1], b[2] + local[2]])
    return np.array(pts)


def test_shrunk_corners_inside_and_own_box_only():
    boxes = _boxes()
    pts = np.concatenate([_corners3d(b, 0.99) for b in boxes])
    mask = points_in_boxes_mask(pts, boxes)
    assert isinstance(mask, np.ndarray) and mask.dtype == bool and mask.shape == (32, 4)
    assert np.array_equal(mask, np.repeat(np.eye(4, dtype=bool), 8, axis=0))
    assert np.array_equal(points_in_boxes_index(pts, boxes), np.repeat(np.arange(4), 8))


@pytest.mark.parametrize('margin,offset', [(pib.OPENPCDET_CPU_MARGIN, 0.015), (0.0, 0.01)])
def test_points_outside_faces_are_out(margin, offset):
    boxes = _boxes()
    for i, b in enumerate(boxes):
        out = points_in_boxes_mask(_face_points(b, offset), boxes, margin=margin)
        assert not out.any(), (i, out)
        inside = points_in_boxes_mask(_face_points(b, -0.01), boxes, margin=margin)
        assert inside[:, i].all(), (i, inside)


def test_openpcdet_boundary_semantics():
    # z inclusive; x/y within dx/2 + 1 cm (strict) with the default margin; strictly inside with margin 0
    box = np.array([[0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 0.0]])
    pts = np.array([[0.0, 0.0, 1.0],      # on the top face: inside (inclusive z)
                    [0.0, 0.0, 1.001],    # above: out
                    [1.005, 0.0, 0.0],    # 5 mm outside in x: inside with the 1 cm margin only
                    [0.0, -1.005, 0.0],
                    [1.0, 0.0, 0.0]])     # on the x face: inside with margin, out with margin 0
    assert points_in_boxes_mask(pts, box)[:, 0].tolist() == [True, False, True, True, True]
    assert points_in_boxes_mask(pts, box, margin=0.0)[:, 0].tolist() == [True, False, False, False, False]


def test_rotation_consistency():
    rng = np.random.default_rng(0)
    pts = rng.uniform(-4, 4, (5000, 3))
    box = np.array([[0.3, -0.2, 0.1, 5.0, 1.2, 2.0, 0.0]])
    base = points_in_boxes_mask(pts, box)[:, 0]
    assert 80 < base.sum() < 1000
    for yaw in (0.4, -1.3, math.pi, 7.0):
        # rotate the box and the points together about the box centre: same membership
        c, s = math.cos(yaw), math.sin(yaw)
        rel = pts[:, :2] - box[0, :2]
        rot = np.stack([c * rel[:, 0] - s * rel[:, 1], s * rel[:, 0] + c * rel[:, 1]], 1) + box[0, :2]
        pts_r = np.concatenate([rot, pts[:, 2:]], 1)
        box_r = box.copy()
        box_r[0, 6] = yaw
        got = points_in_boxes_mask(pts_r, box_r)[:, 0]
        # points within 1e-9 of a face may flip by rounding; there are none in this random set
        assert np.array_equal(got, base), yaw
    # yaw and yaw + pi describe the same box
    box_pi = box.copy()
    box_pi[0, 6] = math.pi
    assert np.array_equal(points_in_boxes_mask(pts, box_pi)[:, 0], base)


def test_torch_in_torch_out_chunking_and_first_index(monkeypatch):
    rng = np.random.default_rng(1)
    pts = torch.from_numpy(rng.uniform(-6, 6, (3000, 5)).astype(np.float32))
    boxes = torch.tensor([[0, 0, 0, 6, 6, 6, 0.3], [1, 1, 0, 4, 4, 4, -0.2], [-3, 2, 0, 3, 2, 5, 1.0]])
    mask = points_in_boxes_mask(pts, boxes)
    idx = points_in_boxes_index(pts, boxes)
    assert mask.dtype == torch.bool and mask.shape == (3000, 3)
    assert idx.dtype == torch.int64 and idx.shape == (3000,)
    # overlapping boxes: the first containing box wins
    both = mask[:, 0] & mask[:, 1]
    assert both.any() and (idx[both] == 0).all()
    only1 = mask[:, 1] & ~mask[:, 0]
    assert only1.any() and (idx[only1] == 1).all()
    assert (idx[~mask.any(1)] == -1).all() and (~mask.any(1)).any()
    # chunked computation gives the same answer
    monkeypatch.setattr(pib, '_CHUNK_ENTRIES', 7)
    assert torch.equal(points_in_boxes_mask(pts, boxes), mask)
    assert torch.equal(points_in_boxes_index(pts, boxes), idx)


def test_empty_inputs_and_errors():
    assert points_in_boxes_mask(np.zeros((0, 3)), _boxes()).shape == (0, 4)
    assert points_in_boxes_mask(np.zeros((5, 4)), np.zeros((0, 7))).shape == (5, 0)
    assert points_in_boxes_index(np.zeros((5, 4)), np.zeros((0, 7))).tolist() == [-1] * 5
    assert points_in_boxes_index(torch.zeros(0, 3), torch.zeros(2, 9)).shape == (0,)
    with pytest.raises(ValueError, match='boxes'):
        points_in_boxes_mask(np.zeros((5, 3)), np.zeros((2, 6)))
    with pytest.raises(TypeError, match='points'):
        points_in_boxes_mask([[0, 0, 0]], np.zeros((2, 7)))
