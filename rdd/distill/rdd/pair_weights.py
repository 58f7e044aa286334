"""Step 5, pair weights (our reading of Eq. 5-6, docs/method.md): ``m_i = 1[d_i ≥ λ]``.

It is the minimiser over ``m ∈ [0, 1]^P`` of ``Σ_i m_i (λ − d_i)``, i.e. of ``−Σ_i m_i d_i + λ‖m‖₁``: distil the
pairs whose disparity pays for the L1 price λ (ties at ``d_i = λ`` kept). Hence ``λ = 0`` keeps every pair with
weight 1, a larger λ never keeps more pairs, and a more disparate pair never weighs less. No gradient.
"""
import torch

__all__ = ['pair_weights']


@torch.no_grad()
def pair_weights(disparity, lam):
    """``(P,)`` disparities d ∈ [0, 1] and λ (``LAMBDA``) -> ``(P,)`` float32 weights in {0, 1}."""
    return (disparity >= float(lam)).float()
