"""FitNet: adapted full-map feature MSE between the student's and the teacher's BEV maps."""
from dataclasses import dataclass, field

import torch.nn as nn
import torch.nn.functional as F

from rdd.config_schema import parse_section
from rdd.ops.bev_pool import resample_to_grid

from ..registry import KD_LOSSES
from .common import AdapterConfig, build_adapter


@dataclass(frozen=True)
class FitNetConfig:
    feature_key: str = 'spatial_features_2d'
    adapter: AdapterConfig = field(default_factory=AdapterConfig)


@KD_LOSSES.register()
class FitNetLoss(nn.Module):
    """``L = mean over (B, C_t, H_t, W_t) of (A(F_s) - F_t)^2``, ``A`` a 1x1 conv to the teacher width.

    When the grids differ the adapted student map is bilinearly resampled onto the teacher grid (metric
    placement; zero outside the student's range).

    Config (:class:`FitNetConfig`): ``FEATURE_KEY`` (default ``spatial_features_2d``), ``ADAPTER`` (optional
    channel assertions)::

        KD_LOSSES: [{NAME: FitNetLoss, WEIGHT: 1.0, FEATURE_KEY: spatial_features_2d}]
    """
    REQUIRES = ('features',)

    def __init__(self, teacher_channels, student_channels, teacher_grid, student_grid,
                 feature_key='spatial_features_2d', adapter_cfg=AdapterConfig()):
        super().__init__()
        self.feature_key = feature_key
        self.feature_keys = (feature_key,)
        self.teacher_grid, self.student_grid = teacher_grid, student_grid
        self.adapter = build_adapter(adapter_cfg, teacher_channels, student_channels, 'FitNetLoss')

    @classmethod
    def from_config(cls, cfg, context):
        c = parse_section(FitNetConfig, cfg, 'FitNetLoss')
        t_ch, s_ch = context.feature_channels(c.feature_key, 'FitNetLoss')
        context.check_grid('FitNetLoss')
        return cls(t_ch, s_ch, context.teacher.grid, context.student.grid, c.feature_key, c.adapter)

    def forward(self, teacher, student, batch_dict):
        """teacher / student ``[FEATURE_KEY]``: (B, C, H, W) -> (scalar loss, tb_dict)."""
        ft = teacher[self.feature_key].detach()
        fs = resample_to_grid(self.adapter(student[self.feature_key]), self.student_grid, self.teacher_grid)
        if fs.shape != ft.shape:
            raise ValueError(f'FitNetLoss: adapted student {self.feature_key} {tuple(fs.shape)} vs teacher '
                             f'{tuple(ft.shape)}')
        loss = F.mse_loss(fs, ft)
        return loss, {'fitnet_mse': float(loss.detach())}
