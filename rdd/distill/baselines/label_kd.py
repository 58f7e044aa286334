"""Label KD: confident teacher boxes join the student's training targets."""
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn

from rdd.config_schema import parse_section
from rdd.ops.rotated_iou import boxes_bev_iou

from ..registry import KD_LOSSES
from .common import valid_gt


@dataclass(frozen=True)
class LabelKDConfig:
    score_thresh: float = 0.6
    dedup_iou: Optional[float] = None

    def __post_init__(self):
        if not 0.0 <= self.score_thresh <= 1.0:
            raise ValueError(f'SCORE_THRESH must be in [0, 1], got {self.score_thresh}')


@KD_LOSSES.register()
class LabelKDLoss(nn.Module):
    """Before the student forward, the teacher's decoded boxes with score > ``SCORE_THRESH`` (0.6) are appended
    to each sample's ``gt_boxes`` (GT rows first, then teacher rows, zero padding after), so CenterPoint's target
    assignment trains on both. With ``DEDUP_IOU`` (default null: off) a teacher box whose BEV IoU with a GT box
    of the sample exceeds it is dropped. The loss itself is 0 (it acts through the targets); ``tb_dict`` counts
    the added boxes per sample. The caller's ``gt_boxes`` tensor is never modified.

    Config (:class:`LabelKDConfig`)::

        KD_LOSSES: [{NAME: LabelKDLoss, WEIGHT: 1.0, SCORE_THRESH: 0.6, DEDUP_IOU: null}]
    """
    REQUIRES = ('boxes',)

    def __init__(self, score_thresh=0.6, dedup_iou=None):
        super().__init__()
        self.score_thresh = float(score_thresh)
        self.dedup_iou = None if dedup_iou is None else float(dedup_iou)
        self.feature_keys = ()
        self.min_box_score = self.score_thresh
        self._last_added = 0.0

    @classmethod
    def from_config(cls, cfg, context):
        c = parse_section(LabelKDConfig, cfg, 'LabelKDLoss')
        return cls(c.score_thresh, c.dedup_iou)

    def teacher_targets(self, teacher_boxes, gt):
        """Teacher rows (K, D) for one sample: boxes (padded / cut to ``D - 1`` codes) + 1-based label."""
        box_dim = gt.shape[-1] - 1
        keep = teacher_boxes['pred_scores'] > self.score_thresh
        boxes = teacher_boxes['pred_boxes'][keep].to(gt.dtype)
        labels = teacher_boxes['pred_labels'][keep].to(gt.dtype)
        if boxes.shape[1] < box_dim:
            boxes = torch.cat([boxes, boxes.new_zeros((boxes.shape[0], box_dim - boxes.shape[1]))], dim=1)
        rows = torch.cat([boxes[:, :box_dim], labels[:, None]], dim=1)
        if self.dedup_iou is not None and rows.shape[0] and gt.shape[0]:
            iou = boxes_bev_iou(rows[:, :7], gt[:, :7])
            rows = rows[iou.max(dim=1)[0] <= self.dedup_iou]
        return rows

    def prepare_student_batch(self, teacher, batch_dict):
        """Return a shallow copy of ``batch_dict`` whose ``gt_boxes`` (B, M', D) include the teacher boxes."""
        gt_all = batch_dict['gt_boxes']
        per_sample, added = [], 0
        for gt, tboxes in zip(valid_gt(gt_all), teacher['boxes']):
            rows = self.teacher_targets(tboxes, gt)
            added += rows.shape[0]
            per_sample.append(torch.cat([gt, rows], dim=0))
        m = max([r.shape[0] for r in per_sample] + [gt_all.shape[1]])
        new_gt = gt_all.new_zeros((gt_all.shape[0], m, gt_all.shape[2]))
        for b, rows in enumerate(per_sample):
            new_gt[b, :rows.shape[0]] = rows
        out = dict(batch_dict)
        out['gt_boxes'] = new_gt
        self._last_added = added / max(gt_all.shape[0], 1)
        return out

    def forward(self, teacher, student, batch_dict):
        """0 (a scalar on the batch's device); tb_dict: ``label_kd_boxes`` teacher boxes added per sample."""
        return batch_dict['gt_boxes'].new_zeros(()), {'label_kd_boxes': float(self._last_added)}
