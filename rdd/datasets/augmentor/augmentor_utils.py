"""Geometric augmentations of a LiDAR scene, OpenPCDet conventions.

``gt_boxes (N, 7 + C)`` = ``x, y, z, dx, dy, dz, yaw[, vx, vy, ...]`` (metres, radians, m/s, LiDAR frame),
``points (M, 3 + C)`` = ``x, y, z, ...`` (metres). Each world transform is a rigid or similarity transform of the
whole scene. The functions below change the (few) boxes in place, exactly, and return the transform of the
point coordinates as a 4 x 4 homogeneous matrix (float64); the augmentor composes the matrices of consecutive
transforms and moves the (many) points once with :func:`transform_points`:

* flip along x (mirror ``y``): ``y, yaw, vy`` change sign;
* flip along y (mirror ``x``): ``x, vx`` change sign, ``yaw -> -(yaw + pi)``;
* rotation by ``a`` about z: centres and velocities rotate by ``a``, ``yaw += a``;
* scaling by ``s``: coordinates, sizes **and velocities** scale by ``s`` (the scene is a scaled copy, so
  speeds scale too; OpenPCDet's newer versions do the same);
* translation by ``t``: coordinates shift, velocities are unchanged (OpenPCDet adds the offset to the
  velocity, which is a bug: a translated scene moves at the same speed).

Random draws are made by the augmentor with numpy's global RNG, as OpenPCDet does, so DataLoader worker seeding
controls them.
"""
import numpy as np
import torch

from rdd.ops.points_in_boxes import points_in_boxes_mask as _mask
from rdd.ops.rotated_iou import boxes_bev_iou


def rotate_points_z(points, angle):
    """Rotate ``points (M, 2+)`` counter-clockwise by ``angle`` (radians) about the z axis; returns a copy."""
    c, s = np.cos(angle), np.sin(angle)
    out = np.array(points, copy=True)
    x, y = points[:, 0].copy(), points[:, 1].copy()
    out[:, 0] = x * c - y * s
    out[:, 1] = x * s + y * c
    return out


def limit_period(val, offset=0.5, period=2 * np.pi):
    """Map angles into ``[-offset * period, (1 - offset) * period)``."""
    return val - np.floor(val / period + offset) * period


def flip_along_x(gt_boxes):
    """Mirror the scene across the x axis (``y -> -y``): boxes in place; returns the (4, 4) point transform."""
    gt_boxes[:, 1] = -gt_boxes[:, 1]
    gt_boxes[:, 6] = -gt_boxes[:, 6]
    if gt_boxes.shape[1] > 8:
        gt_boxes[:, 8] = -gt_boxes[:, 8]
    return np.diag([1.0, -1.0, 1.0, 1.0])


def flip_along_y(gt_boxes):
    """Mirror the scene across the y axis (``x -> -x``): boxes in place; returns the (4, 4) point transform."""
    gt_boxes[:, 0] = -gt_boxes[:, 0]
    gt_boxes[:, 6] = -(gt_boxes[:, 6] + np.pi)
    if gt_boxes.shape[1] > 7:
        gt_boxes[:, 7] = -gt_boxes[:, 7]
    return np.diag([-1.0, 1.0, 1.0, 1.0])


def global_rotation(gt_boxes, angle):
    """Rotate the scene about z by ``angle`` (radians): boxes in place; returns the (4, 4) point transform."""
    gt_boxes[:, 0:2] = rotate_points_z(gt_boxes[:, 0:2], angle)
    gt_boxes[:, 6] += angle
    if gt_boxes.shape[1] > 8:
        gt_boxes[:, 7:9] = rotate_points_z(gt_boxes[:, 7:9], angle)
    c, s = np.cos(angle), np.sin(angle)
    matrix = np.eye(4)
    matrix[:2, :2] = [[c, -s], [s, c]]
    return matrix


def global_scaling(gt_boxes, scale):
    """Scale the scene about the origin by ``scale``: boxes in place; returns the (4, 4) point transform."""
    gt_boxes[:, :6] *= scale
    if gt_boxes.shape[1] > 8:
        gt_boxes[:, 7:9] *= scale
    return np.diag([scale, scale, scale, 1.0])


def global_translation(gt_boxes, offset):
    """Translate the scene by ``offset (3,)`` metres, rounded to float32 like the points (velocities unchanged):
    boxes in place; returns the (4, 4) point transform."""
    offset = np.asarray(offset, dtype=np.float32).astype(np.float64)
    gt_boxes[:, :3] += offset.astype(gt_boxes.dtype)
    matrix = np.eye(4)
    matrix[:3, 3] = offset
    return matrix


def transform_points(points, matrix):
    """In place: ``xyz <- A xyz + t`` for the (4, 4) homogeneous ``matrix = [[A, t], [0, 1]]``; returns ``points``.

    ``points (M, 3 + C)`` float32: computed in float32, one pass per non-zero entry of ``A`` (the world
    transforms here have 5 of 9), no copy of the whole array.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    if np.array_equal(matrix, np.eye(4)) or len(points) == 0:
        return points
    lin = matrix[:3, :3].astype(points.dtype)
    off = matrix[:3, 3].astype(points.dtype)
    src = {j: points[:, j].copy() for j in range(3) if lin[:, j].any()}
    term = np.empty(len(points), dtype=points.dtype)
    for i in range(3):
        out = points[:, i]
        out[:] = off[i]
        for j, col in src.items():
            if lin[i, j] != 0:
                np.multiply(col, lin[i, j], out=term)
                out += term
    return points


def boxes_to_corners_3d(boxes):
    """Corners ``(N, 8, 3)`` of boxes ``(N, 7+)`` (bottom face first, then top face)."""
    template = np.array([[1, 1, -1], [1, -1, -1], [-1, -1, -1], [-1, 1, -1],
                         [1, 1, 1], [1, -1, 1], [-1, -1, 1], [-1, 1, 1]], dtype=np.float64) / 2
    corners = boxes[:, None, 3:6] * template[None]
    c, s = np.cos(boxes[:, 6])[:, None], np.sin(boxes[:, 6])[:, None]
    x, y = corners[..., 0].copy(), corners[..., 1].copy()
    corners[..., 0] = x * c - y * s
    corners[..., 1] = x * s + y * c
    return corners + boxes[:, None, 0:3]


def enlarge_boxes(boxes, extra_width=(0.0, 0.0, 0.0)):
    """Copy of ``boxes (N, 7+)`` with ``dx, dy, dz`` grown by ``extra_width (3,)`` metres."""
    out = np.array(boxes, copy=True)
    out[:, 3:6] += np.asarray(extra_width, dtype=out.dtype)[None]
    return out


_SINGLE_THREAD_ENTRIES = 32767  # torch runs an op on one thread below 32768 elements (at::internal::GRAIN_SIZE)


def _exact_in_boxes(points, boxes):
    """``rdd.ops`` point-in-box test of ``points (K, 3+)`` and float32 ``boxes (M, 7)``, in chunks of points small
    enough that no torch op uses more than one thread (the result does not depend on the chunking)."""
    exact = _mask
    xyz = np.ascontiguousarray(points[:, :3], dtype=np.float32)
    step = max(1, _SINGLE_THREAD_ENTRIES // max(1, len(boxes)))
    if len(xyz) <= step:
        return exact(xyz, boxes)
    return np.concatenate([exact(xyz[k:k + step], boxes) for k in range(0, len(xyz), step)], axis=0)


def _box_candidates(points, boxes, cell=2.0):
    """Indices of the points that may lie in some box: those in a ``cell``-metre BEV grid cell that meets a box's
    bounding square (half-diagonal + 5 cm, which covers the exact test's 1 cm margin), widened by one cell so
    that rounding cannot lose a point. Costs a few passes over the points instead of a sort."""
    reach = 0.5 * np.hypot(boxes[:, 3], boxes[:, 4]) + 0.05
    lo = np.floor((boxes[:, 0:2] - reach[:, None]) / cell).astype(np.int64) - 1
    hi = np.floor((boxes[:, 0:2] + reach[:, None]) / cell).astype(np.int64) + 1
    origin, shape = lo.min(axis=0), hi.max(axis=0) - lo.min(axis=0) + 1
    marked = np.zeros(shape, dtype=bool)
    for (x0, y0), (x1, y1) in zip(lo - origin, hi - origin):
        marked[x0:x1 + 1, y0:y1 + 1] = True
    ix = np.floor(points[:, 0] / np.float32(cell)).astype(np.int64) - origin[0]
    iy = np.floor(points[:, 1] / np.float32(cell)).astype(np.int64) - origin[1]
    inside = (ix >= 0) & (ix < shape[0]) & (iy >= 0) & (iy < shape[1])
    cand = np.flatnonzero(inside)
    return cand[marked[ix[cand], iy[cand]]]


def points_in_boxes_mask(points, boxes):
    """``(M, N)`` bool: point ``m`` lies inside box ``n`` (numpy in, numpy out; ``rdd.ops`` semantics).

    Only points near some box (:func:`_box_candidates`) go to the exact test, which keeps gt_sampling's point
    removal cheap on 300k-point clouds.
    """
    out = np.zeros((len(points), len(boxes)), dtype=bool)
    if len(points) == 0 or len(boxes) == 0:
        return out
    boxes = np.ascontiguousarray(boxes[:, :7], dtype=np.float32)
    if len(points) * len(boxes) <= 200000:
        return _exact_in_boxes(points, boxes)
    cand = _box_candidates(points, boxes)
    if len(cand):
        out[cand] = _exact_in_boxes(points[cand], boxes)
    return out


def points_outside_boxes(points, boxes):
    """``(M,)`` bool: point ``m`` lies in none of ``boxes (N, 7+)`` (the exact test of :func:`points_in_boxes_mask`)."""
    keep = np.ones(len(points), dtype=bool)
    if len(points) == 0 or len(boxes) == 0:
        return keep
    boxes = np.ascontiguousarray(boxes[:, :7], dtype=np.float32)
    cand = _box_candidates(points, boxes)
    if len(cand):
        keep[cand] = ~_exact_in_boxes(points[cand], boxes).any(axis=1)
    return keep


def bev_iou(boxes_a, boxes_b):
    """Rotated BEV IoU ``(N, M)`` of ``boxes_a (N, 7+)`` and ``boxes_b (M, 7+)`` (numpy; uses ``rdd.ops``)."""
    if len(boxes_a) == 0 or len(boxes_b) == 0:
        return np.zeros((len(boxes_a), len(boxes_b)), dtype=np.float32)
    res = boxes_bev_iou(torch.from_numpy(np.ascontiguousarray(boxes_a[:, :7], dtype=np.float32)),
                        torch.from_numpy(np.ascontiguousarray(boxes_b[:, :7], dtype=np.float32)))
    return res.cpu().numpy() if isinstance(res, torch.Tensor) else np.asarray(res)


def bev_overlaps(boxes_a, boxes_b=None):
    """``(N, M)`` bool: ``bev_iou(boxes_a, boxes_b) > 0``; ``boxes_b=None`` compares ``boxes_a`` with itself and
    leaves the diagonal False. Exact IoU is computed only for the boxes whose bounding circles meet another's
    (in a scene they rarely do, so the usual answer costs no IoU call)."""
    self_test = boxes_b is None
    boxes_b = boxes_a if self_test else boxes_b
    a = np.asarray(boxes_a, dtype=np.float64)
    b = np.asarray(boxes_b, dtype=np.float64)
    out = np.zeros((len(a), len(b)), dtype=bool)
    if len(a) == 0 or len(b) == 0:
        return out
    reach = 0.5 * np.hypot(a[:, 3], a[:, 4])[:, None] + 0.5 * np.hypot(b[:, 3], b[:, 4])[None, :]
    dist2 = (a[:, None, 0] - b[None, :, 0]) ** 2 + (a[:, None, 1] - b[None, :, 1]) ** 2
    near = dist2 <= (reach + 1e-3) ** 2  # 1 mm: wider than float32 rounding
    if self_test:
        np.fill_diagonal(near, False)
    rows, cols = np.nonzero(near)
    if len(rows):
        ua, ub = np.unique(rows), np.unique(cols)
        out[np.ix_(ua, ub)] = bev_iou(boxes_a[ua], boxes_b[ub]) > 0
    if self_test:
        np.fill_diagonal(out, False)
    return out
