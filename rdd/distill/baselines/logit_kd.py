"""SparseKD's pivotal-position logit KD (PP logit KD) for CenterPoint heads: heatmap MSE under a soft mask and
regression L1 at the GT centres."""
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn as nn

from rdd.config_schema import parse_section
from rdd.errors import KDConfigError
from rdd.models.dense_heads.centernet_utils import transpose_and_gather_feat
from rdd.ops.bev_pool import resample_to_grid

from ..registry import KD_LOSSES
from .head_maps import code_slices, heat_prob, reg_codes, teacher_codes_at


@dataclass(frozen=True)
class LogitKDConfig:
    hm_weight: float = 10.0
    reg_weight: float = 0.2
    score_thresh: float = 0.0
    soft_mask: bool = True
    reg_code_weights: Optional[Tuple[float, ...]] = None


@KD_LOSSES.register()
class LogitKDLoss(nn.Module):
    """PP logit KD (Yang et al., NeurIPS 2022, SparseKD, ``CenterLogitKDHead`` in ``raw_pred`` mode), per head group
    ``h`` (averaged over groups)::

        mask   = max_c p_t * [max_c p_t > SCORE_THRESH] * max_c Y_s        (B, H, W)
        L_hm   = sum((p_s - p_t)^2 * mask) / (sum(mask) + 1e-6)             p = sigmoid(hm), clamped
        L_reg  = sum_d w[d] * sum_k m_k |r_s[k, d] - r_t[k, d]| / max(sum_k m_k, 1)
        L      = HM_WEIGHT * L_hm + REG_WEIGHT * L_reg

    ``Y_s`` is the student's CenterPoint target heatmap (the GT gaussians; ``SOFT_MASK: False`` uses
    ``[Y_s > 0]`` and ``[p_t > SCORE_THRESH]`` instead of the soft values), ``k`` runs over the student's target
    slots (GT centres, ``inds`` / ``masks``), ``r`` are the regression codes in ``HEAD_ORDER`` and ``w`` is
    ``REG_CODE_WEIGHTS``: SparseKD's own KD key (``KD_LOSS.REG_LOSS.code_weights``, all 1.0 in every SparseKD
    config), not the detection head's ``code_weights``; null (default) means 1.0 for every code. Weights 10 / 0.2
    are SparseKD's (``HM_LOSS.weight``, ``REG_LOSS.weight``). When the grids differ, the teacher heatmap is
    resampled onto the student grid and the teacher regression is read at the teacher cell holding each GT centre,
    its ``center`` offset re-expressed relative to the student cell (the other codes do not depend on the grid).

    Config (:class:`LogitKDConfig`)::

        KD_LOSSES: [{NAME: LogitKDLoss, WEIGHT: 1.0, HM_WEIGHT: 10.0, REG_WEIGHT: 0.2, SCORE_THRESH: 0.0,
                     SOFT_MASK: True, REG_CODE_WEIGHTS: null}]
    """
    REQUIRES = ('pred_dicts', 'target_dicts')

    def __init__(self, layout, teacher_grid, student_grid, hm_weight=10.0, reg_weight=0.2, score_thresh=0.0,
                 soft_mask=True, reg_code_weights=None):
        super().__init__()
        self.head_order, self.slices = list(layout.head_order), code_slices(layout)
        weights = reg_code_weights if reg_code_weights is not None else (1.0,) * layout.num_reg_channels
        self.register_buffer('code_weights', torch.tensor(weights, dtype=torch.float32), persistent=False)
        self.teacher_grid, self.student_grid = teacher_grid, student_grid
        self.hm_weight, self.reg_weight = float(hm_weight), float(reg_weight)
        self.score_thresh, self.soft_mask = float(score_thresh), bool(soft_mask)
        self.feature_keys = ()

    @classmethod
    def from_config(cls, cfg, context):
        c = parse_section(LogitKDConfig, cfg, 'LogitKDLoss')
        context.check_grid('LogitKDLoss')
        context.check_same_heads('LogitKDLoss')
        layout = context.student.head
        if c.reg_code_weights is not None and len(c.reg_code_weights) != layout.num_reg_channels:
            raise KDConfigError(f'LogitKDLoss.REG_CODE_WEIGHTS has {len(c.reg_code_weights)} entries for '
                                f'{layout.num_reg_channels} regression channels ({list(layout.head_order)})')
        return cls(layout, context.teacher.grid, context.student.grid, c.hm_weight, c.reg_weight, c.score_thresh,
                   c.soft_mask, c.reg_code_weights)

    def _teacher_reg_at(self, t_reg, inds, target_boxes, s_width):
        """Teacher codes (B, D, Ht, Wt) for the student's GT slots ``inds`` (B, K) -> (B, K, D), student encoding."""
        bsz, k = inds.shape
        rows, cols = torch.div(inds, s_width, rounding_mode='floor'), inds % s_width
        # GT centre in metres from the student's target (cell + encoded offset): its teacher cell holds it
        x, y = self.student_grid.cell_to_metric(cols.to(t_reg.dtype) + target_boxes[..., 0].to(t_reg.dtype),
                                                rows.to(t_reg.dtype) + target_boxes[..., 1].to(t_reg.dtype))
        b = torch.arange(bsz, device=inds.device)[:, None].expand(bsz, k)
        cells = tuple(v.reshape(-1) for v in (b, x, y, rows, cols))
        codes = teacher_codes_at(t_reg, cells, self.teacher_grid, self.student_grid, self.slices['center'])
        return codes.view(bsz, k, -1)

    def forward(self, teacher, student, batch_dict):
        """teacher / student ``pred_dicts`` (raw maps), student ``target_dicts`` -> (scalar loss, tb_dict)."""
        targets = student['target_dicts']
        n_heads = len(student['pred_dicts'])
        hm_total, reg_total = 0.0, 0.0
        for h, (t_pred, s_pred) in enumerate(zip(teacher['pred_dicts'], student['pred_dicts'])):
            p_s = heat_prob(s_pred['hm'])
            p_t = resample_to_grid(heat_prob(t_pred['hm'].detach()), self.teacher_grid, self.student_grid)
            if p_t.shape != p_s.shape:
                raise ValueError(f'LogitKDLoss: teacher heatmap {tuple(p_t.shape)} vs student {tuple(p_s.shape)} '
                                 f'in head group {h}')
            t_max = p_t.max(dim=1)[0]
            fg = targets['heatmaps'][h].max(dim=1)[0]
            if self.soft_mask:
                mask = t_max * (t_max > self.score_thresh).to(t_max.dtype) * fg
            else:
                mask = ((t_max > self.score_thresh) & (fg > 0)).to(t_max.dtype)
            hm_loss = ((p_s - p_t).pow(2) * mask[:, None]).sum() / (mask.sum() + 1e-6)

            inds, slot_mask = targets['inds'][h], targets['masks'][h].to(p_s.dtype)
            s_reg = reg_codes(s_pred, self.head_order)
            r_s = transpose_and_gather_feat(s_reg, inds)
            r_t = self._teacher_reg_at(reg_codes(t_pred, self.head_order).detach(), inds,
                                       targets['target_boxes'][h], s_reg.shape[-1])
            per_code = ((r_s - r_t).abs() * slot_mask[..., None]).sum(dim=(0, 1)) / slot_mask.sum().clamp_min(1.0)
            reg_loss = (per_code * self.code_weights.to(per_code.dtype)).sum()
            hm_total = hm_total + hm_loss
            reg_total = reg_total + reg_loss
        hm_total, reg_total = hm_total / n_heads, reg_total / n_heads
        loss = self.hm_weight * hm_total + self.reg_weight * reg_total
        return loss, {'logit_kd_hm': float(hm_total.detach()), 'logit_kd_reg': float(reg_total.detach())}
