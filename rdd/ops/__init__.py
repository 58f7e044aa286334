"""Geometric ops in plain torch, and the spconv CPU compatibility layer.

``rdd.ops.spconv_compat`` is imported lazily (``rdd.ops.spconv`` or an explicit import) so that importing the
IoU / point ops does not load spconv. Importing ``rdd.ops.spconv_compat`` applies its patches.
"""
import importlib

from .points_in_boxes import points_in_boxes_index, points_in_boxes_mask
from .rotated_iou import boxes3d_iou, boxes_bev_intersection, boxes_bev_iou, class_agnostic_nms, rotated_nms

__all__ = ['boxes_bev_iou', 'boxes_bev_intersection', 'boxes3d_iou', 'rotated_nms', 'class_agnostic_nms',
           'points_in_boxes_mask', 'points_in_boxes_index', 'spconv', 'spconv_cpu_self_check']

_LAZY = {'spconv', 'spconv_cpu_self_check'}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module('.spconv_compat', __name__), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
