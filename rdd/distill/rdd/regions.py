"""Step 2, regions: the metric BEV area each proposal stands for, as a box to RoIAlign on both models' maps.

* ``gaussian``: the area of the proposal's CenterPoint Gaussian, a square of ``2r + 1`` cells of the proposing
  model's grid centred on the peak cell (axis-aligned, as the heatmap Gaussian is), with
  ``r = max(int(gaussian_radius(dx, dy, GAUSSIAN_OVERLAP)), MIN_RADIUS)`` for the decoded box size in cells (the
  radius CenterPoint's target assignment draws for a box of that size, with the head's own settings).
* ``box``: the decoded rotated box ``x, y, dx, dy, yaw``.

Regions are metric, so a region proposed on one model's grid is cropped at the same place on the other's map,
whatever the two grids.
"""
import torch

from rdd.models.dense_heads.targets import gaussian_radius

__all__ = ['region_boxes', 'gaussian_radius_cells']


def gaussian_radius_cells(box, grid, head):
    """``(P,)`` int64 CenterPoint Gaussian radius (cells of ``grid``) of boxes ``(P, 7+)`` (metres), with the
    head's ``gaussian_overlap`` and at least its ``min_radius``; capped at the map's size."""
    sx, sy = grid.cell_size
    size = box[:, 3:5].double()  # float64: the quadratics' squares cannot overflow
    radius = gaussian_radius(size[:, 0] / sx, size[:, 1] / sy, min_overlap=head.gaussian_overlap)
    cap = float(max(grid.map_size))
    radius = torch.nan_to_num(radius, nan=0.0, posinf=cap).clamp(0.0, cap)
    return radius.long().clamp(min=int(head.min_radius))


def region_boxes(proposals, grid, head, region):
    """Metric regions ``(P, 7)`` ``x, y, z, dx, dy, dz, yaw`` of proposals made on ``grid`` by a head ``head``.

    Args:
        proposals: :class:`rdd.distill.rdd.proposals.Proposals` of one model.
        grid: that model's :class:`rdd.geometry.BEVGrid`; head: its :class:`rdd.distill.context.HeadLayout`.
        region: ``'gaussian'`` or ``'box'`` (module doc).
    """
    if region == 'box':
        return proposals.box.clone()
    if region != 'gaussian':
        raise ValueError(f"RDDLoss REGION must be 'gaussian' or 'box', got {region!r}")
    sx, sy = grid.cell_size
    side = (2 * gaussian_radius_cells(proposals.box, grid, head) + 1).to(proposals.box.dtype)
    row, col = proposals.cell[:, 0].to(proposals.box.dtype), proposals.cell[:, 1].to(proposals.box.dtype)
    x, y = grid.cell_to_metric(col + 0.5, row + 0.5)
    out = torch.zeros_like(proposals.box)
    out[:, 0], out[:, 1], out[:, 2] = x, y, proposals.box[:, 2]
    out[:, 3], out[:, 4], out[:, 5] = side * sx, side * sy, proposals.box[:, 5]
    return out
