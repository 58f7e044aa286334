"""Step 1, proposals: the peaks of a CenterPoint model's raw heatmaps, each with its decoded box (no NMS).

Per head group the class heatmaps (sigmoid of the ``hm`` logits) are reduced to one score per cell (the best class
of the group, whose classes share one box at a cell), a cell is a peak when it is the maximum of its 3x3
neighbourhood, and the peaks scored at least ``score_thresh`` are kept, at most ``max_per_source`` per sample over
all groups (highest scores first). A peak's box is decoded from the group's regression maps at that cell as
CenterPoint's decoding does (``center`` offsets in cells, ``center_z`` and ``dim`` (log sizes) in metres, ``rot``
as cos / sin) and placed in metres by the model's :class:`rdd.geometry.BEVGrid`.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ['Proposals', 'heatmap_proposals', 'REQUIRED_MAPS']

REQUIRED_MAPS = ('center', 'center_z', 'dim', 'rot')
_NOT_A_PEAK = -1.0


@dataclass
class Proposals:
    """Proposals of a batch, ordered by sample, then by score (descending) within a source.

    Attributes:
        batch_idx: (P,) int64 sample.
        cell: (P, 2) int64 ``(row, col)`` of the peak on the proposing model's map.
        label: (P,) int64 1-based index into ``CLASS_NAMES``.
        group: (P,) int64 head group.
        score: (P,) float peak score (sigmoid).
        box: (P, 7) float ``x, y, z, dx, dy, dz, yaw`` (metres, radians) decoded at the peak.
        source: (P,) int64 0 = teacher, 1 = student.
    """
    batch_idx: torch.Tensor
    cell: torch.Tensor
    label: torch.Tensor
    group: torch.Tensor
    score: torch.Tensor
    box: torch.Tensor
    source: torch.Tensor

    def __len__(self):
        return int(self.batch_idx.shape[0])

    def select(self, index):
        """The proposals at ``index`` (a bool mask or int64 indices)."""
        return Proposals(*(getattr(self, k)[index] for k in self.__dataclass_fields__))

    @staticmethod
    def cat(parts):
        """Concatenate proposal sets field by field."""
        return Proposals(*(torch.cat([getattr(p, k) for p in parts]) for k in Proposals.__dataclass_fields__))


def _group_peak_scores(pred_dicts, head):
    """``(B, n_groups, H*W)`` peak scores (``_NOT_A_PEAK`` elsewhere) and ``(B, n_groups, H*W)`` in-group class."""
    if len(pred_dicts) != len(head.class_names_each_head):
        raise ValueError(f'RDDLoss: {len(pred_dicts)} head groups in pred_dicts, the head layout has '
                         f'{len(head.class_names_each_head)}')
    scores, classes = [], []
    for g, (maps, names) in enumerate(zip(pred_dicts, head.class_names_each_head)):
        if maps['hm'].shape[1] != len(names):
            raise ValueError(f'RDDLoss: head group {g} hm has {maps["hm"].shape[1]} channels, expected '
                             f'{len(names)} ({list(names)})')
        prob = maps['hm'].detach().float().sigmoid()
        best, cls = prob.max(dim=1)  # (B, H, W)
        peak = F.max_pool2d(best[:, None], kernel_size=3, stride=1, padding=1)[:, 0] == best
        scores.append(torch.where(peak, best, torch.full_like(best, _NOT_A_PEAK)).flatten(1))
        classes.append(cls.flatten(1))
    return torch.stack(scores, dim=1), torch.stack(classes, dim=1)


def _global_labels(head, device):
    """``(n_groups, max classes per group)`` int64: 1-based global label of each in-group class."""
    width = max(len(names) for names in head.class_names_each_head)
    table = torch.zeros((len(head.class_names_each_head), width), dtype=torch.long)
    for g, names in enumerate(head.class_names_each_head):
        for c, name in enumerate(names):
            table[g, c] = head.class_names.index(name) + 1
    return table.to(device)


def _decode_boxes(pred_dicts, grid, batch_idx, group, row, col):
    """Boxes ``(P, 7)`` decoded at the given cells (float32, metres); sizes capped at the map's extent."""
    box = torch.zeros((batch_idx.shape[0], 7), device=batch_idx.device)
    max_log_size = math.log(max(grid.x_max - grid.x_min, grid.y_max - grid.y_min))
    for g, maps in enumerate(pred_dicts):
        sel = torch.nonzero(group == g).flatten()
        if sel.numel() == 0:
            continue
        b, r, c = batch_idx[sel], row[sel], col[sel]

        def at(name):
            return maps[name].detach().float()[b, :, r, c]  # (n, channels)
        offset, rot = at('center'), at('rot')
        x, y = grid.cell_to_metric(c.float() + offset[:, 0], r.float() + offset[:, 1])
        box[sel, 0], box[sel, 1], box[sel, 2] = x, y, at('center_z')[:, 0]
        box[sel, 3:6] = at('dim').clamp(max=max_log_size).exp()
        box[sel, 6] = torch.atan2(rot[:, 1], rot[:, 0])  # rot = (cos, sin), OpenPCDet's order
    return box


@torch.no_grad()
def heatmap_proposals(pred_dicts, head, grid, score_thresh=0.1, max_per_source=100, source=0):
    """Heatmap-peak proposals of one model (see the module doc), without gradient.

    Args:
        pred_dicts: list over head groups of raw maps ``{'hm': (B, n_cls_g, H, W) logits, 'center': (B, 2, H, W),
            'center_z', 'dim' (B, 3, H, W) log sizes, 'rot' (B, 2, H, W) cos / sin, ...}``.
        head: the model's :class:`rdd.distill.context.HeadLayout`.
        grid: the model's :class:`rdd.geometry.BEVGrid` (places the maps in metres).
        score_thresh: lowest peak score kept.
        max_per_source: most peaks kept per sample.
        source: value of :attr:`Proposals.source` (0 teacher, 1 student).
    Returns:
        :class:`Proposals`.
    """
    scores, classes = _group_peak_scores(pred_dicts, head)
    bsz, _, cells = scores.shape
    width = pred_dicts[0]['hm'].shape[-1]
    top, flat = torch.topk(scores.flatten(1), min(int(max_per_source), scores[0].numel()), dim=1)
    keep = (top >= max(float(score_thresh), 0.0))
    batch_idx, slot = torch.nonzero(keep, as_tuple=True)
    flat = flat[batch_idx, slot]
    group, cell = flat // cells, flat % cells
    row, col = cell // width, cell % width
    label = _global_labels(head, flat.device)[group, classes.flatten(1)[batch_idx, flat]]
    box = _decode_boxes(pred_dicts, grid, batch_idx, group, row, col)
    return Proposals(batch_idx=batch_idx, cell=torch.stack([row, col], dim=1), label=label, group=group,
                     score=top[batch_idx, slot], box=box, source=torch.full_like(batch_idx, int(source)))
