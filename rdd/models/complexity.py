"""Model complexity: parameters per module, MACs on a real input (sparse convs counted from their actual
index pairs), and CPU latency.

What is counted (per forward of the given batch):

* sparse convolutions (spconv SubM / strided / inverse): ``pairs * C_in * C_out`` where ``pairs`` is the number
  of (input site, output site) pairs the conv really multiplies, kernel centre included, computed exactly from
  the active coordinates (:func:`sparse_conv_pairs`);
* ``Conv2d`` / ``Conv1d``: ``output elements * C_in / groups * kernel volume``; ``ConvTranspose2d``:
  ``input elements * C_out / groups * kernel volume``; ``Linear``: ``output elements * in_features``.
* Not counted: BatchNorm (foldable into the preceding conv at inference), activations, biases, additions,
  pooling, densification, decoding and NMS. These are at most a few percent of the total for CenterPoint.

MACs are multiply-accumulates (1 MAC = 2 FLOPs), the unit SparseKD reports as "GMACs"/"FLOPs".
"""
import time

import numpy as np
import torch
import torch.nn as nn

from rdd.ops.spconv_compat import spconv

_SparseConvolution = spconv.conv.SparseConvolution


def _triple(v, n=3):
    return [int(x) for x in v] if isinstance(v, (list, tuple)) else [int(v)] * n


def _kernel_offsets(ksize, dilation):
    grids = torch.meshgrid(*[torch.arange(k) * d for k, d in zip(ksize, dilation)], indexing='ij')
    return torch.stack([g.reshape(-1) for g in grids], dim=1)  # (K, ndim)


def _linear_keys(coords, dims):
    """coords (N, 1 + ndim) int64 [b, ...] with every spatial entry in [0, dims) -> unique int64 keys."""
    key = coords[:, 0].clone()
    for i, d in enumerate(dims):
        key = key * int(d) + coords[:, 1 + i]
    return key


def sparse_conv_pairs(indices, spatial_shape, ksize, stride=1, padding=0, dilation=1, subm=False,
                      out_spatial_shape=None):
    """Number of (input, output) index pairs of one sparse convolution.

    Args:
        indices: (N, 1 + ndim) int active input sites ``[b, z, y, x]``.
        spatial_shape: (ndim,) input grid shape.
        ksize, stride, padding, dilation: conv parameters (int or per-dimension).
        subm: submanifold conv (outputs = inputs; a pair for every kernel offset whose input site is active).
        out_spatial_shape: output grid shape for strided convs (default: spconv's formula).
    Returns:
        int, sum over kernel offsets of the active (input, output) pairs (kernel centre included).
    """
    idx = indices.long()
    ndim = idx.shape[1] - 1
    ks, st, pd, dl = (_triple(v, ndim) for v in (ksize, stride, padding, dilation))
    offsets = _kernel_offsets(ks, dl).to(idx.device)
    if idx.shape[0] == 0:
        return 0
    if subm:
        centre = torch.tensor([(k // 2) * d for k, d in zip(ks, dl)], device=idx.device)
        pad = [int(c) for c in centre]
        dims = [int(s) + 2 * p for s, p in zip(spatial_shape, pad)]
        base = idx.clone()
        base[:, 1:] += torch.tensor(pad, device=idx.device)
        keys = _linear_keys(base, dims)
        total = 0
        for off in offsets - centre:
            shifted = base.clone()
            shifted[:, 1:] += off
            total += int(torch.isin(_linear_keys(shifted, dims), keys).sum())
        return total
    if out_spatial_shape is None:
        out_spatial_shape = [(s + 2 * p - d * (k - 1) - 1) // t + 1
                             for s, p, d, k, t in zip(spatial_shape, pd, dl, ks, st)]
    pos = idx[:, 1:] + torch.tensor(pd, device=idx.device)  # (N, ndim)
    st_t = torch.tensor(st, device=idx.device)
    out_t = torch.tensor([int(v) for v in out_spatial_shape], device=idx.device)
    total = 0
    for off in offsets:
        rel = pos - off
        ok = (rel >= 0).all(dim=1) & (rel % st_t == 0).all(dim=1) & ((rel // st_t) < out_t).all(dim=1)
        total += int(ok.sum())
    return total


def _spconv_macs(module, inp, out):
    x = inp[0]
    if module.transposed and not module.inverse:
        raise NotImplementedError('MAC counting for SparseConvTranspose is not implemented')
    if module.inverse:  # the pairs of the strided conv it inverts (its rulebook is under the same indice_key)
        data = x.indice_dict[module.indice_key]
        pairs = sparse_conv_pairs(data.indices, data.spatial_shape, data.ksize, data.stride, data.padding,
                                  data.dilation, subm=False, out_spatial_shape=data.out_spatial_shape)
    else:
        pairs = sparse_conv_pairs(x.indices, x.spatial_shape, module.kernel_size, module.stride, module.padding,
                                  module.dilation, subm=module.subm, out_spatial_shape=out.spatial_shape)
    return pairs * module.in_channels * module.out_channels, pairs


def _dense_macs(module, inp, out):
    if isinstance(module, nn.ConvTranspose2d):
        k = int(np.prod(module.kernel_size))
        return inp[0].numel() * module.out_channels // module.groups * k
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        k = int(np.prod(module.kernel_size))
        return out.numel() * module.in_channels // module.groups * k
    if isinstance(module, nn.Linear):
        return out.numel() * module.in_features
    return None


def top_level_modules(model):
    """Names of the model's top-level submodules that exist (module_topology order when defined)."""
    names = getattr(model, 'module_topology', None) or [n for n, _ in model.named_children()]
    return [n for n in names if getattr(model, n, None) is not None]


def count_parameters(model):
    """(total parameter count, {top-level module: count})."""
    per = {n: sum(p.numel() for p in getattr(model, n).parameters()) for n in top_level_modules(model)}
    return sum(p.numel() for p in model.parameters()), per


@torch.no_grad()
def count_macs(model, batch_dict):
    """Run one eval-mode forward of ``batch_dict`` and count MACs.

    Returns ``(total, {top-level module: macs}, layers)`` with ``layers`` a list of dicts
    ``{'name', 'type', 'macs', 'pairs' (sparse convs only)}`` in execution order. The model's training flag is
    restored afterwards.
    """
    names = {m: n for n, m in model.named_modules()}
    layers, handles = [], []

    def hook(module, inp, out):
        if isinstance(module, _SparseConvolution):
            macs, pairs = _spconv_macs(module, inp, out)
            layers.append({'name': names[module], 'type': type(module).__name__, 'macs': macs, 'pairs': pairs})
        else:
            macs = _dense_macs(module, inp, out)
            if macs is not None:
                layers.append({'name': names[module], 'type': type(module).__name__, 'macs': macs})

    for m in model.modules():
        if isinstance(m, (_SparseConvolution, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear)):
            handles.append(m.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        model(batch_dict)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    per = {n: 0 for n in top_level_modules(model)}
    for layer in layers:
        top = layer['name'].split('.')[0]
        per[top] = per.get(top, 0) + layer['macs']
    return sum(per.values()), per, layers


@torch.no_grad()
def measure_latency(model, make_batch, runs=3, warmup=1):
    """Median wall time (ms) of an eval-mode forward over ``runs`` (after ``warmup`` runs).

    ``make_batch()`` returns a fresh batch_dict each call (its cost is not timed).
    """
    was_training = model.training
    model.eval()
    times = []
    try:
        for i in range(warmup + runs):
            batch = make_batch()
            t0 = time.perf_counter()
            model(batch)
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1e3)
    finally:
        model.train(was_training)
    return float(np.median(times)) if times else float('nan')
