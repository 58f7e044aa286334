"""SparseKD-style logit KD for CenterPoint heads (heatmap MSE under a soft mask + regression L1 at GT centres)."""
import torch
import torch.nn as nn

from rdd.models.dense_heads.centernet_utils import transpose_and_gather_feat

from ..registry import KDConfigError, check_allowed_keys, register_kd_loss
from .common import resample_map


def _prob(logits):
    return torch.clamp(logits.sigmoid(), min=1e-4, max=1 - 1e-4)


@register_kd_loss('LogitKDLoss')
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

    Config: ``HM_WEIGHT`` (10.0), ``REG_WEIGHT`` (0.2), ``SCORE_THRESH`` (0.0), ``SOFT_MASK`` (True).
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
        check_allowed_keys(cfg, {'HM_WEIGHT', 'REG_WEIGHT', 'SCORE_THRESH', 'SOFT_MASK'}, 'LogitKDLoss')
        context.check_grid('LogitKDLoss')
        info = context.head_info
        if info['teacher']['head_dict'] != info['student']['head_dict']:
            raise KDConfigError('LogitKDLoss: teacher and student SEPARATE_HEAD_CFG.HEAD_DICT differ')
        code_dim = sum(info['head_channels'][k] for k in info['head_order'])
        if len(info['code_weights']) != code_dim:
            raise KDConfigError(f'LogitKDLoss: student code_weights has {len(info["code_weights"])} entries for '
                                f'{code_dim} regression channels ({info["head_order"]})')
        return cls(info['head_order'], info['code_weights'], context.teacher_grid, context.student_grid,
                   cfg.get('HM_WEIGHT', 10.0), cfg.get('REG_WEIGHT', 0.2), cfg.get('SCORE_THRESH', 0.0),
                   cfg.get('SOFT_MASK', True))

    def _teacher_reg_at(self, t_reg, inds, target_boxes, s_width):
        """Teacher regression (B, D, Ht, Wt) read at the student's GT slots -> (B, K, D) in student encoding."""
        if self.same_grid:
            return transpose_and_gather_feat(t_reg, inds)
        sg, tg = self.student_grid, self.teacher_grid
        (scx, scy), (tcx, tcy) = sg.cell_size, tg.cell_size
        ht, wt = t_reg.shape[-2:]
        # GT centre in metres from the student's target (cell index + encoded offset)
        cx = (inds % s_width).to(t_reg.dtype) + target_boxes[..., 0].to(t_reg.dtype)
        cy = torch.div(inds, s_width, rounding_mode='floor').to(t_reg.dtype) + target_boxes[..., 1].to(t_reg.dtype)
        x = cx * scx + sg.point_cloud_range[0]
        y = cy * scy + sg.point_cloud_range[1]
        tx = torch.floor((x - tg.point_cloud_range[0]) / tcx).clamp(0, wt - 1)
        ty = torch.floor((y - tg.point_cloud_range[1]) / tcy).clamp(0, ht - 1)
        vals = transpose_and_gather_feat(t_reg, (ty * wt + tx).long()).clone()
        x_t = (tx + vals[..., 0]) * tcx + tg.point_cloud_range[0]  # teacher's predicted centre, metres
        y_t = (ty + vals[..., 1]) * tcy + tg.point_cloud_range[1]
        vals[..., 0] = (x_t - sg.point_cloud_range[0]) / scx - (inds % s_width).to(t_reg.dtype)
        vals[..., 1] = (y_t - sg.point_cloud_range[1]) / scy - torch.div(inds, s_width, rounding_mode='floor')
        return vals

    def forward(self, teacher, student, batch_dict):
        """teacher / student ``pred_dicts`` (raw maps), student ``target_dicts`` -> (scalar loss, tb_dict)."""
        targets = student['target_dicts']
        n_heads = len(student['pred_dicts'])
        hm_total, reg_total = 0.0, 0.0
        for h, (t_pred, s_pred) in enumerate(zip(teacher['pred_dicts'], student['pred_dicts'])):
            p_s = _prob(s_pred['hm'])
            p_t = resample_map(_prob(t_pred['hm'].detach()), self.teacher_grid, self.student_grid)
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
