"""GID-L: response-based general instance distillation (Dai et al., CVPR 2021) on CenterPoint head maps."""
from dataclasses import dataclass, field
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from rdd.config_schema import parse_section
from rdd.errors import KDConfigError

from ..kd_utils import zero_loss
from ..registry import KD_LOSSES
from .gism import GISMConfig, select_general_instances
from .head_maps import (cell_centres, cells_holding, code_slices, gather_cells, reg_codes, require_box_maps,
                        teacher_codes_at)


@dataclass(frozen=True)
class GIDLogitConfig:
    hm_weight: float = 0.1
    reg_weight: float = 0.1
    reg_code_weights: Optional[Tuple[float, ...]] = None
    gism: GISMConfig = field(default_factory=GISMConfig)

    def __post_init__(self):
        if self.hm_weight < 0 or self.reg_weight < 0:
            raise ValueError(f'HM_WEIGHT and REG_WEIGHT must be >= 0, got {self.hm_weight}, {self.reg_weight}')


@KD_LOSSES.register()
class GIDLogitLoss(nn.Module):
    """GID-L: GID's response-based loss (L_Response) at the general instances (GIs) that GISM selects
    (:func:`select_general_instances`; the same rule as ``GIDFeatureLoss``)::

        L_hm  = 1 / N * sum_i sum_c BCE(z_s,i,c, sigmoid(z_t,i,c))                 z: heatmap logits
        L_reg = 1 / N * sum_i sum_d w[d] |r_s,i,d - r_t,i,d|                       r: regression codes
        L     = HM_WEIGHT * L_hm + REG_WEIGHT * L_reg

    GID distils the head's outputs at the anchors the student's assigner matches to each GI box; CenterPoint's
    assignment makes one cell positive for a box, the cell holding its centre, so the response of GI ``i`` is
    read there, on the student grid, in the head group whose maps gave the instance (its classes ``c``, its
    codes ``d`` in ``HEAD_ORDER``). The teacher is read at the teacher cell holding that cell's centre, its
    ``center`` offsets re-expressed relative to the student cell when the grids differ. BCE with the teacher's
    probabilities as targets and L1 on the codes (smooth L1 with beta 0) are GID's; ``w`` is ``REG_CODE_WEIGHTS``
    (null: 1.0 each, as SparseKD's KD code weights). Weights 0.1 / 0.1: GID's response weights as its public
    detectron2 reimplementation sets them (``RESPONSE_CLS.WEIGHT``, ``RESPONSE_REG.WEIGHT``). N: instances in the
    batch. 0 (the student maps in the graph) when no instance is selected.

    Config (:class:`GIDLogitConfig`)::

        KD_LOSSES: [{NAME: GIDLogitLoss, WEIGHT: 1.0, HM_WEIGHT: 0.1, REG_WEIGHT: 0.1, REG_CODE_WEIGHTS: null,
                     GISM: {NMS_THRESH: 0.3, TOP_K: 10, PRE_NMS_TOPK: 1000, SCORE_THRESH: 0.0}}]
    """
    REQUIRES = ('pred_dicts',)

    def __init__(self, context, cfg=GIDLogitConfig()):
        super().__init__()
        self.cfg, self.feature_keys = cfg, ()
        self.teacher_grid, self.student_grid, self.layout = context.teacher.grid, context.student.grid, \
            context.student.head
        self.slices = code_slices(self.layout)
        n_codes = self.layout.num_reg_channels
        weights = cfg.reg_code_weights if cfg.reg_code_weights is not None else (1.0,) * n_codes
        self.register_buffer('code_weights', torch.tensor(weights, dtype=torch.float32), persistent=False)

    @classmethod
    def from_config(cls, cfg, context):
        c = parse_section(GIDLogitConfig, cfg, 'GIDLogitLoss')
        context.check_grid('GIDLogitLoss')
        context.check_same_heads('GIDLogitLoss')
        require_box_maps(context.student.head, 'GIDLogitLoss')
        n_codes = context.student.head.num_reg_channels
        if c.reg_code_weights is not None and len(c.reg_code_weights) != n_codes:
            raise KDConfigError(f'GIDLogitLoss.REG_CODE_WEIGHTS has {len(c.reg_code_weights)} entries for '
                                f'{n_codes} regression channels ({list(context.student.head.head_order)})')
        return cls(context, c)

    def _group_terms(self, t_pred, s_pred, b, rows, cols):
        """Summed BCE and weighted L1 of the instances (b, rows, cols) of one head group."""
        x, y = cell_centres(rows, cols, self.student_grid)
        t_hm = t_pred['hm'].detach()
        t_rows, t_cols = cells_holding(x, y, self.teacher_grid, t_hm.shape[2], t_hm.shape[3])
        z_s = gather_cells(s_pred['hm'], b, rows, cols)
        p_t = gather_cells(t_hm, b, t_rows, t_cols).sigmoid()
        hm = F.binary_cross_entropy_with_logits(z_s, p_t.to(z_s.dtype), reduction='sum')
        r_s = gather_cells(reg_codes(s_pred, self.layout.head_order), b, rows, cols)
        r_t = teacher_codes_at(reg_codes(t_pred, self.layout.head_order).detach(), (b, x, y, rows, cols),
                               self.teacher_grid, self.student_grid, self.slices['center'])
        reg = ((r_s - r_t.to(r_s.dtype)).abs() * self.code_weights.to(r_s.dtype)).sum()
        return hm, reg

    def forward(self, teacher, student, batch_dict):
        """teacher / student ``pred_dicts`` (raw maps) -> (scalar loss, tb_dict)."""
        s_preds = student['pred_dicts']
        gis = select_general_instances(teacher['pred_dicts'], s_preds, self.teacher_grid, self.student_grid,
                                       self.layout, self.cfg.gism)
        bsz = s_preds[0]['hm'].shape[0]
        if len(gis) == 0:
            anchor = sum(p[k].sum() * 0.0 for p in s_preds for k in p)
            return zero_loss(self, anchor) + anchor, {'gid_hm': 0.0, 'gid_reg': 0.0, 'gid_instances': 0.0}
        hm_sum, reg_sum = 0.0, 0.0
        for h, (t_pred, s_pred) in enumerate(zip(teacher['pred_dicts'], s_preds)):
            sel = gis.group == h
            if bool(sel.any()):
                hm, reg = self._group_terms(t_pred, s_pred, gis.batch_idx[sel], gis.rows[sel], gis.cols[sel])
                hm_sum, reg_sum = hm_sum + hm, reg_sum + reg
        l_hm, l_reg = hm_sum / len(gis), reg_sum / len(gis)
        loss = self.cfg.hm_weight * l_hm + self.cfg.reg_weight * l_reg
        return loss, {'gid_hm': float(l_hm.detach()), 'gid_reg': float(l_reg.detach()),
                      'gid_instances': len(gis) / bsz}
