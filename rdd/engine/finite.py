"""Non-finite values (NaN, +-Inf) stay out of the model and out of checkpoint files.

* :class:`BufferSnapshot` -- the trainer copies the model's buffers (BatchNorm ``running_mean`` / ``running_var`` /
  ``num_batches_tracked``, ``global_step``, a KD loss's own statistics) before every forward and puts them back
  when the step is skipped: the forward of a step whose loss turns out non-finite has already updated the
  BatchNorm running statistics (``momentum * nan`` stays NaN for ever), and without the copy a skipped step
  would poison every later evaluation and checkpoint. It also tells whether a forward left a buffer non-finite
  with a finite loss (activations overflowing ``running_var`` while the batch statistics still normalise).
* :func:`nonfinite_tensors` -- the names of the non-finite tensors in a checkpoint dict: what
  :func:`rdd.engine.checkpoint_io.save_checkpoint` refuses to write and auto-resume refuses to load.
"""
import torch

__all__ = ['BufferSnapshot', 'nonfinite_tensors', 'describe_nonfinite']


def _float_tensor(t):
    return torch.is_tensor(t) and (t.is_floating_point() or t.is_complex())


class BufferSnapshot:
    """Copies of ``module``'s buffers: :meth:`take` before a step, :meth:`restore` when the step is skipped.

    The copies are allocated once and refreshed in place (the set of buffers is re-read every time, so a buffer
    replaced by a new tensor is handled); the cost is one copy of every buffer per step (BatchNorm statistics
    are a few values per channel: tens of kB for a CenterPoint).
    """

    def __init__(self, module):
        self.module = module
        self._names, self._copies = [], []

    def _live(self):
        return list(self.module.named_buffers())

    def take(self):
        live = self._live()
        names = [n for n, _ in live]
        if names != self._names or any(c.shape != b.shape or c.dtype != b.dtype or c.device != b.device
                                       for c, (_, b) in zip(self._copies, live)):
            self._names, self._copies = names, [b.detach().clone() for _, b in live]
            return
        with torch.no_grad():
            torch._foreach_copy_(self._copies, [b for _, b in live])  # one fused copy (a few hundred buffers)

    def restore(self):
        """Put every buffer back to its value at :meth:`take` (in place: DDP's buffer references stay valid)."""
        live = dict(self._live())
        with torch.no_grad():
            for name, copy in zip(self._names, self._copies):
                live[name].copy_(copy)

    def finite_with(self, loss):
        """``(all finite, names of the non-finite buffers)`` for ``loss`` and the floating buffers as they are
        now, with one host synchronisation (the buffers are checked as one concatenation: a few kernels, not
        one per buffer); the names are looked up only when something is not finite."""
        live = [(n, b) for n, b in self._live() if _float_tensor(b)]
        flat = [loss.detach().reshape(-1).float()] + [b.detach().reshape(-1).float().to(loss.device) for _, b in live]
        if bool(torch.isfinite(torch.cat(flat)).all()):
            return True, []
        return False, [n for n, b in live if not bool(torch.isfinite(b).all())]


def nonfinite_tensors(tree, prefix=''):
    """Names (``model_state.<key>``, ``optimizer_state.state.3.exp_avg``, ...) of the floating tensors in the
    nested dicts / lists ``tree`` that hold a NaN or an infinity."""
    out = []
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, (list, tuple)):
        items = enumerate(tree)
    else:
        return [prefix] if _float_tensor(tree) and not bool(torch.isfinite(tree).all()) else []
    for key, value in items:
        out += nonfinite_tensors(value, f'{prefix}.{key}' if prefix else str(key))
    return out


def describe_nonfinite(names, limit=8):
    """``'N tensors: a, b, ... (and K more)'`` for messages."""
    shown = ', '.join(names[:limit])
    more = f' (and {len(names) - limit} more)' if len(names) > limit else ''
    return f'{len(names)} tensor{"s" if len(names) != 1 else ""} with NaN/Inf: {shown}{more}'
