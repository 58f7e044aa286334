"""Reading CenterPoint head maps at chosen BEV cells (shared by the baseline KD losses).

A head group's raw maps are ``{name: (B, C, H, W)}`` (``hm`` logits); its *regression codes* are the maps of
``HEAD_ORDER`` concatenated along channels: ``center`` (offset of the box centre from the cell's corner, in
cells), ``center_z`` (m), ``dim`` (log m), ``rot`` (cos, sin), ``vel`` (m/s). A cell is addressed by its sample
``b``, ``row`` (y) and ``col`` (x) on a :class:`rdd.geometry.BEVGrid`; the cell holding metric ``(x, y)`` is
``floor(grid.metric_to_cell(x, y))``.
"""
import torch

from rdd.errors import KDConfigError

__all__ = ['heat_prob', 'reg_codes', 'code_slices', 'require_box_maps', 'gather_cells', 'cells_holding',
           'cell_centres', 'decode_codes', 'teacher_codes_at']

BOX_MAPS = {'center': 2, 'center_z': 1, 'dim': 3, 'rot': 2}


def heat_prob(logits):
    """Heatmap probabilities as CenterHead's losses use them: ``sigmoid`` clamped to ``[1e-4, 1 - 1e-4]``."""
    return torch.clamp(logits.sigmoid(), min=1e-4, max=1 - 1e-4)


def reg_codes(pred, head_order):
    """``(B, D, H, W)`` regression codes of one head group (its maps of ``head_order`` concatenated)."""
    return torch.cat([pred[name] for name in head_order], dim=1)


def code_slices(layout):
    """``{name: slice}`` of each regression map inside the codes of a :class:`HeadLayout`."""
    out, start = {}, 0
    for name in layout.head_order:
        out[name] = slice(start, start + layout.head_channels[name])
        start += layout.head_channels[name]
    return out


def require_box_maps(layout, loss_name):
    """KDConfigError naming ``loss_name`` unless the head has the maps boxes are decoded from (``center`` 2,
    ``center_z`` 1, ``dim`` 3, ``rot`` 2 channels)."""
    have = {name: layout.head_channels.get(name) for name in BOX_MAPS}
    if have != BOX_MAPS:
        raise KDConfigError(f'{loss_name}: decoding boxes needs the head maps {BOX_MAPS} in '
                            f'SEPARATE_HEAD_CFG.HEAD_ORDER, the head has {dict(layout.head_channels)}')


def gather_cells(maps, b, rows, cols):
    """``maps`` (B, C, H, W) at cells (N,) ``b, rows, cols`` (int64) -> (N, C)."""
    return maps[b, :, rows, cols]


def cells_holding(x, y, grid, height, width):
    """``(rows, cols)`` int64 of the cells of an ``height x width`` map on ``grid`` holding metric points
    ``(x, y)`` (any shape), clamped onto the map (CenterPoint clamps centres onto its border cells too)."""
    u, v = grid.metric_to_cell(x, y)
    cols = torch.floor(u).clamp(0, width - 1).long()
    rows = torch.floor(v).clamp(0, height - 1).long()
    return rows, cols


def cell_centres(rows, cols, grid, dtype=torch.float32):
    """Metric ``(x, y)`` of the centres of cells ``rows, cols``."""
    return grid.cell_to_metric(cols.to(dtype) + 0.5, rows.to(dtype) + 0.5)


def decode_codes(codes, rows, cols, grid, slices):
    """Boxes ``(N, 7)`` ``[x, y, z, dx, dy, dz, yaw]`` (m, rad) from codes ``(N, D)`` read at cells ``rows, cols``
    of ``grid`` (CenterPoint's decoding: centre = cell corner + offset, sizes ``exp(dim)``, yaw ``atan2(sin,
    cos)``)."""
    centre = codes[:, slices['center']]
    x, y = grid.cell_to_metric(cols.to(codes.dtype) + centre[:, 0], rows.to(codes.dtype) + centre[:, 1])
    rot = codes[:, slices['rot']]
    return torch.stack([x, y, codes[:, slices['center_z']][:, 0], *codes[:, slices['dim']].exp().unbind(1),
                        torch.atan2(rot[:, 1], rot[:, 0])], dim=1)


def teacher_codes_at(t_reg, cells, t_grid, s_grid, center):
    """The teacher's regression codes for student cells, across grids.

    Args:
        t_reg: (B, D, Ht, Wt) teacher codes on ``t_grid``.
        cells: ``(b, x, y, s_rows, s_cols)``, each (N,): samples (int64), metric points (m) and the student cells
            (int64) holding them.
        t_grid, s_grid: the two BEVGrids. center: slice of the ``center`` offsets in the codes.
    Returns:
        (N, D): on the same grid, the codes at the student cells themselves; otherwise the codes at the teacher
        cell holding ``(x, y)``, its ``center`` offsets re-expressed relative to the student cell (the teacher's
        predicted centre in metres, in student cell units, minus the student cell's corner); the other codes do
        not depend on the grid.
    """
    b, x, y, s_rows, s_cols = cells
    if t_grid.same_as(s_grid):
        return gather_cells(t_reg, b, s_rows, s_cols)
    t_rows, t_cols = cells_holding(x, y, t_grid, t_reg.shape[2], t_reg.shape[3])
    codes = gather_cells(t_reg, b, t_rows, t_cols).clone()
    offset = codes[:, center]
    xt, yt = t_grid.cell_to_metric(t_cols.to(codes.dtype) + offset[:, 0], t_rows.to(codes.dtype) + offset[:, 1])
    u, v = s_grid.metric_to_cell(xt, yt)
    codes[:, center] = torch.stack([u - s_cols.to(codes.dtype), v - s_rows.to(codes.dtype)], dim=1)
    return codes
