"""GID-F: feature- and relation-based general instance distillation (Dai et al., CVPR 2021) on BEV neck maps."""
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from rdd.config_schema import parse_section
from rdd.ops.bev_pool import roi_grid_pool

from ..kd_utils import adapt_regions, zero_loss
from ..registry import KD_LOSSES
from .common import AdapterConfig, build_adapter
from .gism import GISMConfig, select_general_instances
from .head_maps import require_box_maps


@dataclass(frozen=True)
class GIDFeatureConfig:
    feature_key: str = 'spatial_features_2d'
    grid_size: int = 7
    lambda_feat: float = 0.005
    lambda_rel: float = 40.0
    gism: GISMConfig = field(default_factory=GISMConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)

    def __post_init__(self):
        if self.grid_size < 1 or self.lambda_feat < 0 or self.lambda_rel < 0:
            raise ValueError(f'GRID_SIZE must be >= 1 and LAMBDA_FEAT, LAMBDA_REL >= 0, got {self.grid_size}, '
                             f'{self.lambda_feat}, {self.lambda_rel}')


def relation_loss(t_feats, s_feats):
    """GID's relation term (L_Relation) for one sample's K instances: pairwise L2 distances of the flattened instance
    features, each set divided by its mean pairwise distance, compared with smooth L1 (beta 1), averaged over the
    K (K - 1) / 2 pairs; 0 for K < 2. t_feats (K, ...), s_feats (K, ...) (any widths)."""
    k = t_feats.shape[0]
    if k < 2:
        return s_feats.sum() * 0.0
    i, j = torch.triu_indices(k, k, offset=1, device=s_feats.device)

    def normalised_distances(feats):
        flat = feats.reshape(k, -1)
        dist = torch.sqrt((flat[i] - flat[j]).pow(2).sum(dim=1).clamp_min(1e-12))
        return dist / dist.mean().clamp_min(1e-12)

    return F.smooth_l1_loss(normalised_distances(s_feats), normalised_distances(t_feats), beta=1.0)


@KD_LOSSES.register()
class GIDFeatureLoss(nn.Module):
    """GID-F: GID's feature-based (L_Feature) and relation-based (L_Relation) losses on the general instances (GIs)
    selected by GISM (:func:`select_general_instances`: where teacher and student heatmaps disagree most, NMS 0.3,
    top 10 per sample)::

        L_feat = 1 / (N G^2) * sum_i sum_cells ||A(R_s,i) - R_t,i||_2^2           (channels summed)
        L_rel  = 1 / B * sum_b mean_{i<j in b} smoothL1(d_s(i, j) / mean d_s, d_t(i, j) / mean d_t)
        L      = LAMBDA_FEAT * L_feat + LAMBDA_REL * L_rel

    ``R_t,i`` / ``R_s,i``: the GI box pooled with rotated RoI grid pooling (``GRID_SIZE`` x ``GRID_SIZE``, 7 as
    SparseKD's CenterPoint RoI feature KD; GID pools with RoIAlign) from the teacher and student ``FEATURE_KEY``
    maps, each at its own grid; ``A``: 1x1 conv to the teacher width applied to the pooled student cells (ours;
    GID's adapter is a conv on the map, a 1x1 one commutes with pooling); ``d``: pairwise L2 distances of the
    flattened instance features, the student's un-adapted (the normalised distances need no common width, as
    SparseKD computes GID's relation term). N: instances in the batch, B: samples. Weights λ_feat = 5e-3 and
    λ_rel = 40: GID's, as its public detectron2 reimplementation sets them (``DISTILL.LOSS.FEATURE.WEIGHT``,
    ``RELATION.WEIGHT``). 0 with every parameter in the graph when no instance is selected.

    Config (:class:`GIDFeatureConfig`)::

        KD_LOSSES: [{NAME: GIDFeatureLoss, WEIGHT: 1.0, FEATURE_KEY: spatial_features_2d, GRID_SIZE: 7,
                     LAMBDA_FEAT: 0.005, LAMBDA_REL: 40.0,
                     GISM: {NMS_THRESH: 0.3, TOP_K: 10, PRE_NMS_TOPK: 1000, SCORE_THRESH: 0.0}}]
    """
    REQUIRES = ('features', 'pred_dicts')

    def __init__(self, teacher_channels, student_channels, context, cfg=GIDFeatureConfig()):
        super().__init__()
        self.cfg = cfg
        self.feature_key, self.feature_keys = cfg.feature_key, (cfg.feature_key,)
        self.teacher_grid, self.student_grid, self.layout = context.teacher.grid, context.student.grid, \
            context.student.head
        self.adapter = build_adapter(cfg.adapter, teacher_channels, student_channels, 'GIDFeatureLoss')

    @classmethod
    def from_config(cls, cfg, context):
        c = parse_section(GIDFeatureConfig, cfg, 'GIDFeatureLoss')
        t_ch, s_ch = context.feature_channels(c.feature_key, 'GIDFeatureLoss')
        context.check_grid('GIDFeatureLoss')
        context.check_same_heads('GIDFeatureLoss')
        require_box_maps(context.student.head, 'GIDFeatureLoss')
        return cls(t_ch, s_ch, context, c)

    def forward(self, teacher, student, batch_dict):
        """``FEATURE_KEY`` maps (B, C, H, W) and both ``pred_dicts`` -> (scalar loss, tb_dict)."""
        ft, fs = teacher[self.feature_key].detach(), student[self.feature_key]
        gis = select_general_instances(teacher['pred_dicts'], student['pred_dicts'], self.teacher_grid,
                                       self.student_grid, self.layout, self.cfg.gism)
        bsz = fs.shape[0]
        if len(gis) == 0:
            return zero_loss(self, fs) + fs.sum() * 0.0, {'gid_feat': 0.0, 'gid_rel': 0.0, 'gid_instances': 0.0}
        g = self.cfg.grid_size
        boxes = gis.boxes.to(fs.dtype)
        rt = roi_grid_pool(ft, boxes, gis.batch_idx, self.teacher_grid, g)  # (N, G^2, Ct)
        rs = roi_grid_pool(fs, boxes, gis.batch_idx, self.student_grid, g)  # (N, G^2, Cs)
        feat = (adapt_regions(self.adapter, rs) - rt).pow(2).sum() / (len(gis) * g * g)
        rel = sum(relation_loss(rt[gis.batch_idx == b], rs[gis.batch_idx == b]) for b in range(bsz)) / bsz
        loss = self.cfg.lambda_feat * feat + self.cfg.lambda_rel * rel
        return loss, {'gid_feat': float(feat.detach()), 'gid_rel': float(rel.detach()),
                      'gid_instances': len(gis) / bsz}
