"""Copy a detector's outputs by batch_dict key right after its forward (no hooks), and plan what to copy.

A detector writes its intermediate maps into the batch_dict it is given and its raw head maps into
``dense_head.forward_ret_dict``; both containers are reused or mutated by later forwards (the next forward of
the same model overwrites ``forward_ret_dict``). :func:`tap_outputs` therefore copies the containers (new dicts
and lists holding the same tensors) immediately after the forward, so what the KD losses see cannot change
afterwards. :class:`TapPlan` says which maps to tap and which boxes to decode for a set of KD losses.
"""
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np
import torch

from .registry import DEFAULT_REQUIRES


def decode_post_cfg(model, min_score):
    """POST_PROCESSING override (dict, or None for none) for decoding ``model``'s boxes for KD losses that use no
    box scored below ``min_score``: ``SCORE_THRESH`` raised to just below it (the head keeps ``score >
    SCORE_THRESH``, a loss may keep ``score >= min_score``). The boxes scored ``>= min_score`` are exactly those of
    the plain decode: a lower-scored box never suppresses a higher-scored one in NMS nor displaces it from the NMS
    caps. (A top-K cut would not be exact: a candidate outside a head's top-K can survive NMS.)"""
    if min_score is None:
        return None
    below = float(np.nextafter(np.float32(min_score), np.float32(-np.inf)))
    own = float(model.dense_head.model_cfg.POST_PROCESSING.SCORE_THRESH)
    return {'SCORE_THRESH': below} if below > own else None


@dataclass(frozen=True)
class TapPlan:
    """What a Distiller takes from its two forwards for its KD losses.

    Attributes:
        feature_keys: batch_dict maps tapped on both models (the losses' ``feature_keys``, sorted).
        teacher_boxes / student_boxes: decode the teacher's / the student's boxes (a loss ``REQUIRES`` them;
            student boxes need teacher boxes too).
        decode_cfgs: ``{'teacher': post_cfg, 'student': post_cfg}`` overrides for the decode
            (:func:`decode_post_cfg` of the lowest ``min_box_score`` of the box consumers; None: plain decode).
    """
    feature_keys: Tuple[str, ...]
    teacher_boxes: bool
    student_boxes: bool
    decode_cfgs: Dict[str, Optional[dict]]

    @classmethod
    def for_losses(cls, losses, teacher, student):
        """The plan for the KD loss modules ``losses`` between the detectors ``teacher`` and ``student``."""
        losses = list(losses)
        keys = tuple(sorted({k for loss in losses for k in getattr(loss, 'feature_keys', ('spatial_features_2d',))}))
        requires = {r for loss in losses for r in getattr(loss, 'REQUIRES', DEFAULT_REQUIRES)}
        consumers = [loss for loss in losses
                     if {'boxes', 'student_boxes'} & set(getattr(loss, 'REQUIRES', DEFAULT_REQUIRES))]
        scores = [getattr(loss, 'min_box_score', None) for loss in consumers]
        min_score = min(float(v) for v in scores) if scores and None not in scores else None
        student_boxes = 'student_boxes' in requires
        return cls(feature_keys=keys, teacher_boxes='boxes' in requires or student_boxes, student_boxes=student_boxes,
                   decode_cfgs={'teacher': decode_post_cfg(teacher, min_score),
                                'student': decode_post_cfg(student, min_score)})

def copy_pred_dicts(pred_dicts, detach=False):
    """New list of new dicts holding the same (or detached) tensors.

    ``pred_dicts``: list over head groups of ``{name: (B, C, H, W)}``.
    """
    return [{k: (v.detach() if detach else v) for k, v in d.items()} for d in pred_dicts]


def tap_outputs(model, batch_dict, feature_keys=('spatial_features_2d',), boxes=None, with_targets=False,
                detach=False, pred_dicts=None):
    """Take a detector's outputs from ``batch_dict`` and its dense head, copying the containers.

    Args:
        model: the detector that just ran on ``batch_dict`` (has ``dense_head.forward_ret_dict``).
        batch_dict: the dict the model's forward filled.
        feature_keys: batch_dict keys to take (KeyError naming the key and the available ones when absent).
        boxes: per-sample decoded dicts to store under ``boxes`` (or None).
        with_targets: also copy ``forward_ret_dict['target_dicts']`` (training mode only).
        detach: detach every tensor (teacher outputs, made under no_grad anyway).
        pred_dicts: the raw head maps when the caller computed them (else ``forward_ret_dict['pred_dicts']``).
    Returns:
        dict: ``{key: tensor for key in feature_keys}``, ``pred_dicts`` (list over head groups of dicts of raw
        maps, ``hm`` as logits), ``boxes``, and ``target_dicts`` when asked.
    """
    out = {}
    for key in feature_keys:
        if key not in batch_dict:
            raise KeyError(f'{type(model).__name__} did not write {key!r} into batch_dict '
                           f'(available: {sorted(k for k in batch_dict if torch.is_tensor(batch_dict[k]))})')
        value = batch_dict[key]
        out[key] = value.detach() if detach else value
    ret = model.dense_head.forward_ret_dict
    if pred_dicts is None:
        if 'pred_dicts' not in ret:
            raise KeyError(f'{type(model).__name__}.dense_head.forward_ret_dict has no pred_dicts after the forward')
        pred_dicts = ret['pred_dicts']
    out['pred_dicts'] = copy_pred_dicts(pred_dicts, detach=detach)
    if with_targets:
        out['target_dicts'] = {k: list(v) for k, v in ret['target_dicts'].items()}
    out['boxes'] = boxes
    return out


def run_to_head(model, batch_dict):
    """Run a CenterPoint-style detector's modules up to (not including) its ``dense_head``; returns the filled
    ``batch_dict`` (``spatial_features_2d`` (B, C, H, W) and what the earlier modules write)."""
    for module in model.module_list:
        if module is model.dense_head:
            break
        batch_dict = module(batch_dict)
    return batch_dict


@torch.no_grad()
def raw_head_maps(head, features):
    """CenterHead's raw maps without its decoding / target assignment: ``shared_conv`` then every head group
    (OpenPCDet attribute names). features (B, C, H, W) -> list over groups of ``{name: (B, C_name, H, W)}``."""
    x = head.shared_conv(features)
    return [group(x) for group in head.heads_list]


@torch.no_grad()
def decode_boxes(model, pred_dicts, batch_size, post_cfg=None):
    """Decode raw head maps with the model's post-processing (``post_cfg`` overrides keys of it, see
    ``CenterHead.decode``), without gradient.

    Returns a list over samples of ``pred_boxes (N, 9)``, ``pred_scores (N,)``, ``pred_labels (N,)`` (1-based),
    all detached.
    """
    detached = copy_pred_dicts(pred_dicts, detach=True)
    boxes = model.dense_head.decode(detached, batch_size, post_cfg=post_cfg)
    return [{k: v.detach() for k, v in d.items()} for d in boxes]
