"""Rotated-RoI grid pooling of BEV maps (bilinear ``grid_sample``, G x G cells per box).

Convention (docs/architecture.md): a BEV map is ``(B, C, H, W)``, ``H`` along y and ``W`` along x; cell
``(i, j)`` covers ``x in [x_min + j*sx, x_min + (j+1)*sx)`` and ``y in [y_min + i*sy, y_min + (i+1)*sy)`` with
``sx = voxel_size_x * feature_map_stride``. With ``align_corners=False`` a normalised coordinate ``u = -1`` is the
left edge of column 0 and ``u = +1`` the right edge of column ``W-1``, so ``u = 2 (x - x_min) / (sx W) - 1``.

A box's ``G x G`` sampling points are the cell centres of a ``G x G`` grid laid over the box in its own frame:
row ``i`` runs along the box's local y (width ``dy``), column ``j`` along its local x (length ``dx``, the heading).
A yaw-0 box therefore pools a patch laid out like the map itself.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ['BEVGeometry', 'roi_grid_points', 'xy_to_grid_coords', 'roi_grid_pool', 'resample_to_geometry']

_OUTSIDE = -4.0  # normalised coordinate of padding slots: far outside [-1, 1], so zero padding returns 0


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


def roi_grid_pool(feature_map, boxes, batch_idx, geometry, grid_size):
    """Bilinearly pool ``G x G`` cells of each rotated box from a batched BEV map, in one ``grid_sample`` call.

    Args:
        feature_map: (B, C, H, W) BEV map placed by ``geometry``.
        boxes: (P, 7+) boxes in metres / radians.
        batch_idx: (P,) int64 sample index of each box.
        geometry: BEVGeometry of ``feature_map``.
        grid_size: G.
    Returns:
        (P, G*G, C) pooled values, cells first and channels last (zero where a point falls outside the map,
        partial near the border). The map is sampled in channels-last memory order: each point then reads
        contiguous channel vectors, several times faster than planar reads for wide maps on CPU.
    """
    bsz, channels, height, width = feature_map.shape
    g2 = int(grid_size) ** 2
    num = boxes.shape[0]
    if num == 0:
        return feature_map.new_zeros((0, g2, channels))
    batch_idx = batch_idx.long()
    counts = torch.bincount(batch_idx, minlength=bsz)
    pmax = int(counts.max())
    # slot of each box inside its sample: rank among the boxes of the same sample (boxes need not be sorted)
    order = torch.argsort(batch_idx, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.empty_like(batch_idx)
    slot[order] = torch.arange(num, device=boxes.device) - starts[batch_idx[order]]
    flat = batch_idx * pmax + slot

    coords = xy_to_grid_coords(roi_grid_points(boxes, grid_size), geometry, height, width)  # (P, G2, 2)
    grid = coords.new_full((bsz * pmax, g2, 2), _OUTSIDE)
    grid[flat] = coords.to(grid.dtype)
    grid = grid.view(bsz, pmax, g2, 2).to(feature_map.dtype)
    pooled = F.grid_sample(feature_map.contiguous(memory_format=torch.channels_last), grid, mode='bilinear',
                           padding_mode='zeros', align_corners=False)
    # (B, C, Pmax, G2) in channels-last memory -> (B*Pmax, G2, C) (a view) -> the real boxes
    pooled = pooled.permute(0, 2, 3, 1).reshape(bsz * pmax, g2, channels)
    return pooled[flat]


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
