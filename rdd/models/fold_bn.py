"""A cheaper frozen model for inference: BatchNorm folded into the preceding convolution, run in inference mode.

:func:`fold_batchnorm` returns a folded **copy** (the model passed in is never changed, so a model whose parameters
sit in an optimizer is safe): every eval-mode ``BatchNorm1d``/``BatchNorm2d`` that directly follows a convolution
-- consecutive children of a ``nn.Sequential`` / ``spconv.SparseSequential``, or the ``conv1/bn1``,
``conv2/bn2`` pairs of a residual block -- is merged into it and replaced by ``nn.Identity``. With
``s = gamma / sqrt(running_var + eps)``, per output channel:

    W' = s * W,        b' = s * (b - running_mean) + beta        (b = 0 for a conv without bias)

which is exact up to float rounding (computed in float64, stored in the weight's dtype). Convolutions:
``nn.Conv2d`` (weight ``(out, in, kh, kw)``), ``nn.ConvTranspose2d`` (``(in, out, kh, kw)``, groups 1) and
spconv's ``SubMConv3d`` / ``SparseConv3d`` / ``SparseInverseConv3d`` (KRSC ``(out, kz, ky, kx, in)`` here; the
other spconv layouts are handled too). The copy is in eval mode with ``requires_grad=False`` everywhere.

The folded model is for **inference only**: its ``state_dict`` differs from the original (no BatchNorm entries;
convolutions that had no bias now have one), so do not save it as a checkpoint or load a checkpoint into it.
Folding needs running statistics: a BatchNorm in training mode or without running statistics (e.g. a teacher
with ``TEACHER_BN: batch``) is a ValueError.

:func:`freeze_for_inference` adds to the folded copy the channels-last layout of its dense convolution weights
(the BEV maps then stay channels-last from the first 2D conv on; same values, a different memory order): on CPU
the CenterPoint head's many 64-channel convs run ~1.6x faster that way.

:func:`run_frozen` runs a model under ``torch.inference_mode`` and hands back its outputs as ordinary tensors, so
that a loss may use them inside the caller's autograd graph (inference tensors cannot be saved for backward).
"""
import copy

import torch
import torch.nn as nn

from rdd.ops.spconv_compat import spconv

__all__ = ['fold_batchnorm', 'freeze_for_inference', 'run_frozen', 'count_batchnorms']

_DENSE = (nn.Conv2d, nn.ConvTranspose2d)
_SPARSE = (spconv.SubMConv3d, spconv.SparseConv3d, spconv.SparseInverseConv3d)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d)
_ATTR_PAIRS = (('conv1', 'bn1'), ('conv2', 'bn2'))


def count_batchnorms(model):
    """Number of BatchNorm modules in ``model``."""
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _out_channel_dim(conv):
    """Index of the output-channel axis of ``conv.weight``."""
    if isinstance(conv, nn.ConvTranspose2d):
        if conv.groups != 1:
            raise ValueError('fold_batchnorm: grouped ConvTranspose2d is not supported')
        return 1
    if isinstance(conv, _SPARSE):  # spconv's own choice of layout (spconv.pytorch.conv.SparseConvolution)
        from spconv.constants import ALL_WEIGHT_IS_KRSC, FILTER_HWIO
        from spconv.core import ConvAlgo
        if conv.algo == ConvAlgo.Native and not ALL_WEIGHT_IS_KRSC:
            return conv.weight.dim() - 1 if FILTER_HWIO else conv.weight.dim() - 2  # RSCK / RSKC
    return 0


def _fold_pair(conv, bn):
    """Fold eval-mode ``bn`` into ``conv`` in place (weight scaled, bias set)."""
    if bn.training or bn.running_mean is None or bn.running_var is None:
        raise ValueError(f'fold_batchnorm: {type(bn).__name__} must be in eval mode with running statistics '
                         f'(training mode or track_running_stats=False cannot be folded)')
    w = conv.weight
    dim = _out_channel_dim(conv)
    if w.shape[dim] != bn.num_features:
        raise ValueError(f'fold_batchnorm: {type(conv).__name__} has {w.shape[dim]} output channels, the '
                         f'following {type(bn).__name__} {bn.num_features}')
    s = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps) if bn.affine else \
        1.0 / torch.sqrt(bn.running_var.double() + bn.eps)
    beta = bn.bias.detach().double() if bn.affine else torch.zeros_like(s)
    shape = [1] * w.dim()
    shape[dim] = -1
    b = conv.bias.detach().double() if conv.bias is not None else torch.zeros_like(s)
    with torch.no_grad():
        w.copy_((w.double() * s.view(shape)).to(w.dtype))
        new_bias = (s * (b - bn.running_mean.double()) + beta).to(w.dtype)
    conv.bias = nn.Parameter(new_bias, requires_grad=False)


def _pairs(module):
    """(conv, parent, bn child name) for every conv directly followed by a BatchNorm inside ``module``."""
    found = []
    for parent in module.modules():
        if isinstance(parent, (nn.Sequential, spconv.SparseSequential)):
            names = list(parent._modules)
            for a, b in zip(names, names[1:]):
                first, second = parent._modules[a], parent._modules[b]
                if isinstance(first, _DENSE + _SPARSE) and isinstance(second, _BN):
                    found.append((first, parent, b))
        for conv_name, bn_name in _ATTR_PAIRS:
            conv, bn = getattr(parent, conv_name, None), getattr(parent, bn_name, None)
            if isinstance(conv, _DENSE + _SPARSE) and isinstance(bn, _BN):
                found.append((conv, parent, bn_name))
    return found


def fold_batchnorm(model):
    """Folded inference copy of ``model`` (see the module docstring); ``model`` itself is not changed.

    Returns the copy, in eval mode, every parameter frozen; BatchNorms that follow no convolution stay as they are
    (:func:`count_batchnorms` tells how many are left).
    """
    if model.training:
        raise ValueError('fold_batchnorm: put the model in eval mode first (folding uses running statistics)')
    folded = copy.deepcopy(model)
    for conv, parent, bn_name in _pairs(folded):
        _fold_pair(conv, parent._modules[bn_name])
        parent._modules[bn_name] = nn.Identity()
    for p in folded.parameters():
        p.requires_grad_(False)
    return folded.eval()


def freeze_for_inference(model, channels_last=True):
    """:func:`fold_batchnorm` copy of ``model`` with, if ``channels_last``, its dense conv weights stored
    channels-last (``torch.channels_last``); for inference only, like the folded copy."""
    folded = fold_batchnorm(model)
    if channels_last:
        for m in folded.modules():
            if isinstance(m, _DENSE) and m.weight.dim() == 4:
                m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last)
    return folded


def _to_autograd_tensors(obj):
    """Clone every inference tensor in a nested dict / list / tuple outside inference mode, into the default
    (contiguous) memory format: the channels-last maps of a :func:`freeze_for_inference` copy come back laid out
    as the unfrozen model's (``.view()`` works on them as on those)."""
    if isinstance(obj, torch.Tensor):
        return obj.clone(memory_format=torch.contiguous_format) if obj.is_inference() else obj
    if isinstance(obj, dict):
        return type(obj)((k, _to_autograd_tensors(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_autograd_tensors(v) for v in obj)
    return obj


def run_frozen(fn, *args, select=None, **kwargs):
    """``fn(*args, **kwargs)`` under ``torch.inference_mode``; returns ``select(outputs)`` (default: the outputs)
    with every inference tensor in it (nested dicts / lists / tuples) cloned into an ordinary, contiguous tensor.

    ``select`` keeps the copy small: clone only what the caller uses (e.g. the BEV map and the head maps), not
    every intermediate tensor of a ``batch_dict``. The returned tensors need no gradient and may be used in a
    loss, e.g. ``(student_map - teacher_map).abs().mean()`` or ``a * teacher_map``, whose backward saves them.
    """
    with torch.inference_mode():
        out = fn(*args, **kwargs)
        if select is not None:
            out = select(out)
    return _to_autograd_tensors(out)
