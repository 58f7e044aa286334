"""CenterPoint target assignment (numerically OpenPCDet's ``centernet_utils`` + ``CenterHead.assign_targets``).

Conventions: BEV maps are (B, C, H, W), H along y, W along x; the cell index is ``y * W + x``; a map cell is
``voxel_size * feature_map_stride`` metres wide (a :class:`rdd.geometry.BEVGrid`). GT boxes are (..., 7 + E + 1):
x, y, z, dx, dy, dz, yaw, E extra columns (vx, vy), then the 1-based class. Encoded target boxes are
(K, 7 + E + 1) = [offset x, offset y, z, log dx, log dy, log dz, cos yaw, sin yaw, *extras] (10 codes with
velocity).
"""
from dataclasses import dataclass

import numpy as np
import torch

from rdd.geometry import BEVGrid

__all__ = ['TargetParams', 'gaussian_radius', 'draw_gaussian_to_heatmap', 'assign_targets_single_head',
           'split_boxes_by_head', 'assign_targets']


@dataclass(frozen=True)
class TargetParams:
    """``TARGET_ASSIGNER_CONFIG`` numbers: ``num_max_objs`` target slots per head and sample, CenterPoint's
    Gaussian ``gaussian_overlap`` and ``min_radius`` (cells)."""
    num_max_objs: int = 500
    gaussian_overlap: float = 0.1
    min_radius: int = 2

def gaussian_radius(height, width, min_overlap=0.5):
    """CornerNet gaussian radius (in cells) such that a shifted box keeps IoU >= ``min_overlap``.

    Args:
        height, width: (N,) box extents in feature-map cells (OpenPCDet passes dx as ``height``).
        min_overlap: float.
    Returns:
        (N,) the smallest of the three quadratic roots (same dtype as the inputs).
    """
    b1 = height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + (b1 ** 2 - 4 * c1).sqrt()) / 2

    b2 = 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 + (b2 ** 2 - 4 * 4 * c2).sqrt()) / 2

    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + (b3 ** 2 - 4 * a3 * c3).sqrt()) / 2
    return torch.min(torch.min(r1, r2), r3)


def _gaussian_window(radius, top, bottom, left, right):
    """Window [-top, bottom) x [-left, right) (cells, rows = y) of the 2-D gaussian of a (2r+1)^2 kernel.

    The kernel is exp(-(x^2 + y^2) / (2 sigma^2)) with sigma = (2r+1)/6, peak 1, values below float64 eps set
    to 0, computed in float64 and returned as float32 (the values of CenterPoint's ``gaussian2D``). Only the
    window is computed, so huge radii cost no more than the map.
    """
    diameter = 2 * radius + 1
    sigma = diameter / 6
    y = np.arange(-top, bottom, dtype=np.float64)[:, None]
    x = np.arange(-left, right, dtype=np.float64)[None, :]
    h = np.exp(-(x * x + y * y) / (2 * sigma * sigma))
    h[h < np.finfo(h.dtype).eps] = 0  # the kernel maximum is exp(0) = 1
    return torch.from_numpy(h).float()


def draw_gaussian_to_heatmap(heatmap, center, radius):
    """Draw (element-wise max) a gaussian peak of value 1 into one class channel, in place.

    Args:
        heatmap: (H, W) tensor, modified in place.
        center: (x, y) in cells (floats; truncated to the integer cell).
        radius: int radius in cells.
    Returns:
        heatmap.
    """
    x, y = int(center[0]), int(center[1])
    radius = int(radius)
    height, width = heatmap.shape[0:2]
    left, right = min(x, radius), min(width - x, radius + 1)
    top, bottom = min(y, radius), min(height - y, radius + 1)
    if top + bottom <= 0 or left + right <= 0:
        return heatmap
    region = heatmap[y - top:y + bottom, x - left:x + right]
    kernel = _gaussian_window(radius, top, bottom, left, right).to(heatmap.device)
    torch.max(region, kernel, out=region)
    return heatmap

def assign_targets_single_head(gt_boxes, num_classes, feature_map_size, grid: BEVGrid,
                               params: TargetParams = TargetParams(), assigned_cells=None):
    """Targets of one head group for one sample.

    Args:
        gt_boxes: (N, 7 + E + 1) boxes of this head, last column the 1-based class index *within the head*.
        num_classes: number of classes of the head.
        feature_map_size: (H, W) of the BEV map.
        grid: where the map lies (metres); params: :class:`TargetParams`.
        assigned_cells: optional (N,) int64, the cell ``row * W + col`` responsible for each box (its gaussian
            peak and regression slot, the ``center`` offsets then measured from that cell's corner, possibly
            outside [0, 1)); -1 (and None) keep CenterPoint's own, the cell holding the (clamped) centre.
    Returns:
        heatmap (num_classes, H, W), ret_boxes (num_max_objs, 7 + E + 1) encoded boxes,
        inds (num_max_objs,) int64 cell index, mask (num_max_objs,) int64 (1 = valid slot).
        Slot k holds the head's k-th box; boxes with dx <= 0 or dy <= 0 leave their slot empty.
        Centres outside the map are clamped onto its border cells (as OpenPCDet does).
    """
    height, width = int(feature_map_size[0]), int(feature_map_size[1])
    num_max_objs = params.num_max_objs
    heatmap = gt_boxes.new_zeros(num_classes, height, width)
    ret_boxes = gt_boxes.new_zeros((num_max_objs, gt_boxes.shape[-1]))
    inds = gt_boxes.new_zeros(num_max_objs).long()
    mask = gt_boxes.new_zeros(num_max_objs).long()
    n = min(num_max_objs, gt_boxes.shape[0])
    if n == 0:
        return heatmap, ret_boxes, inds, mask
    gt = gt_boxes[:n]
    center, finite = _box_centres(gt, grid, height, width)
    center_int = _responsible_cells(center.int(), assigned_cells, n, height, width)
    vs_x, vs_y, stride = grid.voxel_size[0], grid.voxel_size[1], grid.feature_map_stride
    dx, dy = gt[:, 3] / vs_x / stride, gt[:, 4] / vs_y / stride  # box extents in cells (OpenPCDet's order of ops)
    radius = gaussian_radius(dx, dy, min_overlap=params.gaussian_overlap)
    radius = torch.clamp_min(torch.nan_to_num(radius).int(), min=params.min_radius)

    valid = (dx > 0) & (dy > 0) & finite
    labels = (gt[:, -1] - 1).long()
    for k in torch.nonzero(valid).view(-1).tolist():
        draw_gaussian_to_heatmap(heatmap[labels[k]], center_int[k].tolist(), int(radius[k]))
    enc = _encode_boxes(gt, center - center_int.float())
    cell = (center_int[:, 1] * width + center_int[:, 0]).long()
    ret_boxes[:n][valid] = enc[valid]
    inds[:n][valid] = cell[valid]
    mask[:n][valid] = 1
    return heatmap, ret_boxes, inds, mask


def _box_centres(gt, grid, height, width):
    """Box centres (N, 2) in continuous cell coordinates, clamped onto the map as OpenPCDet does (non-finite
    centres at 0), and (N,) bool: centre finite."""
    coord_x = (gt[:, 0] - grid.x_min) / grid.voxel_size[0] / grid.feature_map_stride
    coord_y = (gt[:, 1] - grid.y_min) / grid.voxel_size[1] / grid.feature_map_stride
    center = torch.stack([coord_x.clamp(min=0, max=width - 0.5), coord_y.clamp(min=0, max=height - 0.5)], dim=-1)
    finite = torch.isfinite(center).all(dim=1)
    return torch.where(finite[:, None], center, torch.zeros_like(center)), finite


def _responsible_cells(center_int, assigned_cells, n, height, width):
    """(N, 2) int ``(col, row)`` of each box's responsible cell: ``center_int`` (the cell holding the centre)
    unless ``assigned_cells`` (N',) names another (``row * W + col``; -1 = keep)."""
    if assigned_cells is None:
        return center_int
    cells = assigned_cells[:n].long()
    if bool(((cells < -1) | (cells >= height * width)).any()):
        raise ValueError(f'gt_assigned_cells must be -1 or a cell index in [0, {height * width}) of the '
                         f'{height} x {width} map, got {cells.tolist()}')
    chosen = torch.stack([cells % width, torch.div(cells, width, rounding_mode='floor')], dim=1).int()
    return torch.where((cells >= 0)[:, None], chosen, center_int)


def _encode_boxes(gt, offsets):
    """(N, 7 + E + 1) GT rows and (N, 2) centre offsets from the responsible cell -> (N, 7 + E + 1) codes
    [offset x, offset y, z, log dx, log dy, log dz, cos yaw, sin yaw, *extras]."""
    enc = gt.new_zeros((gt.shape[0], gt.shape[-1]))
    enc[:, 0:2] = offsets
    enc[:, 2] = gt[:, 2]
    enc[:, 3:6] = gt[:, 3:6].log()
    enc[:, 6] = torch.cos(gt[:, 6])
    enc[:, 7] = torch.sin(gt[:, 6])
    if gt.shape[1] > 8:
        enc[:, 8:] = gt[:, 7:-1]
    return enc


def split_boxes_by_head(gt_boxes, class_names, class_names_each_head, row_values=None):
    """Select one sample's GT boxes per head group and relabel them, without touching the input.

    Args:
        gt_boxes: (M, 7 + E + 1), last column 1-based index into ``class_names`` (0 = padding).
        class_names: list of the detector's class names.
        class_names_each_head: list (per head) of lists of class names.
        row_values: optional (M, ...) tensor of per-row values split the same way.
    Returns:
        list (per head) of new (N_h, 7 + E + 1) tensors in input order, last column the 1-based in-head class;
        with ``row_values``, a list (per head) of ``(boxes, values)`` pairs.
    """
    labels = gt_boxes[:, -1].long()
    if labels.numel() > 0 and (labels.max() > len(class_names) or labels.min() < 0):
        raise ValueError(f'gt_boxes class column must be in [0, {len(class_names)}], got '
                         f'[{int(labels.min())}, {int(labels.max())}]')
    out = []
    for head_names in class_names_each_head:
        lut = torch.zeros(len(class_names) + 1, dtype=torch.long, device=gt_boxes.device)
        for j, name in enumerate(head_names):
            lut[class_names.index(name) + 1] = j + 1
        in_head = lut[labels]
        sel = in_head > 0
        boxes = gt_boxes[sel].clone()
        boxes[:, -1] = in_head[sel].to(boxes.dtype)
        out.append(boxes if row_values is None else (boxes, row_values[sel]))
    return out


def assign_targets(gt_boxes, class_names, class_names_each_head, feature_map_size, grid: BEVGrid,
                   params: TargetParams = TargetParams(), assigned_cells=None):
    """CenterPoint targets for a batch (computed on CPU, returned on ``gt_boxes.device``).

    Args:
        gt_boxes: (B, M, 7 + E + 1), last column 1-based global class (0 rows = padding); not modified.
        feature_map_size: (H, W). Other args as :func:`assign_targets_single_head`.
        assigned_cells: optional (B, M') int64 with M' <= M: the cell responsible for each GT row (see
            :func:`assign_targets_single_head`); rows beyond M' and entries -1 keep CenterPoint's own cell.
    Returns:
        dict of lists over heads: ``heatmaps`` (B, n_cls_h, H, W), ``target_boxes`` (B, num_max_objs, 7 + E + 1),
        ``inds`` (B, num_max_objs) int64, ``masks`` (B, num_max_objs) int64.
    """
    device = gt_boxes.device
    gt_cpu = gt_boxes.detach().to('cpu')
    cells = None
    if assigned_cells is not None:
        if assigned_cells.dim() != 2 or assigned_cells.shape[0] != gt_cpu.shape[0] \
                or assigned_cells.shape[1] > gt_cpu.shape[1]:
            raise ValueError(f'gt_assigned_cells {tuple(assigned_cells.shape)} must be (B, M\') with M\' <= M for '
                             f'gt_boxes {tuple(gt_cpu.shape)}')
        cells = gt_cpu.new_full(gt_cpu.shape[:2], -1, dtype=torch.long)
        cells[:, :assigned_cells.shape[1]] = assigned_cells.detach().to('cpu').long()
    per_sample = [split_boxes_by_head(gt_cpu[b], class_names, class_names_each_head,
                                      row_values=None if cells is None else cells[b])
                  for b in range(gt_cpu.shape[0])]
    ret = {'heatmaps': [], 'target_boxes': [], 'inds': [], 'masks': []}
    for h, head_names in enumerate(class_names_each_head):
        results = []
        for b in range(gt_cpu.shape[0]):
            boxes, head_cells = per_sample[b][h] if cells is not None else (per_sample[b][h], None)
            results.append(assign_targets_single_head(boxes, len(head_names), feature_map_size, grid, params,
                                                      assigned_cells=head_cells))
        for key, values in zip(('heatmaps', 'target_boxes', 'inds', 'masks'), zip(*results)):
            ret[key].append(torch.stack(values, dim=0).to(device))
    return ret
