"""The head outputs the logit term compares, as one map each per model (step 7).

* heatmap logits of every class of every head group, concatenated (``(B, n_classes, H, W)``; the loss applies the
  sigmoid to the cells it reads);
* regression maps of every head group, concatenated in ``HEAD_ORDER`` (``(B, n_groups * R, H, W)``), with the
  ``center`` offsets (cells of the model's own grid) turned into the metric position of the predicted centre,
  ``x = (col + offset_x) · s_x + x_min`` (metres), so that two models on different grids are compared in metres,
  never in one model's cell units. ``center_z``, ``dim`` (log sizes), ``rot`` (cos, sin) and ``vel`` (m/s) do not
  depend on the grid and are kept as the head emits them.
"""
import torch

__all__ = ['heatmap_logits', 'regression_maps']


def heatmap_logits(pred_dicts, head):
    """``(B, n_classes, H, W)``: the ``hm`` logits of every head group in group order."""
    for g, (maps, names) in enumerate(zip(pred_dicts, head.class_names_each_head)):
        if maps['hm'].shape[1] != len(names):
            raise ValueError(f'RDDLoss: head group {g} hm has {maps["hm"].shape[1]} channels, expected {len(names)}')
    return torch.cat([maps['hm'] for maps in pred_dicts], dim=1)


def _metric_centre(offset, grid):
    """``(B, 2, H, W)`` centre offsets (cells) -> metric centre positions ``(B, 2, H, W)`` (metres)."""
    height, width = offset.shape[-2:]
    col = torch.arange(width, device=offset.device, dtype=offset.dtype).view(1, width)
    row = torch.arange(height, device=offset.device, dtype=offset.dtype).view(height, 1)
    x, y = grid.cell_to_metric(col + offset[:, 0], row + offset[:, 1])
    return torch.stack([x, y], dim=1)


def regression_maps(pred_dicts, head, grid):
    """``(B, n_groups * R, H, W)`` regression maps in ``head.head_order`` per group, ``center`` as metres."""
    out = []
    for g, maps in enumerate(pred_dicts):
        for name in head.head_order:
            if name not in maps or maps[name].shape[1] != head.head_channels[name]:
                got = tuple(maps[name].shape) if name in maps else 'missing'
                raise ValueError(f'RDDLoss: head group {g} map {name!r}: expected {head.head_channels[name]} '
                                 f'channels, got {got}')
            out.append(_metric_centre(maps[name], grid) if name == 'center' else maps[name])
    return torch.cat(out, dim=1)
