"""Rotated-RoI grid pooling and resampling of BEV maps (bilinear, as ``grid_sample`` with ``align_corners=False``;
G x G cells per box). Maps are placed in metres by a :class:`rdd.geometry.BEVGrid`.

Convention (docs/architecture.md): a BEV map is ``(B, C, H, W)``, ``H`` along y and ``W`` along x; cell
``(i, j)`` covers ``x in [x_min + j*sx, x_min + (j+1)*sx)`` and ``y in [y_min + i*sy, y_min + (i+1)*sy)`` with
``(sx, sy) = grid.cell_size``. With ``align_corners=False`` a normalised coordinate ``u = -1`` is the
left edge of column 0 and ``u = +1`` the right edge of column ``W-1``, so ``u = 2 (x - x_min) / (sx W) - 1``, i.e.
the continuous column coordinate (0 at the centre of column 0) is ``(x - x_min) / sx - 0.5``.

A box's ``G x G`` sampling points are the cell centres of a ``G x G`` grid laid over the box in its own frame:
row ``i`` runs along the box's local y (width ``dy``), column ``j`` along its local x (length ``dx``, the heading).
A yaw-0 box therefore pools a patch laid out like the map itself.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ['roi_grid_points', 'xy_to_grid_coords', 'RoITaps', 'roi_grid_taps', 'roi_grid_pool', 'resample_to_grid']



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


def xy_to_grid_coords(xy, grid, height, width):
    """Metric ``(..., 2)`` points -> ``grid_sample`` coordinates (``align_corners=False``) of an ``H x W`` map
    placed by the BEVGrid ``grid``."""
    (sx, sy) = grid.cell_size
    u = 2.0 * (xy[..., 0] - grid.x_min) / (sx * width) - 1.0
    v = 2.0 * (xy[..., 1] - grid.y_min) / (sy * height) - 1.0
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


@dataclass(frozen=True)
class RoITaps:
    """Where the ``G x G`` points of a set of boxes read a ``(B, C, H, W)`` map (made by :func:`roi_grid_taps`).

    Attributes:
        cells: (U,) int64 sorted distinct flat cell indices ``b*H*W + row*W + col`` the points touch.
        tap_rows: (P*G*G, 4) int64 row of ``cells`` of each point's four bilinear taps.
        weights: (P*G*G, 4) float64 bilinear weights (0 for taps outside the map).
        num_boxes: P; points_per_box: G*G.
    """
    cells: torch.Tensor
    tap_rows: torch.Tensor
    weights: torch.Tensor
    num_boxes: int
    points_per_box: int

    def gather(self, feature_map):
        """``(B, C, H, W)`` map -> ``(U, C)`` channel vectors of :attr:`cells` (gradient: a sparse write)."""
        return _GatherCells.apply(feature_map, self.cells)

    def interpolate(self, rows):
        """``(U, C)`` cell values (e.g. :meth:`gather`'s, possibly transformed cell by cell) -> ``(P, G*G, C)``
        bilinear values at the points."""
        num, g2 = self.num_boxes, self.points_per_box
        if num == 0:
            return rows.new_zeros((0, g2, rows.shape[-1]))
        pooled = F.embedding_bag(self.tap_rows, rows, mode='sum',
                                 per_sample_weights=self.weights.to(rows.dtype))
        return pooled.view(num, g2, rows.shape[-1])


def roi_grid_taps(boxes, batch_idx, grid, map_shape, grid_size):
    """The bilinear taps of the ``G x G`` points of rotated boxes on a map whose shape ends in ``(H, W)``
    (``map_shape``, e.g. ``(B, C, H, W)``) placed by ``grid``: a :class:`RoITaps`.

    Separating the taps from the values lets a caller read several maps of the same grid with one set of taps, or
    transform the touched cells before interpolating: a per-cell function ``f`` gives exactly
    ``roi_grid_pool(f(map))`` at the points. (A point outside the map taps cell 0 of sample 0 with weight 0.)

    Args: as :func:`roi_grid_pool`.
    """
    height, width = int(map_shape[-2]), int(map_shape[-1])
    g2 = int(grid_size) ** 2
    num = boxes.shape[0]
    if num == 0:
        empty = torch.zeros(0, dtype=torch.long, device=boxes.device)
        return RoITaps(empty, empty.view(0, 4), torch.zeros((0, 4), dtype=torch.float64, device=boxes.device),
                       0, g2)
    # pixel coordinates of the sampling points (float64: exact taps whatever the map's dtype)
    xy = roi_grid_points(boxes.detach().double(), grid_size)  # (P, G2, 2)
    u, v = grid.metric_to_cell(xy[..., 0], xy[..., 1])
    px, py = u - 0.5, v - 0.5  # 0 at the centre of column / row 0
    index, weights = _bilinear_taps(px, py, height, width)  # (P, G2, 4)
    index = index + (batch_idx.long().to(index.device) * (height * width))[:, None, None]
    cells, tap_rows = torch.unique(index, return_inverse=True)  # sorted distinct cells; taps -> their row
    return RoITaps(cells, tap_rows.view(num * g2, 4), weights.view(num * g2, 4), num, g2)


def roi_grid_pool(feature_map, boxes, batch_idx, grid, grid_size):
    """Bilinearly pool ``G x G`` cells of each rotated box from a batched BEV map.

    Same values as ``grid_sample(mode='bilinear', padding_mode='zeros', align_corners=False)`` at the points of
    :func:`roi_grid_points`, for the whole batch at once and without padding samples to equal box counts: the
    channel vectors of the distinct cells the points touch are gathered once, then each point is the weighted
    sum of its four taps (``embedding_bag``). Only the touched cells are read (no full-map layout copy) and the
    gradient is a sparse write into the map (``grid_sample``'s CPU backward runs on one thread per sample and is
    several times slower).

    Args:
        feature_map: (B, C, H, W) BEV map placed by the BEVGrid ``grid`` (any memory layout).
        boxes: (P, 7+) boxes in metres / radians.
        batch_idx: (P,) int64 sample index of each box.
        grid: :class:`rdd.geometry.BEVGrid` of ``feature_map``.
        grid_size: G, sampling points per side.
    Returns:
        (P, G*G, C) pooled values, cells first and channels last (zero where a point falls outside the map,
        partial near the border).
    """
    if boxes.shape[0] == 0:
        return feature_map.new_zeros((0, int(grid_size) ** 2, feature_map.shape[1]))
    taps = roi_grid_taps(boxes, batch_idx, grid, feature_map.shape, grid_size)
    return taps.interpolate(taps.gather(feature_map))


def resample_to_grid(feature_map, src_grid, dst_grid):
    """Bilinearly resample a ``(B, C, Hs, Ws)`` map placed by ``src_grid`` onto the cell centres of ``dst_grid``.

    Equals ``F.interpolate(..., mode='bilinear', align_corners=False)`` when both grids cover the same range
    (border padding, as interpolate's clamping); with different ranges, points beyond the source map take the
    nearest edge value. Returns the map unchanged when the grids are the same.
    Returns (B, C, Hd, Wd) with ``(Hd, Wd) = dst_grid.map_size``.
    """
    bsz, _, hs, ws = feature_map.shape
    if src_grid.same_as(dst_grid) and (hs, ws) == dst_grid.map_size:
        return feature_map
    hd, wd = dst_grid.map_size
    dev, dt = feature_map.device, feature_map.dtype
    u = torch.arange(wd, device=dev, dtype=torch.float64) + 0.5
    v = torch.arange(hd, device=dev, dtype=torch.float64) + 0.5
    xs, ys = dst_grid.cell_to_metric(u, v)
    xy = torch.stack([xs[None, :].expand(hd, wd), ys[:, None].expand(hd, wd)], dim=-1)
    coords = xy_to_grid_coords(xy, src_grid, hs, ws).to(dt)
    return F.grid_sample(feature_map, coords[None].expand(bsz, -1, -1, -1), mode='bilinear',
                         padding_mode='border', align_corners=False)
