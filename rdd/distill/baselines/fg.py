"""FG: fine-grained feature imitation (Wang et al., CVPR 2019) inside the GT foreground of a CenterPoint student."""
from dataclasses import dataclass, field

import torch.nn as nn

from rdd.config_schema import parse_section
from rdd.ops.bev_pool import resample_to_grid

from ..kd_utils import zero_loss
from ..registry import KD_LOSSES
from .common import AdapterConfig, build_adapter


@dataclass(frozen=True)
class FGConfig:
    feature_key: str = 'spatial_features_2d'
    fg_thresh: float = 0.0
    adapter_kernel: int = 3
    adapter: AdapterConfig = field(default_factory=AdapterConfig)

    def __post_init__(self):
        if not 0.0 <= self.fg_thresh < 1.0:
            raise ValueError(f'FG_THRESH must be in [0, 1), got {self.fg_thresh}')
        if self.adapter_kernel < 1 or self.adapter_kernel % 2 == 0:
            raise ValueError(f'ADAPTER_KERNEL must be an odd integer >= 1, got {self.adapter_kernel}')


@KD_LOSSES.register()
class FGLoss(nn.Module):
    """FG's imitation loss (Wang et al., "Distilling Object Detectors with Fine-grained Feature Imitation", CVPR
    2019: its imitation loss, with the released code's normalisation), on the neck maps::

        M(i, j) = [max over head groups and classes of Y_s(i, j) > FG_THRESH]            (B, H, W)
        L       = 1 / (2 N_M) * sum_{b,i,j} M(i, j) * sum_c (A(F_s) - F_t)^2(c, i, j),   N_M = sum M

    FG's mask (anchors whose IoU with a GT box exceeds ψ = 0.5 of that box's best anchor) needs anchors; a
    CenterPoint student has none, so, as SparseKD adapts FG (``fg_mask`` of its feature KD), the mask is the
    foreground of the student's own CenterPoint targets ``Y_s`` (the GT gaussians of radius CenterPoint's
    ``gaussian_radius``): with ``FG_THRESH`` 0 every cell of a gaussian's support. ``A`` is FG's adapter, a
    ``ADAPTER_KERNEL`` x ``ADAPTER_KERNEL`` conv (3, FG's) + ReLU to the teacher's width. When the grids differ
    the teacher map is resampled (bilinear, metric placement) onto the student grid, where the targets are. 0,
    with every parameter in the graph, when the batch has no foreground cell. The paper's loss weight λ = 0.01
    (FG's ``imitation_loss_weight``) is the entry's ``WEIGHT``.

    Config (:class:`FGConfig`)::

        KD_LOSSES: [{NAME: FGLoss, WEIGHT: 0.01, FEATURE_KEY: spatial_features_2d, FG_THRESH: 0.0,
                     ADAPTER_KERNEL: 3}]
    """
    REQUIRES = ('features', 'target_dicts')

    def __init__(self, teacher_channels, student_channels, teacher_grid, student_grid, cfg=FGConfig()):
        super().__init__()
        self.feature_key, self.feature_keys = cfg.feature_key, (cfg.feature_key,)
        self.fg_thresh = float(cfg.fg_thresh)
        self.teacher_grid, self.student_grid = teacher_grid, student_grid
        self.adapter = build_adapter(cfg.adapter, teacher_channels, student_channels, 'FGLoss',
                                     kernel_size=cfg.adapter_kernel, relu=True)

    @classmethod
    def from_config(cls, cfg, context):
        c = parse_section(FGConfig, cfg, 'FGLoss')
        t_ch, s_ch = context.feature_channels(c.feature_key, 'FGLoss')
        context.check_grid('FGLoss')
        return cls(t_ch, s_ch, context.teacher.grid, context.student.grid, c)

    def foreground_mask(self, heatmaps):
        """Student target heatmaps (list over groups of (B, C_h, H, W)) -> (B, H, W) float mask."""
        peak = heatmaps[0].amax(dim=1)
        for heatmap in heatmaps[1:]:
            peak = peak.maximum(heatmap.amax(dim=1))
        return (peak > self.fg_thresh).to(peak.dtype)

    def forward(self, teacher, student, batch_dict):
        """teacher / student ``[FEATURE_KEY]`` (B, C, H, W), student ``target_dicts`` -> (scalar loss, tb_dict)."""
        fs = self.adapter(student[self.feature_key])
        ft = resample_to_grid(teacher[self.feature_key].detach(), self.teacher_grid, self.student_grid)
        mask = self.foreground_mask(student['target_dicts']['heatmaps'])
        if ft.shape != fs.shape or mask.shape != fs.shape[:1] + fs.shape[2:]:
            raise ValueError(f'FGLoss: adapted student {self.feature_key} {tuple(fs.shape)}, teacher on the student '
                             f'grid {tuple(ft.shape)}, foreground mask {tuple(mask.shape)} do not match')
        area = mask.sum()
        if float(area) == 0.0:
            return zero_loss(self, fs) + fs.sum() * 0.0, {'fg_mse': 0.0, 'fg_cells': 0.0}
        loss = ((fs - ft).pow(2).sum(dim=1) * mask).sum() / (2.0 * area)
        return loss, {'fg_mse': float(loss.detach()), 'fg_cells': float(area) / mask.shape[0]}
