"""Which points lie inside which rotated 3D boxes (plain torch; numpy in -> numpy out).

Same test as OpenPCDet's ``roiaware_pool3d_utils.points_in_boxes_cpu`` (its C++ ``check_pt_in_box3d_cpu``):
a point is inside box ``[x, y, z, dx, dy, dz, yaw]`` (z = box centre) when

    |pz - z| <= dz / 2   (inclusive)   and   |local_x| < dx / 2 + margin   and   |local_y| < dy / 2 + margin,

with ``(local_x, local_y)`` the point in the box frame (rotated by ``-yaw``) and ``margin = 0.01`` m as in
that C++ code. ``margin=0`` gives the test of OpenPCDet's CUDA ``points_in_boxes_gpu`` (strictly inside in x/y).
"""
import numpy as np
import torch

__all__ = ['points_in_boxes_mask', 'points_in_boxes_index', 'OPENPCDET_CPU_MARGIN']

OPENPCDET_CPU_MARGIN = 1e-2
_CHUNK_ENTRIES = 1 << 22  # points x boxes entries tested at once


def _to_torch(x, name):
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x), True
    if isinstance(x, torch.Tensor):
        return x, False
    raise TypeError(f'{name} must be a numpy array or torch tensor, got {type(x).__name__}')


def _check(points, boxes):
    if points.dim() != 2 or points.shape[1] < 3:
        raise ValueError(f'points must be (N, 3+), got {tuple(points.shape)}')
    if boxes.dim() != 2 or boxes.shape[1] < 7:
        raise ValueError(f'boxes must be (M, 7+), got {tuple(boxes.shape)}')


def _chunks(points, boxes, margin):
    """Yield (start, (n, M) bool mask) over point chunks."""
    dtype = torch.promote_types(points.dtype, boxes.dtype)
    if not dtype.is_floating_point:
        dtype = torch.float32
    b = boxes[:, :7].to(device=points.device, dtype=dtype)
    cx, cy, cz, dx, dy, dz, yaw = b.unbind(1)
    c, s = torch.cos(yaw), torch.sin(yaw)
    half_x, half_y, half_z = dx / 2 + margin, dy / 2 + margin, dz / 2
    step = max(1, _CHUNK_ENTRIES // max(1, b.shape[0]))
    for p0 in range(0, points.shape[0], step):
        p = points[p0:p0 + step, :3].to(dtype)
        sx = p[:, 0:1] - cx
        sy = p[:, 1:2] - cy
        inside = (p[:, 2:3] - cz).abs() <= half_z
        inside &= (sx * c + sy * s).abs() < half_x
        inside &= (sy * c - sx * s).abs() < half_y
        yield p0, inside


def points_in_boxes_mask(points, boxes, margin=OPENPCDET_CPU_MARGIN):
    """Point-in-box mask.

    Args:
        points: (N, 3+) ``[x, y, z, ...]`` metres, numpy array or torch tensor.
        boxes: (M, 7+) ``[x, y, z, dx, dy, dz, yaw, ...]`` (z the box centre), same kind.
        margin: x/y tolerance in metres (default: OpenPCDet's ``points_in_boxes_cpu``, 0.01).
    Returns:
        (N, M) bool, True where point n is inside box m; numpy if ``points`` is numpy. Computed in chunks
        of points on the points' device.
    """
    (pts, is_np), (bxs, _) = _to_torch(points, 'points'), _to_torch(boxes, 'boxes')
    _check(pts, bxs)
    out = torch.zeros(pts.shape[0], bxs.shape[0], dtype=torch.bool, device=pts.device)
    if out.numel():
        for p0, inside in _chunks(pts, bxs, margin):
            out[p0:p0 + inside.shape[0]] = inside
    return out.cpu().numpy() if is_np else out


def points_in_boxes_index(points, boxes, margin=OPENPCDET_CPU_MARGIN):
    """Index of the first box containing each point, or -1.

    Args: as :func:`points_in_boxes_mask`. Returns: (N,) int64 (numpy if ``points`` is numpy).
    """
    (pts, is_np), (bxs, _) = _to_torch(points, 'points'), _to_torch(boxes, 'boxes')
    _check(pts, bxs)
    out = torch.full((pts.shape[0],), -1, dtype=torch.long, device=pts.device)
    if pts.shape[0] and bxs.shape[0]:
        for p0, inside in _chunks(pts, bxs, margin):
            first = inside.to(torch.uint8).argmax(dim=1)  # first True (argmax returns the first maximum)
            out[p0:p0 + inside.shape[0]] = torch.where(inside.any(dim=1), first, torch.full_like(first, -1))
    return out.cpu().numpy() if is_np else out
