"""Rotated-RoI grid pooling of BEV maps (bilinear, as ``grid_sample`` with ``align_corners=False``; G x G cells per box).

Convention (docs/architecture.md): a BEV map is ``(B, C, H, W)``, ``H`` along y and ``W`` along x; cell
``(i, j)`` covers ``x in [x_min + j*sx, x_min + (j+1)*sx)`` and ``y in [y_min + i*sy, y_min + (i+1)*sy)`` with
``sx = voxel_size_x * feature_map_stride``. With ``align_corners=False`` a normalised coordinate ``u = -1`` is the
left edge of column 0 and ``u = +1`` the right edge of column ``W-1``, so ``u = 2 (x - x_min) / (sx W) - 1``, i.e.
the continuous column coordinate (0 at the centre of column 0) is ``(x - x_min) / sx - 0.5``.

A box's ``G x G`` sampling points are the cell centres of a ``G x G`` grid laid over the box in its own frame:
row ``i`` runs along the box's local y (width ``dy``), column ``j`` along its local x (length ``dx``, the heading).
A yaw-0 box therefore pools a patch laid out like the map itself.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ['BEVGeometry', 'roi_grid_points', 'xy_to_grid_coords', 'roi_grid_pool', 'resample_to_geometry']



@dataclass(frozen=True)
class BEVGeometry:
    """Metric placement of a BEV map: origin ``(x_min, y_min)`` and cell size ``(cell_x, cell_y)`` in metres."""
    x_min: float
    y_min: float
    cell_x: float
    cell_y: float
    x_max: float
    y_max: float

    @classmethod
    def from_voxels(cls, point_cloud_range, voxel_size, feature_map_stride):
        """From ``POINT_CLOUD_RANGE`` (6,), ``VOXEL_SIZE`` (3,) metres and the BEV map's stride in voxels."""
        pcr = [float(v) for v in point_cloud_range]
        vs = [float(v) for v in voxel_size]
        if len(pcr) != 6 or len(vs) < 2:
            raise ValueError(f'point_cloud_range needs 6 values and voxel_size >= 2, got {pcr}, {vs}')
        stride = float(feature_map_stride)
        return cls(pcr[0], pcr[1], vs[0] * stride, vs[1] * stride, pcr[3], pcr[4])

    def check_shape(self, height, width, what='BEV map'):
        """Raise ValueError when a ``(height, width)`` map does not cover this range (one cell tolerance)."""
        if (abs(width * self.cell_x - (self.x_max - self.x_min)) > self.cell_x + 1e-6
                or abs(height * self.cell_y - (self.y_max - self.y_min)) > self.cell_y + 1e-6):
            raise ValueError(
                f'{what} of size H={height}, W={width} does not match its geometry: range x [{self.x_min}, '
                f'{self.x_max}], y [{self.y_min}, {self.y_max}] with cells {self.cell_x} x {self.cell_y} m '
                f'expects about W={(self.x_max - self.x_min) / self.cell_x:.1f}, '
                f'H={(self.y_max - self.y_min) / self.cell_y:.1f} (check voxel_size / feature_map_stride)')

    def same_grid(self, other, shape, other_shape):
        """True when both maps have the same shape, origin and cell size (so no resampling is needed)."""
        return (tuple(shape) == tuple(other_shape)
                and all(abs(a - b) < 1e-6 for a, b in zip(
                    (self.x_min, self.y_min, self.cell_x, self.cell_y),
                    (other.x_min, other.y_min, other.cell_x, other.cell_y))))


def roi_grid_points(boxes, grid_size):
    """Metric BEV sampling points of rotated boxes.

    Args:
        boxes: (P, 7+) ``x, y, z, dx, dy, dz, yaw, ...`` in metres / radians (LiDAR frame).
        grid_size: G, cells per side.
    Returns:
        (P, G*G, 2) ``x, y`` in metres; point ``i*G + j`` is the centre of cell row ``i`` (local y),
        column ``j`` (local x).
    """
    g = int(grid_size)
    t = (torch.arange(g, device=boxes.device, dtype=boxes.dtype) + 0.5) / g - 0.5  # (G,) in (-0.5, 0.5)
    lx = (t[None, :] * boxes[:, 3:4])[:, None, :].expand(-1, g, -1)  # (P, G_i, G_j), varies with j
    ly = (t[None, :] * boxes[:, 4:5])[:, :, None].expand(-1, -1, g)  # (P, G_i, G_j), varies with i
    cos = torch.cos(boxes[:, 6])[:, None, None]
    sin = torch.sin(boxes[:, 6])[:, None, None]
    x = boxes[:, 0, None, None] + cos * lx - sin * ly
    y = boxes[:, 1, None, None] + sin * lx + cos * ly
    return torch.stack([x, y], dim=-1).reshape(boxes.shape[0], g * g, 2)


def xy_to_grid_coords(xy, geometry, height, width):
    """Metric ``(..., 2)`` points -> ``grid_sample`` coordinates (``align_corners=False``) of an ``H x W`` map."""
    u = 2.0 * (xy[..., 0] - geometry.x_min) / (geometry.cell_x * width) - 1.0
    v = 2.0 * (xy[..., 1] - geometry.y_min) / (geometry.cell_y * height) - 1.0
    return torch.stack([u, v], dim=-1)


def _bilinear_taps(px, py, height, width):
    """The four bilinear taps of points at continuous pixel coordinates (``0`` = centre of column / row 0).

    Args:
        px, py: (N,) float column / row coordinates.
        height, width: map size.
    Returns:
        (N, 4) int64 flat cell indices ``row * width + col`` and (N, 4) weights (same dtype as ``px``); a tap
        outside the map gets index 0 and weight 0 (``grid_sample``'s zero padding).
    """
    x0, y0 = torch.floor(px), torch.floor(py)
    fx, fy = px - x0, py - y0
    x0, y0 = x0.long(), y0.long()
    xs = torch.stack([x0, x0 + 1, x0, x0 + 1], dim=-1)
    ys = torch.stack([y0, y0, y0 + 1, y0 + 1], dim=-1)
    weights = torch.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], dim=-1)
    inside = (xs >= 0) & (xs < width) & (ys >= 0) & (ys < height)
    index = torch.where(inside, ys * width + xs, torch.zeros_like(xs))
    return index, torch.where(inside, weights, torch.zeros_like(weights))


class _GatherCells(torch.autograd.Function):
    """``(B, C, H, W)`` map, ``(U,)`` distinct flat cell indices ``b*H*W + row*W + col`` -> ``(U, C)`` channel
    vectors of those cells (any memory layout). The backward writes the rows back into a zero map without
    accumulation, which distinct cells allow (autograd's indexing backward would accumulate, serially on CPU)."""

    @staticmethod
    def forward(ctx, feature_map, cells):
        bsz, channels, height, width = feature_map.shape
        sample, cell = cells // (height * width), cells % (height * width)
        ctx.save_for_backward(sample, cell)
        ctx.map_shape = feature_map.shape
        return feature_map.reshape(bsz, channels, height * width)[sample, :, cell]

    @staticmethod
    def backward(ctx, grad_rows):
        sample, cell = ctx.saved_tensors
        bsz, channels, height, width = ctx.map_shape
        grad = grad_rows.new_zeros((bsz, channels, height * width))
        grad[sample, :, cell] = grad_rows
        return grad.view(ctx.map_shape), None


def roi_grid_pool(feature_map, boxes, batch_idx, geometry, grid_size):
    """Bilinearly pool ``G x G`` cells of each rotated box from a batched BEV map.

    Same values as ``grid_sample(mode='bilinear', padding_mode='zeros', align_corners=False)`` at the points of
    :func:`roi_grid_points`, for the whole batch at once and without padding samples to equal box counts: the
    channel vectors of the distinct cells the points touch are gathered once, then each point is the weighted
    sum of its four taps (``embedding_bag``). Only the touched cells are read (no full-map layout copy) and the
    gradient is a sparse write into the map (``grid_sample``'s CPU backward runs on one thread per sample and is
    several times slower).

    Args:
        feature_map: (B, C, H, W) BEV map placed by ``geometry`` (any memory layout).
        boxes: (P, 7+) boxes in metres / radians.
        batch_idx: (P,) int64 sample index of each box.
        geometry: BEVGeometry of ``feature_map``.
        grid_size: G.
    Returns:
        (P, G*G, C) pooled values, cells first and channels last (zero where a point falls outside the map,
        partial near the border).
    """
    bsz, channels, height, width = feature_map.shape
    g2 = int(grid_size) ** 2
    num = boxes.shape[0]
    if num == 0:
        return feature_map.new_zeros((0, g2, channels))
    # pixel coordinates of the sampling points (float64: exact taps whatever the map's dtype)
    xy = roi_grid_points(boxes.detach().double(), grid_size)  # (P, G2, 2)
    px = (xy[..., 0] - geometry.x_min) / geometry.cell_x - 0.5
    py = (xy[..., 1] - geometry.y_min) / geometry.cell_y - 0.5
    index, weights = _bilinear_taps(px, py, height, width)  # (P, G2, 4)
    index = index + (batch_idx.long().to(index.device) * (height * width))[:, None, None]
    cells, tap_rows = torch.unique(index, return_inverse=True)  # sorted distinct cells; taps -> their row
    rows = _GatherCells.apply(feature_map, cells)  # (U, C)
    pooled = F.embedding_bag(tap_rows.view(num * g2, 4), rows, mode='sum',
                             per_sample_weights=weights.view(num * g2, 4).to(feature_map.dtype))
    return pooled.view(num, g2, channels)


def resample_to_geometry(feature_map, src_geometry, dst_geometry, dst_shape):
    """Bilinearly resample a ``(B, C, Hs, Ws)`` map onto another BEV grid (the cell centres of ``dst_shape``).

    Equals ``F.interpolate(..., mode='bilinear', align_corners=False)`` when both grids cover the same range
    (border padding, as interpolate's clamping); with different ranges, points beyond the source map take the
    nearest edge value.
    Returns (B, C, Hd, Wd).
    """
    bsz, _, hs, ws = feature_map.shape
    hd, wd = int(dst_shape[0]), int(dst_shape[1])
    dev, dt = feature_map.device, feature_map.dtype
    xs = dst_geometry.x_min + (torch.arange(wd, device=dev, dtype=torch.float64) + 0.5) * dst_geometry.cell_x
    ys = dst_geometry.y_min + (torch.arange(hd, device=dev, dtype=torch.float64) + 0.5) * dst_geometry.cell_y
    xy = torch.stack([xs[None, :].expand(hd, wd), ys[:, None].expand(hd, wd)], dim=-1)
    grid = xy_to_grid_coords(xy, src_geometry, hs, ws).to(dt)
    return F.grid_sample(feature_map, grid[None].expand(bsz, -1, -1, -1), mode='bilinear',
                         padding_mode='border', align_corners=False)
