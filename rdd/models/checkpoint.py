"""Read OpenPCDet checkpoints and load them into a model, strictly by default.

OpenPCDet checkpoints are ``{'model_state', 'optimizer_state', 'epoch', 'it', 'version'}`` written with
``torch.save`` (zip or legacy format). Sparse-conv weights written by older spconv versions are permuted to
the spconv 2.x KRSC layout ``(out, kD, kH, kW, in)`` when the shapes say so.
"""
import logging
import os

import torch

from rdd.errors import CheckpointError

_LOG = logging.getLogger(__name__)


def read_checkpoint(path):
    """Load a whole checkpoint dict on CPU with ``weights_only=True``.

    Raises FileNotFoundError when ``path`` is missing and CheckpointError (naming the file) when torch
    cannot read it or it is not a dict.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # corrupt file, pickle with non-tensor objects, ...
        raise CheckpointError(f'cannot read checkpoint {path}: {type(exc).__name__}: {exc}') from exc
    if not isinstance(ckpt, dict):
        raise CheckpointError(f'checkpoint {path} holds a {type(ckpt).__name__}, expected a dict')
    return ckpt


def read_model_state(path):
    """Return the model state_dict stored in ``path``.

    Accepts OpenPCDet's ``{'model_state': ...}`` and a bare state_dict (a dict of tensors). Raises
    CheckpointError naming the file when neither is found.
    """
    ckpt = read_checkpoint(path)
    if 'model_state' in ckpt:
        state = ckpt['model_state']
    elif ckpt and all(torch.is_tensor(v) for v in ckpt.values()):
        state = ckpt
    else:
        raise CheckpointError(f"checkpoint {path} has no 'model_state' (keys: {sorted(ckpt)[:10]})")
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path}: 'model_state' is a {type(state).__name__}, expected a dict")
    return state


def spconv_weight_keys(model):
    """Names (``'<module>.weight'``) of every spconv convolution weight in ``model``."""
    from rdd.ops.spconv_compat import spconv  # lazy: spconv is heavy; reading checkpoints does not need it
    return {f'{name}.weight' if name else 'weight' for name, m in model.named_modules()
            if isinstance(m, spconv.conv.SparseConvolution)}


def adapt_spconv_weight(value, target_shape):
    """Permute an older sparse-conv weight layout to ``target_shape`` (KRSC ``(out, kD, kH, kW, in)``).

    Tries spconv 1.x ``(kD, kH, kW, in, out)`` first (as OpenPCDet's loader does; when in == out the shape
    cannot tell it from spconv 2.x native ``(kD, kH, kW, out, in)``), then the native layout. Returns the
    permuted contiguous tensor, or ``value`` unchanged when no layout matches.
    """
    target_shape = tuple(target_shape)
    if tuple(value.shape) == target_shape or value.dim() != 5:
        return value
    for perm in ((4, 0, 1, 2, 3), (3, 0, 1, 2, 4)):  # spconv 1.x (k,k,k,in,out); 2.x native (k,k,k,out,in)
        cand = value.permute(*perm)
        if tuple(cand.shape) == target_shape:
            return cand.contiguous()
    return value


def _fmt_shape(t):
    return list(t.shape)


def load_state_dict_strict(model, state_dict, strict=True, logger=None):
    """Load ``state_dict`` into ``model``; permute old spconv layouts first.

    With ``strict``: every model key must be present with the same shape and there may be no extra key;
    otherwise ONE CheckpointError lists all missing, unexpected and mis-shaped keys (with both shapes) and
    nothing is loaded. Without ``strict``: loads the keys whose names and shapes match, logs the others.
    Returns ``(loaded_keys, problems)`` where problems = dict(missing, unexpected, mismatched).
    """
    log = logger or _LOG
    own = model.state_dict()
    sp_keys = spconv_weight_keys(model)
    matched, mismatched, unexpected, permuted = {}, [], [], []
    for key, val in state_dict.items():
        if key not in own:
            unexpected.append(key)
            continue
        if key in sp_keys and val.shape != own[key].shape:
            new_val = adapt_spconv_weight(val, own[key].shape)
            if new_val is not val:
                permuted.append(key)
            val = new_val
        if val.shape != own[key].shape:
            mismatched.append((key, _fmt_shape(val), _fmt_shape(own[key])))
            continue
        matched[key] = val
    missing = [k for k in own if k not in state_dict]
    problems = {'missing': missing, 'unexpected': unexpected, 'mismatched': mismatched}
    if permuted:
        log.info('Permuted %d sparse-conv weights from an older spconv layout to KRSC', len(permuted))
    if strict and (missing or unexpected or mismatched):
        lines = [f'state_dict does not match {type(model).__name__} '
                 f'({len(missing)} missing, {len(unexpected)} unexpected, {len(mismatched)} mis-shaped keys)']
        lines += [f'  missing: {k} {_fmt_shape(own[k])}' for k in missing]
        lines += [f'  unexpected: {k} {_fmt_shape(state_dict[k])}' for k in unexpected]
        lines += [f'  mis-shaped: {k} checkpoint {a} vs model {b}' for k, a, b in mismatched]
        raise CheckpointError('\n'.join(lines))
    if strict:
        model.load_state_dict(matched, strict=True)
    else:
        merged = dict(own)
        merged.update(matched)
        model.load_state_dict(merged, strict=True)
        for key in missing:
            log.info('Not updated weight %s: %s', key, _fmt_shape(own[key]))
        for key, a, b in mismatched:
            log.info('Not updated weight %s: checkpoint %s vs model %s', key, a, b)
        for key in unexpected:
            log.info('Unused checkpoint key %s', key)
    log.info('==> Done (loaded %d/%d)', len(matched), len(own))
    return list(matched), problems
