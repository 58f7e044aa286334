"""Geometric augmentations of a LiDAR scene, OpenPCDet conventions.

All functions act on numpy arrays *in place where cheap* and also return them:
``gt_boxes (N, 7 + C)`` = ``x, y, z, dx, dy, dz, yaw[, vx, vy, ...]`` (metres, radians, m/s, LiDAR frame),
``points (M, 3 + C)`` = ``x, y, z, ...`` (metres). Each transform is a rigid or similarity transform of
the whole scene, applied consistently to point coordinates, box centres, sizes, headings and velocities:

* flip along x (mirror ``y``): ``y, yaw, vy`` change sign;
* flip along y (mirror ``x``): ``x, vx`` change sign, ``yaw -> -(yaw + pi)``;
* rotation by ``a`` about z: centres and velocities rotate by ``a``, ``yaw += a``;
* scaling by ``s``: coordinates, sizes **and velocities** scale by ``s`` (the scene is a scaled copy, so
  speeds scale too; OpenPCDet's newer versions do the same);
* translation by ``t``: coordinates shift, velocities are unchanged (OpenPCDet adds the offset to the
  velocity, which is a bug: a translated scene moves at the same speed).

Random draws use numpy's global RNG, as OpenPCDet does, so DataLoader worker seeding controls them.
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


def flip_along_x(gt_boxes, points, enable=None):
    """Mirror the scene across the x axis (``y -> -y``) with probability 0.5 (or when ``enable``)."""
    if enable is None:
        enable = np.random.choice([False, True], replace=False, p=[0.5, 0.5])
    if enable:
        gt_boxes[:, 1] = -gt_boxes[:, 1]
        gt_boxes[:, 6] = -gt_boxes[:, 6]
        points[:, 1] = -points[:, 1]
        if gt_boxes.shape[1] > 8:
            gt_boxes[:, 8] = -gt_boxes[:, 8]
    return gt_boxes, points


def flip_along_y(gt_boxes, points, enable=None):
    """Mirror the scene across the y axis (``x -> -x``) with probability 0.5 (or when ``enable``)."""
    if enable is None:
        enable = np.random.choice([False, True], replace=False, p=[0.5, 0.5])
    if enable:
        gt_boxes[:, 0] = -gt_boxes[:, 0]
        gt_boxes[:, 6] = -(gt_boxes[:, 6] + np.pi)
        points[:, 0] = -points[:, 0]
        if gt_boxes.shape[1] > 7:
            gt_boxes[:, 7] = -gt_boxes[:, 7]
    return gt_boxes, points


def global_rotation(gt_boxes, points, rot_range, angle=None):
    """Rotate the scene about z by ``angle`` or by a uniform draw from ``rot_range = [min, max]`` (radians)."""
    if angle is None:
        angle = np.random.uniform(rot_range[0], rot_range[1])
    points = rotate_points_z(points, angle)
    gt_boxes[:, 0:2] = rotate_points_z(gt_boxes[:, 0:2], angle)
    gt_boxes[:, 6] += angle
    if gt_boxes.shape[1] > 8:
        gt_boxes[:, 7:9] = rotate_points_z(gt_boxes[:, 7:9], angle)
    return gt_boxes, points


def global_scaling(gt_boxes, points, scale_range, scale=None):
    """Scale the scene about the origin by ``scale`` or a uniform draw from ``scale_range = [min, max]``."""
    if scale is None:
        if scale_range[1] - scale_range[0] < 1e-3:
            return gt_boxes, points
        scale = np.random.uniform(scale_range[0], scale_range[1])
    points[:, :3] *= scale
    gt_boxes[:, :6] *= scale
    if gt_boxes.shape[1] > 8:
        gt_boxes[:, 7:9] *= scale
    return gt_boxes, points


def global_translation(gt_boxes, points, offset):
    """Translate the scene by ``offset (3,)`` metres (velocities unchanged)."""
    offset = np.asarray(offset, dtype=points.dtype)
    points[:, :3] += offset
    gt_boxes[:, :3] += offset.astype(gt_boxes.dtype)
    return gt_boxes, points


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


def points_in_boxes_mask(points, boxes):
    """``(M, N)`` bool: point ``m`` lies inside box ``n`` (numpy in, numpy out; ``rdd.ops`` semantics).

    Only points inside some box's BEV bounding square (found on the x-sorted points) go to the exact test,
    which keeps gt_sampling's point removal cheap on 300k-point clouds.
    """
    out = np.zeros((len(points), len(boxes)), dtype=bool)
    if len(points) == 0 or len(boxes) == 0:
        return out
    boxes = np.ascontiguousarray(boxes[:, :7], dtype=np.float32)
    if len(points) * len(boxes) <= 200000:
        return _mask(np.ascontiguousarray(points[:, :3], dtype=np.float32), boxes)
    reach = 0.5 * np.hypot(boxes[:, 3], boxes[:, 4]) + 0.05  # covers the op's small x/y margin
    order = np.argsort(points[:, 0], kind='stable')
    xs = points[order, 0]
    lo = np.searchsorted(xs, boxes[:, 0] - reach, 'left')
    hi = np.searchsorted(xs, boxes[:, 0] + reach, 'right')
    parts = []
    for k in range(len(boxes)):
        idx = order[lo[k]:hi[k]]
        parts.append(idx[np.abs(points[idx, 1] - boxes[k, 1]) <= reach[k]])
    cand = np.unique(np.concatenate(parts))
    if len(cand):
        out[cand] = _mask(np.ascontiguousarray(points[cand, :3], dtype=np.float32), boxes)
    return out


def remove_points_in_boxes(points, boxes):
    """Drop the points ``(M, 3+)`` that lie in any of ``boxes (N, 7+)``."""
    if len(boxes) == 0 or len(points) == 0:
        return points
    return points[~points_in_boxes_mask(points, boxes).any(axis=1)]


def bev_iou(boxes_a, boxes_b):
    """Rotated BEV IoU ``(N, M)`` of ``boxes_a (N, 7+)`` and ``boxes_b (M, 7+)`` (numpy; uses ``rdd.ops``)."""
    if len(boxes_a) == 0 or len(boxes_b) == 0:
        return np.zeros((len(boxes_a), len(boxes_b)), dtype=np.float32)
    res = boxes_bev_iou(torch.from_numpy(np.ascontiguousarray(boxes_a[:, :7], dtype=np.float32)),
                        torch.from_numpy(np.ascontiguousarray(boxes_b[:, :7], dtype=np.float32)))
    return res.cpu().numpy() if isinstance(res, torch.Tensor) else np.asarray(res)
