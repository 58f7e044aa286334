"""CenterPoint box decoding (numerically OpenPCDet's ``centernet_utils`` + ``CenterHead``): top-K heatmap peaks to
metric boxes, and the map-gathering helpers the losses share. Target assignment is :mod:`.targets`.

Conventions: BEV maps are (B, C, H, W), H along y, W along x; the cell index is ``y * W + x``; where the maps lie
in metres is a :class:`rdd.geometry.BEVGrid` (``point_cloud_range``, ``voxel_size``, ``feature_map_stride``).
"""
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from rdd.geometry import BEVGrid

__all__ = ['DecodeParams', 'transpose_and_gather_feat', 'topk_from_heatmap', 'decode_bbox_from_heatmap']


@dataclass(frozen=True)
class DecodeParams:
    """Per-head decoding: ``k`` peaks per sample; keep ``score > score_thresh`` (strict) and centres inside
    ``post_center_limit_range`` (6 floats, inclusive); None disables a filter."""
    k: int = 100
    score_thresh: Optional[float] = None
    post_center_limit_range: Optional[Sequence[float]] = None

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


def decode_bbox_from_heatmap(maps, grid: BEVGrid, params: DecodeParams = DecodeParams()):
    """Decode the top-K heatmap peaks of one head into boxes (before NMS).

    Args:
        maps: ``heatmap`` (B, C, H, W) probabilities (sigmoid applied); ``rot_cos``, ``rot_sin``, ``center_z``
            (B, 1, H, W); ``center`` (B, 2, H, W) offsets in cells; ``dim`` (B, 3, H, W) sizes in metres (exp
            applied); optional ``vel`` (B, 2, H, W).
        grid: where the maps lie (metres); params: :class:`DecodeParams`.
    Returns:
        list over samples of dicts, in top-K order: ``pred_boxes`` (n, 7 or 9) [x,y,z,dx,dy,dz,yaw(,vx,vy)],
        ``pred_scores`` (n,), ``pred_labels`` (n,) int32 0-based in-head class, ``cell_index`` (n,) int64.
    """
    batch = maps['heatmap'].shape[0]
    scores, inds, class_ids, ys, xs = topk_from_heatmap(maps['heatmap'], params.k)
    k = scores.shape[1]
    center, rot_sin, rot_cos, center_z, dim = (transpose_and_gather_feat(maps[name], inds) for name in
                                               ('center', 'rot_sin', 'rot_cos', 'center_z', 'dim'))

    angle = torch.atan2(rot_sin, rot_cos)
    xs = xs.view(batch, k, 1) + center[:, :, 0:1]
    ys = ys.view(batch, k, 1) + center[:, :, 1:2]
    xs = xs * grid.feature_map_stride * grid.voxel_size[0] + grid.x_min
    ys = ys * grid.feature_map_stride * grid.voxel_size[1] + grid.y_min
    parts = [xs, ys, center_z, dim, angle]
    if maps.get('vel') is not None:
        parts.append(transpose_and_gather_feat(maps['vel'], inds))
    boxes = torch.cat(parts, dim=-1)

    keep = torch.ones_like(scores, dtype=torch.bool)
    if params.post_center_limit_range is not None:
        limit = torch.as_tensor(params.post_center_limit_range, dtype=torch.float32,
                                device=boxes.device).to(boxes.dtype)
        keep &= (boxes[..., :3] >= limit[:3]).all(2)
        keep &= (boxes[..., :3] <= limit[3:]).all(2)
    if params.score_thresh is not None:
        keep &= scores > params.score_thresh
    return [{'pred_boxes': boxes[b, keep[b]], 'pred_scores': scores[b, keep[b]],
             'pred_labels': class_ids[b, keep[b]], 'cell_index': inds[b, keep[b]]} for b in range(batch)]
