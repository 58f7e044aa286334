"""Helpers shared by the baseline KD losses: the optional ``ADAPTER`` section, 1x1 adapters, GT rows."""
from dataclasses import dataclass
from typing import Optional

import torch.nn as nn

from rdd.errors import KDConfigError


@dataclass(frozen=True)
class AdapterConfig:
    """``ADAPTER``: optional assertions of the adapter's widths (a value that differs from the models' is an
    error, so a config states what it was written for)."""
    student_channels: Optional[int] = None
    teacher_channels: Optional[int] = None


def build_adapter(cfg: AdapterConfig, t_ch, s_ch, loss_name, kernel_size=1, relu=False):
    """Conv ``s_ch -> t_ch`` (``kernel_size`` x ``kernel_size``, 'same' padding, with bias; default 1x1, no
    activation), followed by a ReLU when ``relu``; KDConfigError when ``cfg`` states other widths."""
    for key, stated, actual in (('STUDENT_CHANNELS', cfg.student_channels, s_ch),
                                ('TEACHER_CHANNELS', cfg.teacher_channels, t_ch)):
        if stated is not None and int(stated) != int(actual):
            raise KDConfigError(f'{loss_name}.ADAPTER.{key} is {stated} but the model gives {actual} channels')
    conv = nn.Conv2d(int(s_ch), int(t_ch), kernel_size=kernel_size, padding=kernel_size // 2, bias=True)
    return nn.Sequential(conv, nn.ReLU()) if relu else conv


def valid_gt(gt_boxes):
    """Per sample, the non-padding rows of ``gt_boxes`` (B, M, 8+): list of (M_b, 8+) tensors."""
    return [g[(g[:, 3:6].abs().sum(dim=1) > 0) & (g[:, -1] > 0)] for g in gt_boxes]
