"""RDDLoss: Representation Disparity-aware Distillation as published (Li et al., ICCV 2023; docs/method.md)."""
from dataclasses import dataclass
from typing import Dict, Optional

import torch
import torch.nn as nn

from rdd.config_schema import parse_section
from rdd.errors import KDConfigError
from rdd.ops.bev_pool import roi_grid_taps

from ..kd_utils import zero_loss
from ..registry import KD_LOSSES
from .adapter import StudentAdapter
from .config import RDDConfig
from .disparity import PairDisparity, gaussian_disparity
from .head_maps import heatmap_logits, regression_maps
from .normalisation import channel_softmax
from .pair_weights import pair_weights
from .proposals import REQUIRED_MAPS, Proposals, heatmap_proposals
from .regions import region_boxes
from .terms import feature_distance, l1_distance, per_sample_mean

__all__ = ['RDDLoss', 'RegionPairs']

FEATURE_KEY = 'spatial_features_2d'  # the neck maps (Eq. 8)


@dataclass
class RegionPairs:
    """The M + N region pairs of a batch: every teacher and every student proposal's region, RoIAlign'ed on
    both models' maps at the same metric place (K = G² points).

    Attributes:
        proposals: the :class:`Proposals` the pairs come from (``source`` 0 teacher, 1 student).
        pairs_per_sample: (B,) int64 ``M_b + N_b``.
        teacher_feat / student_feat: (P, K, C_t) channel-softmax patches (the student's through ψ).
        teacher_cls / student_cls: (P, K, n_classes) sigmoid heatmaps.
        teacher_reg / student_reg: (P, K, R) regression maps of the proposal's head group (only with
            ``REG_WEIGHT`` > 0), centres in metres.
    """
    proposals: Proposals
    pairs_per_sample: torch.Tensor
    teacher_feat: torch.Tensor
    student_feat: torch.Tensor
    teacher_cls: torch.Tensor
    student_cls: torch.Tensor
    teacher_reg: Optional[torch.Tensor] = None
    student_reg: Optional[torch.Tensor] = None


@KD_LOSSES.register()
class RDDLoss(nn.Module):
    """``L = α₁ L_feat + α₂ L_logit`` (Eq. 10) on bilateral heatmap-peak region pairs weighted by disparity.

    Region pairs (Eq. 1-2) -> disparity d (Eq. 3, Gaussian MI) -> weights m = 1[d ≥ λ] (Eq. 5-6, our reading)
    -> L_feat (Eq. 8) and L_logit (Eq. 9). Every step is its own module; docs/method.md derives each. YAML:
    :mod:`rdd.distill.rdd.config`.

    Args:
        config: :class:`RDDConfig`.
        teacher / student: :class:`rdd.distill.context.ModelFacts` (grid, ``spatial_features_2d`` width, head).
    Parameters: ``psi`` (:class:`StudentAdapter`, training-only). After each training forward,
    :attr:`histograms` holds ``{'rdd_disparity': (P,) d of every pair}`` for the logging hook
    (``rdd.engine.hooks.KDHistogramHook``, every :attr:`hist_interval` iterations).
    """
    REQUIRES = ('features', 'pred_dicts')  # no decoded boxes: proposals come from the raw heatmaps
    feature_keys = (FEATURE_KEY,)

    def __init__(self, config: RDDConfig, teacher, student):
        super().__init__()
        self.cfg, self.teacher_facts, self.student_facts = config, teacher, student
        self.psi = StudentAdapter(student.feature_channels[FEATURE_KEY], teacher.feature_channels[FEATURE_KEY])
        self.hist_interval = int(config.log_hist_interval)
        self.histograms: Dict[str, torch.Tensor] = {}
        num_reg = teacher.head.num_reg_channels
        reg_index = torch.arange(len(teacher.head.class_names_each_head))[:, None] * num_reg + torch.arange(num_reg)
        self.register_buffer('reg_index', reg_index, persistent=False)  # (groups, R) channels of each group

    @classmethod
    def from_config(cls, cfg, context):
        """``cfg``: the entry's keys (:class:`RDDConfig`); ``context``: :class:`rdd.distill.context.KDContext`.
        Both heads must have the same classes, groups and regression maps (the logit term compares them channel
        for channel). Grids may differ: regions are metric and each map is read on its own grid."""
        config = parse_section(RDDConfig, cfg, 'RDDLoss')
        context.check_same_heads('RDDLoss')
        context.feature_channels(FEATURE_KEY, 'RDDLoss', cfg_key='feature map')
        missing = [m for m in REQUIRED_MAPS if m not in context.teacher.head.head_order]
        if missing:
            raise KDConfigError(f'RDDLoss: the heads have no {missing} maps (SEPARATE_HEAD_CFG.HEAD_ORDER '
                                f'{list(context.teacher.head.head_order)}); proposals decode boxes from them')
        return cls(config, context.teacher, context.student)

    # ------------------------------------------------------------------ the loss
    def forward(self, teacher, student, batch_dict=None):
        """
        Args:
            teacher / student: ``spatial_features_2d`` (B, C, H, W) and ``pred_dicts`` (per head group raw maps,
                ``hm`` logits) of each model; the teacher's are used without gradient.
            batch_dict: unused (the Distiller's contract).
        Returns:
            ``(loss, tb_dict)``: ``α₁ L_feat + α₂ L_logit`` (0 with every parameter in the graph when there is no
            pair) and the diagnostics (floats, counts per sample).
        """
        self._check_inputs(teacher, student)
        pairs = self.region_pairs(teacher, student)
        loss = zero_loss(self, student[FEATURE_KEY])
        if pairs is None:
            self.histograms = {}
            return loss, self.diagnostics(None, None, None, None)
        disparity = gaussian_disparity(pairs.teacher_feat, pairs.student_feat)
        weights = pair_weights(disparity.d, self.cfg.lambda_)
        terms = self.terms(pairs, weights)
        loss = loss + self.cfg.alpha_feat * terms['feat'] + self.cfg.alpha_logit * terms['logit']
        if self.training:
            self.histograms = {'rdd_disparity': disparity.d.detach().float()}
        return loss, self.diagnostics(pairs, disparity, weights, terms, loss=loss)

    def region_pairs(self, teacher, student) -> Optional[RegionPairs]:
        """Steps 1-3: proposals of both models -> metric regions -> RoIAlign on both maps -> normalised patches
        and sampled head outputs. None when there is no pair (or, in training, when the regions read fewer than
        two student cells, too few for ψ's BatchNorm statistics)."""
        cfg, tf, sf = self.cfg, self.teacher_facts, self.student_facts
        found = [heatmap_proposals(maps['pred_dicts'], facts.head, facts.grid, cfg.proposal.score_thresh,
                                   cfg.proposal.max_per_source, source=i) for i, (maps, facts) in
                 enumerate(((teacher, tf), (student, sf)))]
        boxes = torch.cat([region_boxes(p, facts.grid, facts.head, cfg.region) for p, facts in zip(found, (tf, sf))])
        proposals = Proposals.cat(found)
        if len(proposals) == 0:
            return None
        ft, fs = teacher[FEATURE_KEY].detach(), student[FEATURE_KEY]
        t_taps = roi_grid_taps(boxes, proposals.batch_idx, tf.grid, ft.shape, cfg.grid_size)
        same_grid = tf.grid.same_as(sf.grid) and ft.shape[-2:] == fs.shape[-2:]
        s_taps = t_taps if same_grid else roi_grid_taps(boxes, proposals.batch_idx, sf.grid, fs.shape, cfg.grid_size)
        if self.psi.training and s_taps.cells.numel() < 2:
            return None
        hm_t, hm_s = heatmap_logits(teacher['pred_dicts'], tf.head).detach(), heatmap_logits(student['pred_dicts'],
                                                                                               sf.head)
        pairs = RegionPairs(
            proposals=proposals, pairs_per_sample=torch.bincount(proposals.batch_idx, minlength=fs.shape[0]),
            teacher_feat=channel_softmax(t_taps.interpolate(t_taps.gather(ft)), cfg.tau),
            student_feat=channel_softmax(s_taps.interpolate(self.psi.cells(s_taps.gather(fs))), cfg.tau),
            teacher_cls=t_taps.interpolate(t_taps.gather(hm_t).sigmoid()),
            student_cls=s_taps.interpolate(s_taps.gather(hm_s).sigmoid()))
        if cfg.reg_weight > 0:
            own = self.reg_index[proposals.group]  # (P, R)
            for side, taps, maps, facts in (('teacher', t_taps, teacher, tf), ('student', s_taps, student, sf)):
                reg = regression_maps(maps['pred_dicts'], facts.head, facts.grid)
                reg = reg.detach() if side == 'teacher' else reg
                sampled = taps.interpolate(taps.gather(reg))  # (P, K, groups * R)
                setattr(pairs, f'{side}_reg', sampled.gather(2, own[:, None, :].expand(-1, sampled.shape[1], -1)))
        return pairs

    def terms(self, pairs: RegionPairs, weights) -> Dict[str, torch.Tensor]:
        """Steps 6-7: ``feat`` (Eq. 8), ``logit`` (Eq. 9) = ``logit_cls`` + REG_WEIGHT · ``logit_reg``."""
        b, n = pairs.proposals.batch_idx, pairs.pairs_per_sample
        out = {'feat': per_sample_mean(feature_distance(pairs.teacher_feat, pairs.student_feat), weights, b, n),
               'logit_cls': per_sample_mean(l1_distance(pairs.teacher_cls, pairs.student_cls), weights, b, n)}
        out['logit'] = out['logit_cls']
        if pairs.teacher_reg is not None:
            out['logit_reg'] = per_sample_mean(l1_distance(pairs.teacher_reg, pairs.student_reg), weights, b, n)
            out['logit'] = out['logit'] + self.cfg.reg_weight * out['logit_reg']
        return out

    def diagnostics(self, pairs, disparity: Optional[PairDisparity], weights, terms, loss=None):
        """tb_dict floats: the terms, ``rdd_pairs`` (M + N per sample; ``_teacher`` M, ``_student`` N),
        ``rdd_kept_fraction`` (0 without pairs), mean disparity of all / kept / dropped pairs (0 when none)."""
        tb = {'rdd_loss': 0.0, 'rdd_feat': 0.0, 'rdd_logit': 0.0, 'rdd_logit_cls': 0.0, 'rdd_pairs': 0.0,
              'rdd_pairs_teacher': 0.0, 'rdd_pairs_student': 0.0, 'rdd_kept_fraction': 0.0, 'rdd_disp_mean': 0.0,
              'rdd_disp_kept': 0.0, 'rdd_disp_dropped': 0.0}
        if self.cfg.reg_weight > 0:
            tb['rdd_logit_reg'] = 0.0
        if pairs is None:
            return tb
        bsz = float(pairs.pairs_per_sample.shape[0])
        kept = weights > 0
        d = disparity.d
        tb.update({f'rdd_{k}': float(v.detach()) for k, v in terms.items()})
        tb.update(rdd_loss=float(loss.detach()), rdd_pairs=len(pairs.proposals) / bsz,
                  rdd_pairs_teacher=float((pairs.proposals.source == 0).sum()) / bsz,
                  rdd_pairs_student=float((pairs.proposals.source == 1).sum()) / bsz,
                  rdd_kept_fraction=float(kept.float().mean()), rdd_disp_mean=float(d.mean()),
                  rdd_disp_kept=float(d[kept].mean()) if bool(kept.any()) else 0.0,
                  rdd_disp_dropped=float(d[~kept].mean()) if bool((~kept).any()) else 0.0)
        return tb

    def _check_inputs(self, teacher, student):
        for who, maps, facts in (('teacher', teacher, self.teacher_facts), ('student', student, self.student_facts)):
            for key in (FEATURE_KEY, 'pred_dicts'):
                if key not in maps:
                    raise KeyError(f'RDDLoss: {who} outputs have no {key!r} (keys: {sorted(maps)})')
            facts.grid.check_shape(*maps[FEATURE_KEY].shape[-2:], what=f'{who} {FEATURE_KEY}')
            facts.grid.check_shape(*maps['pred_dicts'][0]['hm'].shape[-2:], what=f'{who} heatmaps')
        if teacher[FEATURE_KEY].shape[0] != student[FEATURE_KEY].shape[0]:
            raise ValueError(f'RDDLoss: teacher batch {teacher[FEATURE_KEY].shape[0]} != student batch '
                             f'{student[FEATURE_KEY].shape[0]}')
