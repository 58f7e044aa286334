"""Step 4, disparity (Eq. 3): a Gaussian mutual-information estimate between a pair's normalised patches.

The paper defines the disparity through ``I_i = H(R̂_S,i) − H(R̂_S,i | R̂_T,i)`` and gives no estimator. We treat
the values of the two flattened patches as samples of a bivariate Gaussian; its mutual information is
``I = −½ log(1 − ρ²)`` with ρ the Pearson correlation, and the normalised disparity is
``d = exp(−I) = √(1 − ρ²)`` ∈ [0, 1]: 0 for perfectly (anti-)correlated patches, 1 for uncorrelated ones.
No gradient flows through any of it.

Numerics: with ``t̂``, ``ŝ`` the centred patches scaled to unit norm, ``ρ = t̂·ŝ``, ``1 − ρ = ½‖t̂ − ŝ‖²`` and
``1 + ρ = ½‖t̂ + ŝ‖²``, so ``d = ½ ‖t̂ − ŝ‖ ‖t̂ + ŝ‖`` without the cancellation of ``1 − ρ²`` near |ρ| = 1:
identical patches give d = 0 exactly, in float32.
"""
from dataclasses import dataclass

import torch

__all__ = ['PairDisparity', 'pearson_correlation', 'gaussian_disparity', 'MIN_DISPARITY_IN_LOG']

MIN_DISPARITY_IN_LOG = 1e-6  # I is capped at -log(1e-6) ≈ 13.8 nats: identical patches stay finite


@dataclass
class PairDisparity:
    """Per pair: ``rho`` Pearson correlation, ``mi`` the Gaussian MI estimate (nats), ``d`` = √(1 − ρ²)."""
    rho: torch.Tensor
    mi: torch.Tensor
    d: torch.Tensor


def _unit_centred(patches):
    """``(P, K, C)`` -> ``(P, K*C)`` centred rows of unit L2 norm (float32, new memory) and ``(P,)`` bool
    "constant row" (a zero row then)."""
    rows = patches.detach().flatten(1).float()
    rows = rows - rows.mean(dim=1, keepdim=True)
    norm = torch.linalg.vector_norm(rows, dim=1)
    constant = norm <= 0
    rows.div_(torch.where(constant, torch.ones_like(norm), norm)[:, None])
    return rows, constant


@torch.no_grad()
def pearson_correlation(teacher_patches, student_patches):
    """``(P,)`` Pearson correlation of each pair's flattened patches ``(P, K, C)``; 0 when a patch is constant (a
    constant carries no information about anything)."""
    return gaussian_disparity(teacher_patches, student_patches).rho


@torch.no_grad()
def gaussian_disparity(teacher_patches, student_patches):
    """The Gaussian MI estimate and disparity of each pair of normalised patches ``(P, K, C)``.

    Returns:
        :class:`PairDisparity` of ``(P,)`` float32 tensors: ``d = √(1 − ρ²)`` (exactly 0 for identical patches,
        1 when either patch is constant) and ``mi = −log(max(d, MIN_DISPARITY_IN_LOG))`` (= −½ log(1 − ρ²)).
    """
    if teacher_patches.shape != student_patches.shape:
        raise ValueError(f'RDDLoss: pair patches differ in shape: teacher {tuple(teacher_patches.shape)}, '
                         f'student {tuple(student_patches.shape)}')
    t, t_const = _unit_centred(teacher_patches)
    s, s_const = _unit_centred(student_patches)
    constant = t_const | s_const
    rho = torch.where(constant, torch.zeros_like(t_const, dtype=t.dtype), (t * s).sum(dim=1).clamp(-1.0, 1.0))
    half_diff = 0.5 * torch.linalg.vector_norm(t - s, dim=1)
    d = half_diff * torch.linalg.vector_norm(t.add_(s), dim=1)  # t is not used after this (in-place t + s)
    d = torch.where(constant, torch.ones_like(d), d.clamp(0.0, 1.0))
    return PairDisparity(rho=rho, mi=-torch.log(d.clamp(min=MIN_DISPARITY_IN_LOG)), d=d)
