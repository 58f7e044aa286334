"""The one place that makes spconv 2.3.x correct on CPU.

Import spconv in this project only as ``from rdd.ops.spconv_compat import spconv`` (``spconv.pytorch``).
Importing this module applies, once, the patches below. Each targets spconv 2.3.x (checked on 2.3.8 CPU
wheel with cumm 0.7.11); a warning is raised for other versions, where the patched internals may differ.

1. ``get_current_stream``: spconv calls ``torch.cuda.current_stream()`` in CPU code paths (e.g. the native
   backward), which raises on a CPU-only torch. Without CUDA it now returns stream 0.
2. Eval-mode bias: in inference mode spconv passes the bias to the fused kernel, and the CPU native path
   rejects it (``cpu don't support act and bias``). For CPU tensors we take spconv's own training-mode
   route instead: conv without bias, then add the bias (the same arithmetic).
3. ``SpconvOps.scatter_add_cpu`` races: its OpenMP lambda captures the two row pointers ``buf`` / ``out_ptr``
   by reference, so the threads overwrite each other's pointers and a few output rows get wrong values. The
   rows themselves never conflict: spconv calls it once per kernel offset, and within one offset every output
   site has at most one input site (and vice versa), so the destination rows are unique (checked by
   ``tests/test_ops_spconv.py`` on real indice pairs). So the same kernel is run on one OpenMP thread:
   race-free, bitwise repeatable, no sort and no extra pass. spconv's OpenMP calls bind to whichever
   ``libgomp`` is first in the process's global scope (torch's, once torch is loaded; else the one bundled in
   ``spconv.libs``), so ``omp_set_num_threads(1)`` is applied to both around the call and then restored; it
   only affects the calling thread. Where no OpenMP runtime can be found, torch ``index_add_`` on zero-copy
   views of the same memory is used instead (correct; slower: it runs a parallel sort, which suffers badly on
   a busy machine).
4. GPU wheels (``spconv-cu1xx``) pick an implicit-GEMM algorithm by default, which refuses CPU tensors
   (``implicit gemm only support cuda``). For CPU inputs the layer runs with ``ConvAlgo.Native``
   (weights are KRSC for every algorithm in 2.3.x, so no weight change is needed).
5. ``SparseConvTensor.dense()`` goes through ``spconv.pytorch.core.scatter_nd``, which indexes with a *list*
   of index tensors: torch warns on every call that this form is deprecated and will change meaning. It is
   replaced by the same scatter written with a tuple index (identical result, no warning).
7. spconv has no bf16 CPU kernels (``KeyError: torch.bfloat16`` in ``torch_tensor_to_tv``), and a CPU
   ``torch.autocast`` reaches the torch ops inside its conv. Under a CPU autocast a sparse conv therefore runs
   with autocast off on float32 features (as without autocast); the dense layers after it are still autocast.
8. Cosmetic: ``SparseConvTensor`` (a torch.fx proxyable class) makes torch >= 2.10 log a one-time
   ``is_fx_tracing`` notice about fx vs export on the first tensor; it says nothing about spconv use and is
   silenced once here.
"""
import ctypes
import glob
import logging
import os
import sys
import warnings

import torch
import spconv as _spconv_root
import spconv.pytorch as spconv
import spconv.pytorch.core as _sp_core
import spconv.pytorch.cppcore as _cppcore
import spconv.pytorch.ops as _sp_ops
from spconv.core import ConvAlgo
from spconv.core_cc.csrc.sparse.all import SpconvOps as _RawSpconvOps
from spconv.pytorch.conv import SparseConvolution
from spconv.pytorch.cppcore import torch_tensor_to_tv

__all__ = ['spconv', 'spconv_cpu_self_check', 'SUPPORTED_SPCONV', 'scatter_add_cpu_safe']

SUPPORTED_SPCONV = '2.3.'

if not str(getattr(_spconv_root, '__version__', '')).startswith(SUPPORTED_SPCONV):
    warnings.warn(f'rdd.ops.spconv_compat targets spconv {SUPPORTED_SPCONV}x, found '
                  f'{getattr(_spconv_root, "__version__", "unknown")}; the CPU patches may not apply.')


# ---------------------------------------------------------------- 1. CUDA stream on CPU-only torch
_orig_get_current_stream = getattr(_cppcore.get_current_stream, '_rdd_orig', _cppcore.get_current_stream)


def _get_current_stream():
    """spconv's get_current_stream, returning 0 (the null stream) when CUDA is unavailable."""
    if not torch.cuda.is_available():
        return 0
    return _orig_get_current_stream()


_get_current_stream._rdd_orig = _orig_get_current_stream


# ---------------------------------------------------------------- 3. race-free scatter_add_cpu
def _tv_to_torch(t):
    """Zero-copy torch view of a CPU tensorview tensor (None when numpy cannot view its dtype)."""
    try:
        return torch.from_numpy(t.numpy_view())
    except Exception:  # bf16 has no numpy dtype
        return None


def _openmp_runtimes():
    """ctypes handles of the OpenMP runtimes spconv's kernels may bind to: the process's global ``libgomp``
    (torch's) and the one bundled with spconv (``spconv.libs/libgomp*``), without duplicates."""
    handles, seen = [], set()
    bundled = glob.glob(os.path.join(os.path.dirname(os.path.dirname(_spconv_root.__file__)), 'spconv.libs',
                                     'libgomp*.so*'))
    for name in [None] + sorted(bundled):
        try:
            lib = ctypes.CDLL(name)
            func = lib.omp_set_num_threads
        except (OSError, AttributeError):
            continue
        addr = ctypes.cast(func, ctypes.c_void_p).value
        if addr in seen:
            continue
        seen.add(addr)
        lib.omp_get_max_threads.restype = ctypes.c_int
        func.argtypes = [ctypes.c_int]
        handles.append(lib)
    return handles


_OMP_RUNTIMES = _openmp_runtimes()


def _scatter_add_one_thread(out, inp, inds):
    """spconv's own scatter_add_cpu on one OpenMP thread (its loop is correct when not shared)."""
    prev = [lib.omp_get_max_threads() for lib in _OMP_RUNTIMES]
    for lib in _OMP_RUNTIMES:
        lib.omp_set_num_threads(1)
    try:
        _RawSpconvOps.scatter_add_cpu(out, inp, inds)
    finally:
        for lib, n in zip(_OMP_RUNTIMES, prev):
            lib.omp_set_num_threads(n)


def scatter_add_cpu_safe(out, inp, inds):
    """``out[inds[i]] += inp[i]`` for ``i < len(inds)`` on tensorview tensors (what spconv's op does).

    out: (R, C), inp: (>=n, C), inds: (n,) int32 (unique within a call, as spconv's callers guarantee; the
    fallback also handles repeats). Runs spconv's kernel on one OpenMP thread when the runtime is found,
    else torch ``index_add_`` (which falls back to the original op for dtypes numpy cannot view, e.g. bf16,
    which spconv's CPU path does not support anyway).
    """
    if _OMP_RUNTIMES:
        return _scatter_add_one_thread(out, inp, inds)
    out_t, inp_t, inds_t = _tv_to_torch(out), _tv_to_torch(inp), _tv_to_torch(inds)
    if out_t is None or inp_t is None or inds_t is None:
        return _RawSpconvOps.scatter_add_cpu(out, inp, inds)
    n = inds_t.shape[0]
    if n > 0:
        out_t.index_add_(0, inds_t.long(), inp_t[:n])  # int64: torch's fast index_add_ path


class _SafeSpconvOps(_RawSpconvOps):
    """SpconvOps with the racy CPU scatter replaced; every other op is spconv's own."""
    scatter_add_cpu = staticmethod(scatter_add_cpu_safe)
    _rdd_patched = True


# ---------------------------------------------------------------- 2 + 4. conv forward wrapper
_orig_conv_forward = getattr(SparseConvolution._conv_forward, '_rdd_orig', SparseConvolution._conv_forward)


def _conv_forward(self, training, input, weight, bias, *args, **kwargs):
    """SparseConvolution._conv_forward with CPU fixes: Native algo on CPU (4), bias added after (2), no CPU
    autocast (7)."""
    if input.features.is_cuda:
        return _orig_conv_forward(self, training, input, weight, bias, *args, **kwargs)
    if torch.is_autocast_enabled('cpu'):
        with torch.autocast('cpu', enabled=False):
            return _conv_forward(self, training, input.replace_feature(input.features.to(weight.dtype)), weight,
                                 bias, *args, **kwargs)
    act_type = kwargs.get('act_type', self.act_type)
    split_bias = (bias is not None and not training and not input.is_quantized
                  and act_type == type(act_type).None_)
    algo = self.algo
    if algo != ConvAlgo.Native:
        self.algo = ConvAlgo.Native
    try:
        out = _orig_conv_forward(self, training, input, weight, None if split_bias else bias,
                                 *args, **kwargs)
    finally:
        self.algo = algo
    if split_bias:
        out = out.replace_feature(out.features + bias)
    return out


_conv_forward._rdd_orig = _orig_conv_forward


# ---------------------------------------------------------------- 5. dense() scatter with a tuple index
def _scatter_nd(indices, updates, shape):
    """``ret = zeros(shape); ret[indices[..., 0], ..., indices[..., k-1]] = updates`` (no repeated indices)."""
    ret = updates.new_zeros(shape)
    ndim = indices.shape[-1]
    flat = indices.reshape(-1, ndim).long()
    ret[tuple(flat.unbind(1))] = updates.reshape(flat.shape[0], *shape[ndim:])
    return ret


def _apply_patches():
    """Install patches 1-6 (idempotent)."""
    for name, mod in list(sys.modules.items()):
        if (name == 'spconv' or name.startswith('spconv.')) and mod is not None \
                and getattr(mod, 'get_current_stream', None) is _orig_get_current_stream:
            mod.get_current_stream = _get_current_stream
    _sp_ops.SpconvOps = _SafeSpconvOps
    SparseConvolution._conv_forward = _conv_forward
    _sp_core.scatter_nd = _scatter_nd
    _silence_fx_notice()


def _silence_fx_notice():
    try:
        from torch.fx import _symbolic_trace
        notice = _symbolic_trace.is_fx_tracing_warning  # lru_cached: logs on its first call only
    except (ImportError, AttributeError):
        return
    logger = logging.getLogger(_symbolic_trace.__name__)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        notice()
    finally:
        logger.setLevel(level)


_apply_patches()


def spconv_cpu_self_check(num_rows=3000, trials=3, channels=16, seed=0):
    """Compare spconv's raw ``scatter_add_cpu`` and the patched scatter against ``index_add_``.

    Each trial scatters ``num_rows`` random rows into a (2*num_rows, channels) float32 buffer at unique
    random indices (like one kernel offset of a sparse conv; the source buffer has extra unused rows, like
    spconv's). The reference is a gather-add-put. Returns a dict with the torch thread count, and per
    trial the number of wrong rows and max abs error of the raw op (``raw_*``: racy with more than one
    thread) and of the patched op (``patched_*``: must be 0).
    """
    g = torch.Generator().manual_seed(seed)
    res = {'threads': torch.get_num_threads(), 'num_rows': num_rows, 'trials': trials,
           'raw_wrong_rows': [], 'raw_max_abs_err': [], 'patched_wrong_rows': [], 'patched_max_abs_err': []}
    for _ in range(trials):
        base = torch.randn(2 * num_rows, channels, generator=g)
        inp = torch.randn(num_rows + 7, channels, generator=g)
        inds = torch.randperm(2 * num_rows, generator=g)[:num_rows].int()
        ref = base.clone()
        ref[inds.long()] = ref[inds.long()] + inp[:num_rows]
        for key, fn in (('raw', _RawSpconvOps.scatter_add_cpu), ('patched', scatter_add_cpu_safe)):
            out = base.clone()
            fn(torch_tensor_to_tv(out), torch_tensor_to_tv(inp), torch_tensor_to_tv(inds))
            err = (out - ref).abs().amax(dim=1)
            res[f'{key}_wrong_rows'].append(int((err > 0).sum()))
            res[f'{key}_max_abs_err'].append(float(err.max()))
    return res
