"""SparseKD-style logit KD for CenterPoint heads (heatmap MSE under a soft mask + regression L1 at GT centres)."""
from dataclasses import dataclass

import torch
import torch.nn as nn

from rdd.config_schema import parse_section
from rdd.errors import KDConfigError
from rdd.models.dense_heads.centernet_utils import transpose_and_gather_feat
from rdd.ops.bev_pool import resample_to_grid

from ..registry import KD_LOSSES


@dataclass(frozen=True)
class LogitKDConfig:
    hm_weight: float = 10.0
    reg_weight: float = 0.2
    score_thresh: float = 0.0
    soft_mask: bool = True


def _prob(logits):
    return torch.clamp(logits.sigmoid(), min=1e-4, max=1 - 1e-4)


@KD_LOSSES.register()
class LogitKDLoss(nn.Module):
    """Per head group ``h`` (averaged over groups)::

        mask   = max_c p_t * [max_c p_t > SCORE_THRESH] * max_c Y_s        (B, H, W)
        L_hm   = sum((p_s - p_t)^2 * mask) / (sum(mask) + 1e-6)             p = sigmoid(hm), clamped
        L_reg  = sum_d code_w[d] * sum_k m_k |r_s[k, d] - r_t[k, d]| / max(sum_k m_k, 1)
        L      = HM_WEIGHT * L_hm + REG_WEIGHT * L_reg

    ``Y_s`` is the student's CenterPoint target heatmap (the GT gaussians; ``SOFT_MASK: False`` uses
    ``[Y_s > 0]`` and ``[p_t > SCORE_THRESH]`` instead of the soft values), ``k`` runs over the student's target
    slots (GT centres, ``inds`` / ``masks``) and ``r`` are the regression maps in ``HEAD_ORDER``. When the grids
    differ, the teacher heatmap is resampled onto the student grid and the teacher regression is read at the
    teacher cell holding each GT centre, its ``center`` offset re-expressed relative to the student cell (the
    other codes do not depend on the grid).

    Config (:class:`LogitKDConfig`): ``HM_WEIGHT`` (10.0), ``REG_WEIGHT`` (0.2), ``SCORE_THRESH`` (0.0),
    ``SOFT_MASK`` (True)::

        KD_LOSSES: [{NAME: LogitKDLoss, WEIGHT: 1.0, HM_WEIGHT: 10.0, REG_WEIGHT: 0.2}]
    """
    REQUIRES = ('pred_dicts', 'target_dicts')

    def __init__(self, head_order, code_weights, teacher_grid, student_grid, hm_weight=10.0, reg_weight=0.2,
                 score_thresh=0.0, soft_mask=True):
        super().__init__()
        self.head_order = list(head_order)
        self.register_buffer('code_weights', torch.tensor(code_weights, dtype=torch.float32), persistent=False)
        self.teacher_grid, self.student_grid = teacher_grid, student_grid
        self.same_grid = teacher_grid.same_as(student_grid)
        self.hm_weight, self.reg_weight = float(hm_weight), float(reg_weight)
        self.score_thresh, self.soft_mask = float(score_thresh), bool(soft_mask)
        self.feature_keys = ()

    @classmethod
    def from_config(cls, cfg, context):
        c = parse_section(LogitKDConfig, cfg, 'LogitKDLoss')
        context.check_grid('LogitKDLoss')
        context.check_same_heads('LogitKDLoss')
        head = context.student.head
        if len(head.code_weights) != head.num_reg_channels:
            raise KDConfigError(f'LogitKDLoss: student code_weights has {len(head.code_weights)} entries for '
                                f'{head.num_reg_channels} regression channels ({list(head.head_order)})')
        return cls(head.head_order, head.code_weights, context.teacher.grid, context.student.grid,
                   c.hm_weight, c.reg_weight, c.score_thresh, c.soft_mask)

    def _teacher_reg_at(self, t_reg, inds, target_boxes, s_width):
        """Teacher regression (B, D, Ht, Wt) read at the student's GT slots -> (B, K, D) in student encoding."""
        if self.same_grid:
            return transpose_and_gather_feat(t_reg, inds)
        sg, tg = self.student_grid, self.teacher_grid
        ht, wt = t_reg.shape[-2:]
        col_s = (inds % s_width).to(t_reg.dtype)
        row_s = torch.div(inds, s_width, rounding_mode='floor').to(t_reg.dtype)
        # GT centre in metres from the student's target (cell index + encoded offset), then its teacher cell
        x, y = sg.cell_to_metric(col_s + target_boxes[..., 0].to(t_reg.dtype),
                                 row_s + target_boxes[..., 1].to(t_reg.dtype))
        u, v = tg.metric_to_cell(x, y)
        tx, ty = torch.floor(u).clamp(0, wt - 1), torch.floor(v).clamp(0, ht - 1)
        vals = transpose_and_gather_feat(t_reg, (ty * wt + tx).long()).clone()
        x_t, y_t = tg.cell_to_metric(tx + vals[..., 0], ty + vals[..., 1])  # teacher's predicted centre, metres
        u_s, v_s = sg.metric_to_cell(x_t, y_t)
        vals[..., 0], vals[..., 1] = u_s - col_s, v_s - row_s  # re-expressed as the student's offsets
        return vals

    def forward(self, teacher, student, batch_dict):
        """teacher / student ``pred_dicts`` (raw maps), student ``target_dicts`` -> (scalar loss, tb_dict)."""
        targets = student['target_dicts']
        n_heads = len(student['pred_dicts'])
        hm_total, reg_total = 0.0, 0.0
        for h, (t_pred, s_pred) in enumerate(zip(teacher['pred_dicts'], student['pred_dicts'])):
            p_s = _prob(s_pred['hm'])
            p_t = resample_to_grid(_prob(t_pred['hm'].detach()), self.teacher_grid, self.student_grid)
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
            s_reg = torch.cat([s_pred[k] for k in self.head_order], dim=1)
            t_reg = torch.cat([t_pred[k].detach() for k in self.head_order], dim=1)
            r_s = transpose_and_gather_feat(s_reg, inds)
            r_t = self._teacher_reg_at(t_reg, inds, targets['target_boxes'][h], s_reg.shape[-1])
            per_code = ((r_s - r_t).abs() * slot_mask[..., None]).sum(dim=(0, 1)) / slot_mask.sum().clamp_min(1.0)
            reg_loss = (per_code * self.code_weights.to(per_code.dtype)).sum()
            hm_total = hm_total + hm_loss
            reg_total = reg_total + reg_loss
        hm_total, reg_total = hm_total / n_heads, reg_total / n_heads
        loss = self.hm_weight * hm_total + self.reg_weight * reg_total
        return loss, {'logit_kd_hm': float(hm_total.detach()), 'logit_kd_reg': float(reg_total.detach())}
