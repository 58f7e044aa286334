"""Variational mutual-information bounds used by RDD (the negative bounds, up to constants, as losses).

* Gaussian (heteroscedastic, as in variational information distillation): with ``q(t | s) = N(t; mu(s), sigma^2)``,
  ``I(T; S) >= H(T) + E[log q(t | s)]`` and ``-log q = (t - mu)^2 / (2 sigma^2) + 1/2 log sigma^2 + 1/2 log 2 pi``.
  The loss keeps the first two terms (``H(T)`` and ``log 2 pi`` do not depend on the student).
* Bernoulli (heatmaps): ``q(t | s) = Bernoulli(sigmoid(z_s / T))`` against the teacher's soft target
  ``p_t = sigmoid(z_t / T)``: ``-E log q`` is the binary cross-entropy ``BCE(z_s / T, p_t)`` (>= the teacher's
  binary entropy, with equality when the logits agree), scaled by ``T^2`` so the gradient magnitude does not
  shrink with the temperature.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['LearnableVariance', 'gaussian_bound', 'bernoulli_bound']


class LearnableVariance(nn.Module):
    """``sigma^2 = softplus(s) + eps`` per channel (a parameter ``s`` of shape ``shape``).

    Args:
        shape: int or tuple, number of variances (e.g. teacher channels).
        init: initial sigma^2 (> eps).
        eps: variance floor, keeps the bound finite.
    """

    def __init__(self, shape, init=1.0, eps=1e-4):
        super().__init__()
        if not init > eps:
            raise ValueError(f'VAR_INIT ({init}) must exceed VAR_EPS ({eps})')
        self.eps = float(eps)
        s0 = math.log(math.expm1(float(init) - self.eps))  # softplus^-1(init - eps)
        self.s = nn.Parameter(torch.full(shape if isinstance(shape, tuple) else (int(shape),), s0))

    def forward(self):
        """Returns sigma^2 with the shape of ``s``."""
        return F.softplus(self.s) + self.eps


def gaussian_bound(target, pred, sigma2):
    """Per-pair negative Gaussian MI bound: ``mean_{k,c} [(t - p)^2 / (2 sigma_c^2) + 1/2 log sigma_c^2]``.

    Args:
        target: (P, K, C) teacher values (no grad is taken through it).
        pred: (P, K, C) student values.
        sigma2: variances broadcastable to (P, K, C), e.g. (C,) or (P, 1, C).
    Returns:
        (P,) per-pair values.
    """
    diff = target.detach() - pred
    dims = tuple(range(1, diff.dim()))
    fit = (diff.square() * (0.5 / sigma2)).mean(dim=dims)
    # the log term is constant over the cells: average the (broadcast, uncopied) log-variances directly
    log_term = torch.broadcast_to(0.5 * torch.log(sigma2), diff.shape).mean(dim=dims)
    return fit + log_term


def bernoulli_bound(student_logits, teacher_logits, temperature=1.0):
    """Element-wise negative Bernoulli MI bound ``T^2 * BCE(sigmoid(z_s / T), sigmoid(z_t / T))``.

    Args:
        student_logits, teacher_logits: tensors of the same shape (raw heatmap logits).
        temperature: T > 0.
    Returns:
        tensor of the input shape (>= the teacher's binary entropy times T^2).
    """
    t = float(temperature)
    if t <= 0:
        raise ValueError(f'TEMPERATURE must be > 0, got {temperature}')
    p_t = torch.sigmoid(teacher_logits.detach() / t)
    return F.binary_cross_entropy_with_logits(student_logits / t, p_t, reduction='none') * (t * t)
