"""GID's general instance selection module (GISM; Dai et al., "General Instance Distillation for Object
Detection", CVPR 2021) on CenterPoint head maps, shared by ``GIDFeatureLoss`` and ``GIDLogitLoss``."""
from dataclasses import dataclass

import torch

from rdd.ops.bev_pool import resample_to_grid
from rdd.ops.rotated_iou import rotated_nms

from .head_maps import cell_centres, cells_holding, code_slices, decode_codes, gather_cells, reg_codes

__all__ = ['GISMConfig', 'GeneralInstances', 'select_general_instances']


@dataclass(frozen=True)
class GISMConfig:
    """``GISM`` section: ``NMS_THRESH`` 0.3, ``TOP_K`` 10 (GID's), ``PRE_NMS_TOPK`` 1000 candidates per sample
    before NMS (ours, for the exact rotated NMS's cost; GID's detectron2 setting keeps 3000), ``SCORE_THRESH``:
    a location is a candidate only when its GI score exceeds it (0: every location where the models disagree)."""
    nms_thresh: float = 0.3
    top_k: int = 10
    pre_nms_topk: int = 1000
    score_thresh: float = 0.0

    def __post_init__(self):
        if not 0.0 <= self.nms_thresh <= 1.0 or not 0.0 <= self.score_thresh < 1.0:
            raise ValueError(f'NMS_THRESH must be in [0, 1] and SCORE_THRESH in [0, 1), got {self.nms_thresh}, '
                             f'{self.score_thresh}')
        if self.top_k < 1 or self.pre_nms_topk < self.top_k:
            raise ValueError(f'TOP_K must be >= 1 and PRE_NMS_TOPK >= TOP_K, got {self.top_k}, {self.pre_nms_topk}')


@dataclass
class GeneralInstances:
    """The selected instances of a batch, concatenated over samples (N in all).

    ``boxes`` (N, 7) m / rad; ``scores`` (N,) GI scores; ``batch_idx``, ``group`` (N,) int64 (head group whose
    maps gave the instance); ``rows``, ``cols`` (N,) int64: the student-grid cell holding the box centre (the cell
    CenterPoint's assignment would make positive for it); ``from_teacher`` (N,) bool (whose box it is).
    """
    boxes: torch.Tensor
    scores: torch.Tensor
    batch_idx: torch.Tensor
    group: torch.Tensor
    rows: torch.Tensor
    cols: torch.Tensor
    from_teacher: torch.Tensor

    def __len__(self):
        return int(self.boxes.shape[0])

    def count_per_sample(self, batch_size):
        return torch.bincount(self.batch_idx, minlength=batch_size)


def _gi_maps(teacher_preds, student_preds, t_grid, s_grid):
    """Per group, on the student grid: GI score ``max_c |p_t - p_s|`` and ``max_c p_t > max_c p_s`` (B, H, W)."""
    scores, teacher_wins = [], []
    for t_pred, s_pred in zip(teacher_preds, student_preds):
        p_s = s_pred['hm'].detach().sigmoid()
        p_t = resample_to_grid(t_pred['hm'].detach().sigmoid(), t_grid, s_grid)
        scores.append((p_t - p_s).abs().amax(dim=1))
        teacher_wins.append(p_t.amax(dim=1) > p_s.amax(dim=1))
    return torch.stack(scores, dim=1), torch.stack(teacher_wins, dim=1)  # (B, G, H, W)


def _candidate_boxes(t_regs, s_regs, cand, t_grid, s_grid, slices):
    """Decoded (N, 7) boxes of candidates ``cand = (b, g, rows, cols, teacher_wins)`` from the per-group codes
    ``t_regs`` / ``s_regs``: the teacher's box (read at the teacher cell holding the student cell's centre) where
    the teacher scores higher, else the student's."""
    b, g, rows, cols, t_wins = cand
    boxes = rows.new_zeros((rows.shape[0], 7), dtype=torch.float32)
    x, y = cell_centres(rows, cols, s_grid)
    for h, (t_reg, s_reg) in enumerate(zip(t_regs, s_regs)):
        sel = g == h
        s_codes = gather_cells(s_reg, b[sel], rows[sel], cols[sel])
        s_box = decode_codes(s_codes.float(), rows[sel], cols[sel], s_grid, slices)
        t_rows, t_cols = cells_holding(x[sel], y[sel], t_grid, t_reg.shape[2], t_reg.shape[3])
        t_box = decode_codes(gather_cells(t_reg, b[sel], t_rows, t_cols).float(), t_rows, t_cols, t_grid, slices)
        boxes[sel] = torch.where(t_wins[sel][:, None], t_box, s_box)
    return boxes


def select_general_instances(teacher_preds, student_preds, t_grid, s_grid, layout, cfg: GISMConfig):
    """GISM: every (head group, student cell) is a location; its GI score is ``max_c |p_t - p_s|`` (teacher
    heatmap resampled onto the student grid) and its GI box the decoded box of the model scoring it higher. Per
    sample: locations with score > ``SCORE_THRESH``, the ``PRE_NMS_TOPK`` best, rotated BEV NMS (IoU >
    ``NMS_THRESH`` suppressed, class-agnostic as GID's), the ``TOP_K`` best kept.

    Args: teacher_preds / student_preds: lists over head groups of raw maps (teacher on ``t_grid``, student on
    ``s_grid``); layout: the shared :class:`HeadLayout`. Returns :class:`GeneralInstances` (no gradient).
    """
    with torch.no_grad():
        gi, t_wins = _gi_maps(teacher_preds, student_preds, t_grid, s_grid)
        bsz, groups, height, width = gi.shape
        t_regs = [reg_codes(p, layout.head_order).detach() for p in teacher_preds]
        s_regs = [reg_codes(p, layout.head_order).detach() for p in student_preds]
        picked = []
        for b in range(bsz):
            flat = gi[b].reshape(-1)
            top = torch.topk(flat, min(cfg.pre_nms_topk, flat.numel()))
            idx = top.indices[top.values > cfg.score_thresh]
            g, cell = torch.div(idx, height * width, rounding_mode='floor'), idx % (height * width)
            rows, cols = torch.div(cell, width, rounding_mode='floor'), cell % width
            bs = torch.full_like(idx, b)
            boxes = _candidate_boxes(t_regs, s_regs, (bs, g, rows, cols, t_wins[b].reshape(-1)[idx]), t_grid,
                                     s_grid, code_slices(layout))
            keep = rotated_nms(boxes, flat[idx], cfg.nms_thresh, post_max_size=cfg.top_k)
            picked.append((boxes[keep], flat[idx][keep], bs[keep], g[keep], t_wins[b].reshape(-1)[idx][keep]))
        boxes, scores, batch_idx, group, from_teacher = (torch.cat(parts) for parts in zip(*picked))
        rows, cols = cells_holding(boxes[:, 0], boxes[:, 1], s_grid, height, width)
    return GeneralInstances(boxes, scores, batch_idx, group, rows, cols, from_teacher)
