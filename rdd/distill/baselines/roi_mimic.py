"""RoI-feature mimic: MSE between teacher and adapted student BEV features pooled in the GT boxes."""
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from rdd.config_schema import parse_section
from rdd.ops.bev_pool import roi_grid_pool

from ..kd_utils import adapt_regions, zero_loss
from ..registry import KD_LOSSES
from .common import AdapterConfig, build_adapter, valid_gt


@dataclass(frozen=True)
class RoIMimicConfig:
    feature_key: str = 'spatial_features_2d'
    grid_size: int = 7
    adapter: AdapterConfig = field(default_factory=AdapterConfig)

    def __post_init__(self):
        if self.grid_size < 1:
            raise ValueError(f'GRID_SIZE must be >= 1, got {self.grid_size}')


@KD_LOSSES.register()
class RoIMimicLoss(nn.Module):
    """Rotated-RoI grid pooling (bilinear, ``GRID_SIZE`` x ``GRID_SIZE`` cells) of every GT box from the teacher
    map and from the student map (each at its own grid, so no resampling is needed), the student regions through
    a 1x1 adapter; ``L = mean over boxes, channels, cells of (A(R_s) - R_t)^2``; 0 when the batch has no GT box.

    Config (:class:`RoIMimicConfig`): ``FEATURE_KEY`` (default ``spatial_features_2d``), ``GRID_SIZE`` (7),
    ``ADAPTER``::

        KD_LOSSES: [{NAME: RoIMimicLoss, WEIGHT: 1.0, GRID_SIZE: 7}]
    """
    REQUIRES = ('features',)

    def __init__(self, teacher_channels, student_channels, teacher_grid, student_grid,
                 feature_key='spatial_features_2d', grid_size=7, adapter_cfg=AdapterConfig()):
        super().__init__()
        self.feature_key, self.feature_keys = feature_key, (feature_key,)
        self.grid_size = int(grid_size)
        self.teacher_grid, self.student_grid = teacher_grid, student_grid
        self.adapter = build_adapter(adapter_cfg, teacher_channels, student_channels, 'RoIMimicLoss')

    @classmethod
    def from_config(cls, cfg, context):
        c = parse_section(RoIMimicConfig, cfg, 'RoIMimicLoss')
        t_ch, s_ch = context.feature_channels(c.feature_key, 'RoIMimicLoss')
        context.check_grid('RoIMimicLoss')
        return cls(t_ch, s_ch, context.teacher.grid, context.student.grid, c.feature_key, c.grid_size, c.adapter)

    def forward(self, teacher, student, batch_dict):
        """Uses ``batch_dict['gt_boxes']`` (B, M, 10) and the ``FEATURE_KEY`` maps -> (scalar, tb_dict)."""
        ft, fs = teacher[self.feature_key].detach(), student[self.feature_key]
        gts = valid_gt(batch_dict['gt_boxes'])
        boxes = torch.cat([g[:, :7] for g in gts], dim=0).to(fs.dtype)
        bidx = torch.cat([torch.full((g.shape[0],), b, dtype=torch.long, device=fs.device)
                          for b, g in enumerate(gts)])
        if boxes.shape[0] == 0:
            return zero_loss(self, fs) + fs.sum() * 0.0, {'roi_mimic_mse': 0.0, 'roi_mimic_boxes': 0.0}
        rt = roi_grid_pool(ft, boxes, bidx, self.teacher_grid, self.grid_size)
        rs = adapt_regions(self.adapter, roi_grid_pool(fs, boxes, bidx, self.student_grid, self.grid_size))
        loss = (rs - rt).pow(2).mean()
        return loss, {'roi_mimic_mse': float(loss.detach()), 'roi_mimic_boxes': float(boxes.shape[0]) / len(gts)}
