"""CenterPoint target assignment and box decoding (numerically OpenPCDet's ``centernet_utils`` + ``CenterHead``).

Conventions: BEV maps are (B, C, H, W), H along y, W along x; the cell index is ``y * W + x``; a map cell is
``voxel_size * feature_map_stride`` metres wide. GT boxes are (..., 7 + E + 1): x, y, z, dx, dy, dz, yaw,
E extra columns (vx, vy), then the 1-based class. Encoded target boxes are (K, 7 + E + 1 - 1 + 1) =
[offset x, offset y, z, log dx, log dy, log dz, cos yaw, sin yaw, *extras] (10 codes with velocity).
"""
import numpy as np
import torch


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


def assign_targets_single_head(gt_boxes, num_classes, feature_map_size, point_cloud_range, voxel_size,
                               feature_map_stride, num_max_objs=500, gaussian_overlap=0.1, min_radius=2,
                               assigned_cells=None):
    """Targets of one head group for one sample.

    Args:
        gt_boxes: (N, 7 + E + 1) boxes of this head, last column the 1-based class index *within the head*.
        num_classes: number of classes of the head.
        feature_map_size: (H, W) of the BEV map.
        point_cloud_range: 6 floats; voxel_size: 3 floats (m); feature_map_stride: int.
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
    heatmap = gt_boxes.new_zeros(num_classes, height, width)
    ret_boxes = gt_boxes.new_zeros((num_max_objs, gt_boxes.shape[-1]))
    inds = gt_boxes.new_zeros(num_max_objs).long()
    mask = gt_boxes.new_zeros(num_max_objs).long()
    n = min(num_max_objs, gt_boxes.shape[0])
    if n == 0:
        return heatmap, ret_boxes, inds, mask
    gt = gt_boxes[:n]

    pc_x, pc_y = float(point_cloud_range[0]), float(point_cloud_range[1])
    vs_x, vs_y = float(voxel_size[0]), float(voxel_size[1])
    coord_x = (gt[:, 0] - pc_x) / vs_x / feature_map_stride
    coord_y = (gt[:, 1] - pc_y) / vs_y / feature_map_stride
    coord_x = torch.clamp(coord_x, min=0, max=width - 0.5)
    coord_y = torch.clamp(coord_y, min=0, max=height - 0.5)
    center = torch.cat((coord_x[:, None], coord_y[:, None]), dim=-1)
    finite = torch.isfinite(center).all(dim=1)
    center = torch.where(finite[:, None], center, torch.zeros_like(center))
    center_int = center.int()
    if assigned_cells is not None:
        cells = assigned_cells[:n].long()
        if bool(((cells < -1) | (cells >= height * width)).any()):
            raise ValueError(f'gt_assigned_cells must be -1 or a cell index in [0, {height * width}) of the '
                             f'{height} x {width} map, got {cells.tolist()}')
        own = cells >= 0
        chosen = torch.stack([cells % width, torch.div(cells, width, rounding_mode='floor')], dim=1).int()
        center_int = torch.where(own[:, None], chosen, center_int)
    dx = gt[:, 3] / vs_x / feature_map_stride
    dy = gt[:, 4] / vs_y / feature_map_stride
    radius = gaussian_radius(dx, dy, min_overlap=gaussian_overlap)
    radius = torch.clamp_min(torch.nan_to_num(radius).int(), min=min_radius)

    valid = (dx > 0) & (dy > 0) & finite
    labels = (gt[:, -1] - 1).long()
    for k in torch.nonzero(valid).view(-1).tolist():
        draw_gaussian_to_heatmap(heatmap[labels[k]], center_int[k].tolist(), int(radius[k]))

    enc = gt.new_zeros((n, gt.shape[-1]))
    enc[:, 0:2] = center - center_int.float()
    enc[:, 2] = gt[:, 2]
    enc[:, 3:6] = gt[:, 3:6].log()
    enc[:, 6] = torch.cos(gt[:, 6])
    enc[:, 7] = torch.sin(gt[:, 6])
    if gt.shape[1] > 8:
        enc[:, 8:] = gt[:, 7:-1]
    cell = (center_int[:, 1] * width + center_int[:, 0]).long()
    ret_boxes[:n][valid] = enc[valid]
    inds[:n][valid] = cell[valid]
    mask[:n][valid] = 1
    return heatmap, ret_boxes, inds, mask


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


def assign_targets(gt_boxes, class_names, class_names_each_head, feature_map_size, point_cloud_range, voxel_size,
                   feature_map_stride, num_max_objs=500, gaussian_overlap=0.1, min_radius=2, assigned_cells=None):
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
            results.append(assign_targets_single_head(
                boxes, len(head_names), feature_map_size, point_cloud_range, voxel_size, feature_map_stride,
                num_max_objs=num_max_objs, gaussian_overlap=gaussian_overlap, min_radius=min_radius,
                assigned_cells=head_cells))
        for key, values in zip(('heatmaps', 'target_boxes', 'inds', 'masks'), zip(*results)):
            ret[key].append(torch.stack(values, dim=0).to(device))
    return ret


def transpose_and_gather_feat(feat, ind):
    """Gather map values at cell indices: feat (B, C, H, W), ind (B, K) int64 -> (B, K, C)."""
    b, c = feat.shape[:2]
    feat = feat.permute(0, 2, 3, 1).reshape(b, -1, c)
    return feat.gather(1, ind.unsqueeze(2).expand(ind.shape[0], ind.shape[1], c))


def topk_from_heatmap(scores, k):
    """Top-k over all classes and cells (OpenPCDet ``_topk``: top-k per class, then top-k of those).

    Args:
        scores: (B, C, H, W) probabilities; k: int (reduced to H*W and C*k when the map is smaller).
    Returns:
        scores (B, k'), cell inds (B, k') int64, classes (B, k') int32 (0-based), ys (B, k'), xs (B, k') float.
    """
    batch, num_class, height, width = scores.shape
    k1 = min(k, height * width)
    cls_scores, cls_inds = torch.topk(scores.flatten(2, 3), k1)
    cls_inds = cls_inds % (height * width)
    cls_ys = (cls_inds // width).float()
    cls_xs = (cls_inds % width).int().float()
    k2 = min(k, num_class * k1)
    top_scores, top_ind = torch.topk(cls_scores.view(batch, -1), k2)
    classes = (top_ind // k1).int()
    inds = cls_inds.view(batch, -1).gather(1, top_ind)
    ys = cls_ys.view(batch, -1).gather(1, top_ind)
    xs = cls_xs.view(batch, -1).gather(1, top_ind)
    return top_scores, inds, classes, ys, xs


def decode_bbox_from_heatmap(heatmap, rot_cos, rot_sin, center, center_z, dim, point_cloud_range, voxel_size,
                             feature_map_stride, vel=None, K=100, score_thresh=None, post_center_limit_range=None):
    """Decode the top-K heatmap peaks of one head into boxes (before NMS).

    Args:
        heatmap: (B, C, H, W) probabilities (sigmoid applied). rot_cos, rot_sin, center_z: (B, 1, H, W);
        center: (B, 2, H, W) offsets in cells; dim: (B, 3, H, W) sizes in metres (exp applied); vel: (B, 2, H, W).
        K: peaks per sample; score_thresh: keep score > thresh (strict); post_center_limit_range: 6 floats,
        keep boxes whose centre lies inside (inclusive). None disables a filter.
    Returns:
        list over samples of dicts, in top-K order: ``pred_boxes`` (n, 7 or 9) [x,y,z,dx,dy,dz,yaw(,vx,vy)],
        ``pred_scores`` (n,), ``pred_labels`` (n,) int32 0-based in-head class, ``cell_index`` (n,) int64.
    """
    batch = heatmap.shape[0]
    scores, inds, class_ids, ys, xs = topk_from_heatmap(heatmap, K)
    k = scores.shape[1]
    center = transpose_and_gather_feat(center, inds)
    rot_sin = transpose_and_gather_feat(rot_sin, inds)
    rot_cos = transpose_and_gather_feat(rot_cos, inds)
    center_z = transpose_and_gather_feat(center_z, inds)
    dim = transpose_and_gather_feat(dim, inds)

    angle = torch.atan2(rot_sin, rot_cos)
    xs = xs.view(batch, k, 1) + center[:, :, 0:1]
    ys = ys.view(batch, k, 1) + center[:, :, 1:2]
    xs = xs * feature_map_stride * float(voxel_size[0]) + float(point_cloud_range[0])
    ys = ys * feature_map_stride * float(voxel_size[1]) + float(point_cloud_range[1])
    parts = [xs, ys, center_z, dim, angle]
    if vel is not None:
        parts.append(transpose_and_gather_feat(vel, inds))
    boxes = torch.cat(parts, dim=-1)

    keep = torch.ones_like(scores, dtype=torch.bool)
    if post_center_limit_range is not None:
        limit = torch.as_tensor(post_center_limit_range, dtype=torch.float32, device=boxes.device).to(boxes.dtype)
        keep &= (boxes[..., :3] >= limit[:3]).all(2)
        keep &= (boxes[..., :3] <= limit[3:]).all(2)
    if score_thresh is not None:
        keep &= scores > score_thresh
    return [{'pred_boxes': boxes[b, keep[b]], 'pred_scores': scores[b, keep[b]],
             'pred_labels': class_ids[b, keep[b]], 'cell_index': inds[b, keep[b]]} for b in range(batch)]
