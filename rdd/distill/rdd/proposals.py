"""Bilateral proposal regions: teacher boxes and detached student boxes (and optionally GT boxes) per sample.

Each source is filtered by score, reduced by class-agnostic rotated BEV NMS and capped; the sources are then
joined. With ``merge_iou`` set, a box of a later source (order: teacher, student, GT) whose BEV IoU with a kept
box of an earlier source exceeds ``merge_iou`` is not added again: the earlier box is tagged with both sources
(one region, one pair). With ``merge_iou=None`` the union is plain concatenation.
"""
from dataclasses import dataclass

import torch

from rdd.ops.rotated_iou import boxes_bev_iou, rotated_nms

__all__ = ['ProposalSet', 'ProposalGenerator', 'SOURCES']

SOURCES = ('teacher', 'student', 'gt')


@dataclass
class ProposalSet:
    """Proposal regions of a batch, ordered by sample.

    boxes: (P, 7) float ``x, y, z, dx, dy, dz, yaw``; batch_idx: (P,) int64; labels: (P,) int64 1-based global
    class; sources: (P, 3) bool, columns ``SOURCES`` (a merged region has several True);
    num_per_source: (3,) int64, boxes each source contributed before merging (whole batch).
    """
    boxes: torch.Tensor
    batch_idx: torch.Tensor
    labels: torch.Tensor
    sources: torch.Tensor
    num_per_source: torch.Tensor

    def __len__(self):
        return int(self.boxes.shape[0])

    def index(self, mask_or_idx):
        """A ProposalSet of a subset (``num_per_source`` is kept as is)."""
        return ProposalSet(self.boxes[mask_or_idx], self.batch_idx[mask_or_idx], self.labels[mask_or_idx],
                           self.sources[mask_or_idx], self.num_per_source)


def _as_tuple(value):
    return (value,) if isinstance(value, str) else tuple(value)


class ProposalGenerator:
    """Builds a :class:`ProposalSet` from decoded teacher / student boxes.

    Args:
        score_thresh: keep boxes with score >= this (teacher and student).
        nms_thresh: class-agnostic rotated BEV NMS IoU per source (suppress IoU > thresh); None disables NMS.
        max_per_source: at most this many boxes per source and sample (highest scores); None = no cap.
        use_gt: add the valid GT boxes (label > 0) of ``gt_boxes (B, M, 8+)`` as a third source (no cap).
        merge_iou: cross-source duplicate merging IoU (see module doc); None = plain concatenation.
        sources: which model sources to use, a subset of ('teacher', 'student') (ablations); GT via use_gt.
    """

    def __init__(self, score_thresh=0.3, nms_thresh=0.2, max_per_source=100, use_gt=False, merge_iou=0.5,
                 sources=('teacher', 'student')):
        bad = [x for x in sources if x not in SOURCES[:2]]
        if bad or not sources:
            raise ValueError(f'PROPOSAL.SOURCES must be a non-empty subset of {SOURCES[:2]}, got {list(sources)}')
        self.sources = tuple(sources)
        self.score_thresh = float(score_thresh)
        self.nms_thresh = None if nms_thresh is None else float(nms_thresh)
        self.max_per_source = None if max_per_source is None else int(max_per_source)
        self.use_gt = bool(use_gt)
        self.merge_iou = None if merge_iou is None else float(merge_iou)

    @classmethod
    def from_config(cls, cfg):
        """From the ``PROPOSAL`` block (keys SCORE_THRESH, NMS_THRESH, MAX_PER_SOURCE, USE_GT, MERGE_IOU, SOURCES)."""
        return cls(score_thresh=cfg['SCORE_THRESH'], nms_thresh=cfg['NMS_THRESH'],
                   max_per_source=cfg['MAX_PER_SOURCE'], use_gt=cfg['USE_GT'], merge_iou=cfg['MERGE_IOU'],
                   sources=_as_tuple(cfg.get('SOURCES', SOURCES[:2])))

    def _select(self, boxes, scores):
        """Indices of the boxes of one source and sample that survive score filter, NMS and cap."""
        idx = torch.nonzero(scores >= self.score_thresh).flatten()
        if idx.numel() == 0:
            return idx
        if self.nms_thresh is not None:
            keep = rotated_nms(boxes[idx, :7].contiguous(), scores[idx].contiguous(), self.nms_thresh,
                               post_max_size=self.max_per_source)
            idx = idx[keep.to(idx.device).long()]
        else:
            idx = idx[torch.argsort(scores[idx], descending=True, stable=True)]
        if self.max_per_source is not None:
            idx = idx[:self.max_per_source]
        return idx

    def _merge(self, kept_boxes, kept_src, new_boxes, src_col):
        """Tag kept boxes that overlap new ones (IoU > merge_iou) with ``src_col``; return the new boxes' mask
        of those that stay separate."""
        alone = torch.ones(new_boxes.shape[0], dtype=torch.bool, device=new_boxes.device)
        if self.merge_iou is None or new_boxes.shape[0] == 0 or kept_boxes.shape[0] == 0:
            return alone
        iou = boxes_bev_iou(new_boxes[:, :7], kept_boxes[:, :7]).to(new_boxes.device)  # (Nnew, Nkept)
        best, arg = iou.max(dim=1)
        dup = best > self.merge_iou
        kept_src[arg[dup], src_col] = True
        return ~dup

    @torch.no_grad()
    def __call__(self, teacher_boxes, student_boxes, gt_boxes=None):
        """
        Args:
            teacher_boxes, student_boxes: lists (one per sample) of dicts with ``pred_boxes (N, 7+)``,
                ``pred_scores (N,)``, ``pred_labels (N,)`` 1-based.
            gt_boxes: (B, M, 8+) with the 1-based label last (zero rows = padding); needed when ``use_gt``.
        Returns:
            ProposalSet (detached).
        """
        if student_boxes is None and 'student' not in self.sources:
            student_boxes = [None] * len(teacher_boxes)  # not decoded: the student is no proposal source
        if student_boxes is None:
            raise ValueError("student boxes are needed (PROPOSAL.SOURCES has 'student') but were not given")
        if len(teacher_boxes) != len(student_boxes):
            raise ValueError(f'teacher boxes cover {len(teacher_boxes)} samples, student boxes {len(student_boxes)}')
        if self.use_gt and gt_boxes is None:
            raise ValueError("PROPOSAL.USE_GT is set but batch_dict has no 'gt_boxes'")
        ref = teacher_boxes[0]['pred_boxes'] if len(teacher_boxes) else torch.zeros(0, 7)
        dev, dt = ref.device, ref.dtype
        boxes_all, labels_all, src_all, bidx_all = [], [], [], []
        num_per_source = torch.zeros(len(SOURCES), dtype=torch.long)
        for b, (tdict, sdict) in enumerate(zip(teacher_boxes, student_boxes)):
            kept_boxes = torch.zeros((0, 7), device=dev, dtype=dt)
            kept_labels = torch.zeros((0,), device=dev, dtype=torch.long)
            kept_src = torch.zeros((0, len(SOURCES)), device=dev, dtype=torch.bool)
            entries = [(col, d) for col, d in ((0, tdict), (1, sdict)) if SOURCES[col] in self.sources]
            if self.use_gt:
                gt = gt_boxes[b].detach()
                gt = gt[gt[:, -1] > 0]
                entries.append((2, {'pred_boxes': gt[:, :7], 'pred_labels': gt[:, -1].round().long()}))
            for col, d in entries:
                boxes = d['pred_boxes'].detach().to(device=dev, dtype=dt)
                labels = d['pred_labels'].detach().to(dev).long()
                if col < 2:
                    idx = self._select(boxes, d['pred_scores'].detach().to(dev))
                    boxes, labels = boxes[idx, :7], labels[idx]
                else:
                    boxes = boxes[:, :7]
                num_per_source[col] += boxes.shape[0]
                alone = self._merge(kept_boxes, kept_src, boxes, col)
                src = torch.zeros((int(alone.sum()), len(SOURCES)), device=dev, dtype=torch.bool)
                src[:, col] = True
                kept_boxes = torch.cat([kept_boxes, boxes[alone]])
                kept_labels = torch.cat([kept_labels, labels[alone]])
                kept_src = torch.cat([kept_src, src])
            boxes_all.append(kept_boxes)
            labels_all.append(kept_labels)
            src_all.append(kept_src)
            bidx_all.append(torch.full((kept_boxes.shape[0],), b, device=dev, dtype=torch.long))
        if not boxes_all:
            return ProposalSet(torch.zeros((0, 7), device=dev, dtype=dt), torch.zeros(0, dtype=torch.long, device=dev),
                               torch.zeros(0, dtype=torch.long, device=dev),
                               torch.zeros((0, len(SOURCES)), dtype=torch.bool, device=dev), num_per_source)
        return ProposalSet(torch.cat(boxes_all), torch.cat(bidx_all), torch.cat(labels_all), torch.cat(src_all),
                           num_per_source)
