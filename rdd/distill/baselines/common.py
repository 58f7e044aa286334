"""Helpers shared by the baseline KD losses: 1x1 adapters with channel checks, grid alignment, GT rows."""
import torch.nn as nn

from rdd.distill.rdd.roi_grid_pool import resample_to_geometry

from ..registry import KDConfigError


def build_adapter(cfg, t_ch, s_ch, loss_name):
    """1x1 conv ``s_ch -> t_ch`` (with bias, no activation). ``cfg`` (``ADAPTER``) may state
    ``STUDENT_CHANNELS`` / ``TEACHER_CHANNELS``; a value that differs from the models' is a KDConfigError."""
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - {'STUDENT_CHANNELS', 'TEACHER_CHANNELS'})
    if unknown:
        raise KDConfigError(f'{loss_name}.ADAPTER: unknown key(s) {unknown} (allowed: STUDENT_CHANNELS, '
                            f'TEACHER_CHANNELS)')
    for key, actual in (('STUDENT_CHANNELS', s_ch), ('TEACHER_CHANNELS', t_ch)):
        if key in cfg and int(cfg[key]) != int(actual):
            raise KDConfigError(f'{loss_name}.ADAPTER.{key} is {cfg[key]} but the model gives {actual} channels')
    return nn.Conv2d(int(s_ch), int(t_ch), kernel_size=1, bias=True)


def resample_map(feature_map, src_grid, dst_grid):
    """Resample a ``(B, C, H, W)`` map placed by GridInfo ``src_grid`` onto ``dst_grid`` (identity if equal)."""
    if src_grid.same_as(dst_grid) and tuple(feature_map.shape[-2:]) == tuple(dst_grid.map_size):
        return feature_map
    return resample_to_geometry(feature_map, src_grid.bev_geometry(), dst_grid.bev_geometry(), dst_grid.map_size)


def valid_gt(gt_boxes):
    """Per sample, the non-padding rows of ``gt_boxes`` (B, M, 8+): list of (M_b, 8+) tensors."""
    return [g[(g[:, 3:6].abs().sum(dim=1) > 0) & (g[:, -1] > 0)] for g in gt_boxes]
