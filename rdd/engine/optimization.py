"""Optimizers and learning-rate schedules, as OpenPCDet defines them.

``OPTIMIZATION.OPTIMIZER``:

* ``adam_onecycle`` -- Adam with ``betas=(0.9, 0.99)`` on two parameter groups (non-BatchNorm, BatchNorm),
  decoupled weight decay ``p <- p * (1 - lr * WEIGHT_DECAY)`` applied to both groups before every step (fastai
  ``true_wd=True, bn_wd=True``), and the :class:`OneCycle` schedule for the learning rate and beta1.
* ``adam`` / ``sgd`` -- plain ``torch.optim`` with L2 weight decay, step decay at ``DECAY_STEP_LIST`` epochs by
  ``LR_DECAY``, floored at ``LR_CLIP``, with an optional cosine warm-up (``LR_WARMUP``, ``WARMUP_EPOCH``).

Every schedule is a pure function of the global iteration, so resuming at iteration ``it`` gives the same
learning rate as an uninterrupted run. Unlike OpenPCDet's layer flattening, parameters that live directly
on a non-leaf module (learnable variances, ...) are included too, and :func:`assert_all_trainable_in_optimizer`
checks that no trainable parameter is left out.
"""
import math

import torch
from torch import nn

BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def split_bn_params(model):
    """Trainable parameters of ``model`` as ``(non_bn, bn)`` lists, each parameter once, in module order."""
    non_bn, bn, seen = [], [], set()
    for module in model.modules():
        target = bn if isinstance(module, BN_TYPES) else non_bn
        for p in module.parameters(recurse=False):
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                target.append(p)
    return non_bn, bn


class AdamDecoupledWD(torch.optim.Adam):
    """Adam whose weight decay is applied outside the adaptive update, to every group, before each step.

    Matches OpenPCDet's fastai ``OptimWrapper(true_wd=True, bn_wd=True)``: for every parameter with
    ``requires_grad`` (even one without a gradient this step) ``p <- p * (1 - wd * lr)``, then plain Adam
    with ``weight_decay=0``. Its ``state_dict`` is a plain ``torch.optim.Adam`` state.
    """

    def __init__(self, params, lr, wd, betas=(0.9, 0.99)):
        super().__init__(params, lr=lr, betas=betas, weight_decay=0.0)
        self.wd = float(wd)

    @torch.no_grad()
    def step(self, closure=None):
        if self.wd != 0.0:
            for group in self.param_groups:
                for p in group['params']:
                    if p.requires_grad:
                        p.mul_(1.0 - self.wd * group['lr'])
        return super().step(closure)


def build_optimizer(model, optim_cfg):
    """Optimizer for ``model``'s trainable parameters from ``OPTIMIZATION`` (see module doc)."""
    name = optim_cfg.OPTIMIZER
    if name == 'adam_onecycle':
        non_bn, bn = split_bn_params(model)
        groups = [{'params': non_bn}, {'params': bn}]
        optimizer = AdamDecoupledWD(groups, lr=optim_cfg.LR / optim_cfg.DIV_FACTOR, wd=optim_cfg.WEIGHT_DECAY,
                                    betas=(optim_cfg.MOMS[0], 0.99))
    elif name == 'adam':
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=optim_cfg.LR, weight_decay=optim_cfg.WEIGHT_DECAY)
    elif name == 'sgd':
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=optim_cfg.LR, weight_decay=optim_cfg.WEIGHT_DECAY,
                                    momentum=optim_cfg.MOMENTUM)
    else:
        raise ValueError(f"OPTIMIZATION.OPTIMIZER {name!r} is not supported (use 'adam_onecycle', 'adam' or 'sgd')")
    assert_all_trainable_in_optimizer(model, optimizer)
    return optimizer


def assert_all_trainable_in_optimizer(model, optimizer):
    """Raise naming every trainable parameter of ``model`` that no param group of ``optimizer`` holds."""
    held = {id(p) for g in optimizer.param_groups for p in g['params']}
    missing = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in held]
    if missing:
        raise RuntimeError(f'{len(missing)} trainable parameters are not in the optimizer: {missing[:20]}')
    frozen = {id(p) for p in model.parameters() if not p.requires_grad}
    if held & frozen:
        raise RuntimeError('the optimizer holds frozen (requires_grad=False) parameters')


def annealing_cos(start, end, pct):
    """Cosine anneal from ``start`` (pct=0) to ``end`` (pct=1)."""
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1.0)


class IterScheduler:
    """Base: sets the learning rate (and beta1 / momentum) of every group from the global iteration."""

    def __init__(self, optimizer):
        self.optimizer = optimizer
        self.last_it = -1

    def values(self, it):
        """``(lr, mom or None)`` at global iteration ``it``."""
        raise NotImplementedError

    def step(self, it):
        """Apply the schedule for global iteration ``it`` (call before the optimizer step of that iteration)."""
        lr, mom = self.values(it)
        for group in self.optimizer.param_groups:
            group['lr'] = lr
            if mom is not None:
                if 'betas' in group:
                    group['betas'] = (mom, group['betas'][1])
                elif 'momentum' in group:
                    group['momentum'] = mom
        self.last_it = it
        return lr

    def state_dict(self):
        return {'type': type(self).__name__, 'last_it': self.last_it}

    def load_state_dict(self, state):
        if state.get('type') != type(self).__name__:
            raise ValueError(f"scheduler state is for {state.get('type')}, this run uses {type(self).__name__}")
        if state['last_it'] >= 0:
            self.step(state['last_it'])


class OneCycle(IterScheduler):
    """OpenPCDet/fastai one-cycle: lr ``LR/DIV_FACTOR -> LR`` (cosine) over the first ``PCT_START`` of the
    steps, then ``LR -> LR/DIV_FACTOR/1e4``; beta1 ``MOMS[0] -> MOMS[1]`` and back, on the same phases."""

    def __init__(self, optimizer, total_steps, lr_max, moms, div_factor, pct_start):
        super().__init__(optimizer)
        self.total_steps, self.lr_max, self.moms = int(total_steps), float(lr_max), tuple(moms)
        low = self.lr_max / div_factor
        split = int(self.total_steps * pct_start)
        self.lr_phases = [(0, split, low, self.lr_max), (split, self.total_steps, self.lr_max, low / 1e4)]
        self.mom_phases = [(0, split, self.moms[0], self.moms[1]), (split, self.total_steps, self.moms[1], self.moms[0])]
        for group in optimizer.param_groups:  # initial values, as OpenPCDet sets them at construction
            group['lr'] = low
            if 'betas' in group:
                group['betas'] = (self.moms[0], group['betas'][1])

    @staticmethod
    def _phase_value(phases, it):
        value = None
        for start, end, a, b in phases:
            if it >= start and end > start:  # the last phase that has started wins (as OpenPCDet)
                value = annealing_cos(a, b, (it - start) / (end - start))
        return value if value is not None else phases[-1][2]

    def values(self, it):
        return self._phase_value(self.lr_phases, it), self._phase_value(self.mom_phases, it)


class StepDecay(IterScheduler):
    """``LR * LR_DECAY^(number of DECAY_STEP_LIST epochs passed)``, floored at ``LR_CLIP``; with ``LR_WARMUP``
    a cosine ramp from ``LR/DIV_FACTOR`` to ``LR`` over the first ``WARMUP_EPOCH`` epochs."""

    def __init__(self, optimizer, iters_per_epoch, lr, decay_epochs, lr_decay, lr_clip,
                 warmup_epochs=0, div_factor=10.0):
        super().__init__(optimizer)
        self.lr, self.lr_decay, self.lr_clip = float(lr), float(lr_decay), float(lr_clip)
        self.decay_steps = [int(e * iters_per_epoch) for e in decay_epochs]
        self.warmup_steps = int(warmup_epochs * iters_per_epoch)
        self.warmup_min = self.lr / div_factor

    def values(self, it):
        if it < self.warmup_steps:
            return annealing_cos(self.warmup_min, self.lr, it / self.warmup_steps), None
        factor = 1.0
        for step in self.decay_steps:
            if it >= step:
                factor *= self.lr_decay
        return self.lr * max(factor, self.lr_clip / self.lr), None


def build_scheduler(optimizer, iters_per_epoch, total_epochs, optim_cfg):
    """The schedule matching ``OPTIMIZATION.OPTIMIZER`` (see module doc); step it with the global iteration."""
    if optim_cfg.OPTIMIZER == 'adam_onecycle':
        return OneCycle(optimizer, iters_per_epoch * total_epochs, optim_cfg.LR, list(optim_cfg.MOMS),
                        optim_cfg.DIV_FACTOR, optim_cfg.PCT_START)
    warmup = optim_cfg.get('WARMUP_EPOCH', 0) if optim_cfg.get('LR_WARMUP', False) else 0
    return StepDecay(optimizer, iters_per_epoch, optim_cfg.LR, optim_cfg.get('DECAY_STEP_LIST', []),
                     optim_cfg.get('LR_DECAY', 1.0), optim_cfg.get('LR_CLIP', 0.0), warmup_epochs=warmup,
                     div_factor=optim_cfg.get('DIV_FACTOR', 10.0))
