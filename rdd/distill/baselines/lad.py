"""LAD: label assignment distillation (Nguyen et al., WACV 2022) for CenterPoint students."""
from dataclasses import dataclass

import torch
import torch.nn as nn

from rdd.config_schema import parse_section
from rdd.ops.rotated_iou import boxes_bev_iou

from ..registry import KD_LOSSES
from .head_maps import (cell_centres, cells_holding, code_slices, decode_codes, gather_cells, reg_codes,
                        require_box_maps)


@dataclass(frozen=True)
class LADConfig:
    search_radius: int = 1
    min_quality: float = 0.0

    def __post_init__(self):
        if self.search_radius < 0:
            raise ValueError(f'SEARCH_RADIUS must be >= 0, got {self.search_radius}')
        if not 0.0 <= self.min_quality < 1.0:
            raise ValueError(f'MIN_QUALITY must be in [0, 1), got {self.min_quality}')


@KD_LOSSES.register()
class LADLoss(nn.Module):
    """LAD: the teacher's predictions decide the student's label assignment; the student trains on the GT boxes
    with its own detection loss (Nguyen et al., "Improving Object Detection by Label Assignment Distillation",
    WACV 2022: PAA's assignment computed from the teacher's scores and boxes instead of the student's).

    CenterPoint's assignment makes one cell per GT box positive (its gaussian peak and its regression slot): the
    cell holding the box centre, whatever the model predicts. Our reading of LAD for it (``prepare_student_batch``,
    before the student forward): for each GT box ``g`` of class ``c`` (head group ``h``), the candidates are the
    ``(2R + 1)^2`` cells around its centre cell (``R = SEARCH_RADIUS`` 1: the 9 nearest cells, PAA's 9 candidates
    per level), and each candidate's quality is PAA's score with λ = 1 computed from the teacher::

        q(cell) = p_T(cell, c) * IoU_BEV(B_T(cell), g)

    (``p_T`` the teacher's sigmoid heatmap of class ``c``, ``B_T`` its box decoded at the cell; both read at the
    teacher cell holding the cell's centre). The responsible cell is ``argmax q`` (ties: the centre cell first),
    kept only when ``q > MIN_QUALITY`` (else CenterPoint's own cell). It reaches the head as the batch key
    ``gt_assigned_cells`` (B, M): the gaussian peak and the regression slot move there and the ``center`` target
    becomes the GT centre's offset from that cell (possibly outside [0, 1)). PAA picks several positives by a GMM
    on these scores; CenterPoint has one positive per object, so the teacher picks that one.

    Unlike :class:`LabelKDLoss` (SparseKD's label KD: confident teacher boxes *added* as extra GT boxes, i.e. the
    teacher changes *what* is learned), LAD keeps the GT boxes and changes only *where* each is learned. The loss
    term is 0 (LAD acts through the targets); ``tb_dict``: ``lad_moved`` (fraction of GT boxes assigned off their
    centre cell), ``lad_quality`` (mean best teacher quality).

    Config (:class:`LADConfig`)::

        KD_LOSSES: [{NAME: LADLoss, WEIGHT: 1.0, SEARCH_RADIUS: 1, MIN_QUALITY: 0.0}]
    """
    REQUIRES = ('pred_dicts',)

    def __init__(self, context, cfg=LADConfig()):
        super().__init__()
        self.cfg, self.feature_keys = cfg, ()
        self.teacher_grid, self.student_grid, self.layout = context.teacher.grid, context.student.grid, \
            context.student.head
        self.slices = code_slices(self.layout)
        self.register_buffer('label_group', self.layout.label_to_group(), persistent=False)
        in_group = torch.full((len(self.layout.class_names) + 1,), -1, dtype=torch.long)
        for names in self.layout.class_names_each_head:
            for j, name in enumerate(names):
                in_group[self.layout.class_names.index(name) + 1] = j
        self.register_buffer('label_channel', in_group, persistent=False)
        r = cfg.search_radius
        offsets = [(0, 0)] + [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1) if (dy, dx) != (0, 0)]
        self.register_buffer('offsets', torch.tensor(offsets, dtype=torch.long), persistent=False)
        self._stats = {'lad_moved': 0.0, 'lad_quality': 0.0}

    @classmethod
    def from_config(cls, cfg, context):
        c = parse_section(LADConfig, cfg, 'LADLoss')
        context.check_grid('LADLoss')
        context.check_same_heads('LADLoss')
        require_box_maps(context.student.head, 'LADLoss')
        return cls(context, c)

    def _quality(self, t_pred, b, rows, cols, channel, gt):
        """Teacher quality (N, K) of candidate cells (N, K) of N GT boxes ``gt`` (N, 7+) of one head group."""
        n, k = rows.shape
        x, y = cell_centres(rows.reshape(-1), cols.reshape(-1), self.student_grid)
        t_hm = t_pred['hm']
        t_rows, t_cols = cells_holding(x, y, self.teacher_grid, t_hm.shape[2], t_hm.shape[3])
        bk = b[:, None].expand(n, k).reshape(-1)
        prob = gather_cells(t_hm, bk, t_rows, t_cols).sigmoid()
        prob = prob.gather(1, channel[:, None].expand(n, k).reshape(-1, 1))[:, 0]
        codes = gather_cells(reg_codes(t_pred, self.layout.head_order), bk, t_rows, t_cols).float()
        boxes = decode_codes(codes, t_rows, t_cols, self.teacher_grid, self.slices)
        iou = boxes_bev_iou(boxes, gt[:, :7].float())  # (N K, N): each candidate against its own box
        own = iou[torch.arange(n * k, device=iou.device), torch.arange(n, device=iou.device).repeat_interleave(k)]
        return (prob.float() * own).view(n, k)

    @torch.no_grad()
    def assign(self, teacher_preds, gt_boxes):
        """``gt_boxes`` (B, M, 8+) -> (B, M) int64 responsible cells (-1: CenterPoint's own) and the stats."""
        height, width = self.student_grid.map_size
        labels = gt_boxes[..., -1].long().clamp(0, self.label_group.numel() - 1)
        valid = (gt_boxes[..., 3:6].abs().sum(dim=-1) > 0) & (gt_boxes[..., -1] > 0) & (self.label_group[labels] >= 0)
        out = torch.full(gt_boxes.shape[:2], -1, dtype=torch.long, device=gt_boxes.device)
        b_idx, m_idx = torch.nonzero(valid, as_tuple=True)
        gt = gt_boxes[b_idx, m_idx]
        rows0, cols0 = cells_holding(gt[:, 0], gt[:, 1], self.student_grid, height, width)
        rows = rows0[:, None] + self.offsets[None, :, 0]
        cols = cols0[:, None] + self.offsets[None, :, 1]
        inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
        rows, cols = rows.clamp(0, height - 1), cols.clamp(0, width - 1)
        quality = torch.full(rows.shape, -1.0, device=gt_boxes.device)
        for h, t_pred in enumerate(teacher_preds):
            sel = self.label_group[labels[b_idx, m_idx]] == h
            if bool(sel.any()):
                quality[sel] = self._quality(t_pred, b_idx[sel], rows[sel], cols[sel],
                                             self.label_channel[labels[b_idx[sel], m_idx[sel]]], gt[sel])
        quality = torch.where(inside, quality, torch.full_like(quality, -1.0))
        best_q, best = quality.max(dim=1)
        pick = best_q > self.cfg.min_quality
        chosen = rows.gather(1, best[:, None])[:, 0] * width + cols.gather(1, best[:, None])[:, 0]
        out[b_idx[pick], m_idx[pick]] = chosen[pick]
        moved = pick & (best != 0)
        stats = {'lad_moved': float(moved.float().mean()) if len(moved) else 0.0,
                 'lad_quality': float(best_q.clamp_min(0).mean()) if len(best_q) else 0.0}
        return out, stats

    def prepare_student_batch(self, teacher, batch_dict):
        """A shallow copy of ``batch_dict`` with ``gt_assigned_cells`` (B, M) for its ``gt_boxes`` (never modified)."""
        cells, self._stats = self.assign(teacher['pred_dicts'], batch_dict['gt_boxes'])
        out = dict(batch_dict)
        out['gt_assigned_cells'] = cells
        return out

    def forward(self, teacher, student, batch_dict):
        """0 (a scalar on the batch's device); LAD acts through the student's targets."""
        return batch_dict['gt_boxes'].new_zeros(()), dict(self._stats)
