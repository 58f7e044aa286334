"""Step 4, disparity (Eq. 3): a Gaussian mutual-information estimate between a pair's normalised patches.

The paper defines the disparity through ``I_i = H(R̂_S,i) − H(R̂_S,i | R̂_T,i)`` and gives no estimator. We treat
the values of the two flattened patches as samples of a bivariate Gaussian; its mutual information is
``I = −½ log(1 − ρ²)`` with ρ the Pearson correlation, and the normalised disparity is
``d = exp(−I) = √(1 − ρ²)`` ∈ [0, 1]: 0 for perfectly (anti-)correlated patches, 1 for uncorrelated ones.
No gradient flows through any of it. Computed in float64 so that identical patches give ρ = 1 to ~1e-15.
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


@torch.no_grad()
def pearson_correlation(teacher_patches, student_patches):
    """``(P,)`` float64 Pearson correlation of each pair's flattened patches ``(P, K, C)``; 0 when a patch is
    constant (a constant carries no information about anything)."""
    if teacher_patches.shape != student_patches.shape:
        raise ValueError(f'RDDLoss: pair patches differ in shape: teacher {tuple(teacher_patches.shape)}, '
                         f'student {tuple(student_patches.shape)}')
    t = teacher_patches.detach().double().flatten(1)
    s = student_patches.detach().double().flatten(1)
    t = t - t.mean(dim=1, keepdim=True)
    s = s - s.mean(dim=1, keepdim=True)
    scale = (t.square().sum(dim=1) * s.square().sum(dim=1)).sqrt()
    cov = (t * s).sum(dim=1)
    rho = torch.where(scale > 0, cov / scale.clamp(min=torch.finfo(torch.float64).tiny), torch.zeros_like(cov))
    return rho.clamp(-1.0, 1.0)


@torch.no_grad()
def gaussian_disparity(teacher_patches, student_patches):
    """The Gaussian MI estimate and disparity of each pair of normalised patches ``(P, K, C)``.

    Returns:
        :class:`PairDisparity` of ``(P,)`` float64 tensors: ``d = √(1 − ρ²)`` (exactly 0 at |ρ| = 1) and
        ``mi = −log(max(d, MIN_DISPARITY_IN_LOG))`` (= −½ log(1 − ρ²), finite).
    """
    rho = pearson_correlation(teacher_patches, student_patches)
    d = (1.0 - rho.square()).clamp(0.0, 1.0).sqrt()
    return PairDisparity(rho=rho, mi=-torch.log(d.clamp(min=MIN_DISPARITY_IN_LOG)), d=d)
