"""The KD-loss registry ``KD_LOSSES`` and :func:`build_kd_loss`, the one way every KD loss is built.

Contract for a KD loss (an ``nn.Module`` registered with ``@KD_LOSSES.register()``; its class name is its
config ``NAME``):

* ``from_config(cfg, context)`` classmethod: ``cfg`` is one ``MODEL.KD_LOSSES`` entry without the keys the
  Distiller consumes (``NAME``, ``WEIGHT``, ``TAG``); the loss parses it into its frozen config dataclass with
  :func:`rdd.config_schema.parse_section` (unknown keys and wrong types are errors naming the key).
  ``context`` is a :class:`rdd.distill.context.KDContext` (teacher / student grids, feature widths, head
  layouts, grid policy). Build-time problems raise :class:`rdd.errors.KDConfigError` (or ConfigError);
  :func:`build_kd_loss` prefixes the entry (``MODEL.KD_LOSSES[i]``) to the message.
* ``forward(teacher, student, batch_dict) -> (loss, tb_dict)``: ``teacher`` / ``student`` are the dicts made by
  :func:`rdd.distill.feature_taps.tap_outputs`: the tapped feature maps by key (e.g. ``spatial_features_2d``
  (B, C, H, W)), ``pred_dicts`` (list over head groups of raw head maps, ``hm`` as logits), ``target_dicts``
  (the student's CenterPoint targets, student dict only) and ``boxes`` (per-sample decoded dicts
  ``pred_boxes (N, 9)``, ``pred_scores (N,)``, ``pred_labels (N,)`` 1-based, or None; the student's detached
  and computed only when a loss lists ``'student_boxes'`` in ``REQUIRES``). ``batch_dict`` is the student's
  batch (its ``gt_boxes`` (B, M, 10) are the student's targets). ``loss`` is a scalar tensor, un-weighted (the
  Distiller multiplies it by ``WEIGHT``), 0 with every parameter of the loss in the graph when there is nothing
  to distil (:func:`rdd.distill.kd_utils.zero_loss`); ``tb_dict`` holds floats.
* optional attributes: ``REQUIRES`` (subset of ``DEFAULT_REQUIRES``; default all), ``feature_keys`` (the
  batch_dict keys to tap, default ``('spatial_features_2d',)``), ``min_box_score`` (the lowest decoded-box score
  the loss uses, lets the Distiller decode fewer boxes, exactly) and ``prepare_student_batch(teacher, batch_dict)
  -> batch_dict`` (called after the teacher forward and before the student's, e.g. to change the targets).
"""
import re

import torch.nn as nn

from rdd.errors import ConfigError, KDConfigError, RegistryError
from rdd.registry import Registry

from .context import KDContext

__all__ = ['KD_LOSSES', 'DEFAULT_REQUIRES', 'DISTILLER_KEYS', 'build_kd_loss', 'kd_loss_key']

KD_LOSSES = Registry('KD loss', config_key='MODEL.KD_LOSSES[i].NAME')
DEFAULT_REQUIRES = ('features', 'pred_dicts', 'boxes', 'student_boxes', 'target_dicts')
DISTILLER_KEYS = ('NAME', 'WEIGHT', 'TAG')  # consumed by the Distiller, not passed to the loss

_KEY_RE = re.compile(r'^[A-Za-z_][A-Za-z0-9_]*$')


def kd_loss_key(loss_cfg, index, taken=()):
    """The key of ``MODEL.KD_LOSSES[index]``: its ``TAG`` if set, else its ``NAME``. KDConfigError naming the entry
    when the key is not an identifier (it names ``kd_losses.<key>.*`` parameters) or is already in ``taken`` (the
    keys of the entries before it, in order)."""
    key = loss_cfg.get('TAG', None) or loss_cfg.get('NAME', None)
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise KDConfigError(f'MODEL.KD_LOSSES[{index}].TAG: {key!r} is not a valid key (letters, digits, _; '
                            f'no dots)')
    taken = list(taken)
    if key in taken:
        raise KDConfigError(f'MODEL.KD_LOSSES[{index}]: key {key!r} is already used by MODEL.KD_LOSSES'
                            f'[{taken.index(key)}]; give repeated losses distinct TAGs '
                            f'(e.g. TAG: {key.lower()}_{index})')
    return key


def build_kd_loss(cfg, context: KDContext, index=None) -> nn.Module:
    """Build one ``MODEL.KD_LOSSES`` entry: ``KD_LOSSES.get(NAME).from_config(options, context)``.

    Any ConfigError of the loss (and an unknown / missing ``NAME``) becomes a KDConfigError prefixed with the
    entry, e.g. ``MODEL.KD_LOSSES[0] (RDDLoss): RDDLoss.TAU: expected a number, got str 'x'``.
    """
    where = f'MODEL.KD_LOSSES[{index}]' if index is not None else 'MODEL.KD_LOSSES entry'
    if not isinstance(cfg, dict) or 'NAME' not in cfg:
        raise KDConfigError(f'{where} needs a NAME (known: {KD_LOSSES.names()})')
    name = cfg['NAME']
    try:
        loss_cls = KD_LOSSES.get(name)
    except RegistryError as err:
        raise KDConfigError(f'{where}.NAME: {err}') from None
    options = {k: v for k, v in cfg.items() if k not in DISTILLER_KEYS}
    try:
        module = loss_cls.from_config(options, context)
    except ConfigError as err:
        raise KDConfigError(f'{where} ({name}): {err}') from None
    if not isinstance(module, nn.Module):
        raise KDConfigError(f'{where}: {name}.from_config returned {type(module).__name__}, not an nn.Module')
    return module
