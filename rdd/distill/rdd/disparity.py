"""Representation disparity of region pairs and top-gamma selection (no gradients)."""
import torch

__all__ = ['gaussian_kl_disparity', 'snr_disparity', 'DISPARITIES', 'select_top_fraction']


def _moments(regions):
    """(P, K, C) -> population variance and mean over the K cells, (P, C) each (two-pass, centred; ~3x faster on
    CPU than ``torch.var_mean`` over a short middle dim)."""
    mean = regions.mean(dim=1, keepdim=True)
    centred = regions - mean
    centred.mul_(centred)
    return centred.mean(dim=1), mean.squeeze(1)


@torch.no_grad()
def gaussian_kl_disparity(teacher_regions, student_regions, eps=1e-4):
    """Per-pair disparity ``d_n = sum_c KL(N(mu_t, var_t) || N(mu_s, var_s))``.

    Each channel of a region is summarised by a Gaussian over its cells (mean and population variance over the
    ``K = G*G`` cells, variance + ``eps``).

    Args:
        teacher_regions: (P, K, C) pooled teacher features (K cells, C channels).
        student_regions: (P, K, C) pooled (adapted) student features, same shape.
        eps: variance floor, keeps the KL finite for constant channels.
    Returns:
        (P,) float32 disparities (>= 0), detached.
    """
    if teacher_regions.shape != student_regions.shape:
        raise ValueError(f'region pairs differ in shape: teacher {tuple(teacher_regions.shape)}, '
                         f'student {tuple(student_regions.shape)}')
    var_t, mu_t = _moments(teacher_regions.detach().float())
    var_s, mu_s = _moments(student_regions.detach().float())
    var_t = var_t + eps
    var_s = var_s + eps
    kl = 0.5 * (torch.log(var_s / var_t) + (var_t + (mu_t - mu_s) ** 2) / var_s - 1.0)
    return kl.sum(dim=-1)


@torch.no_grad()
def snr_disparity(teacher_regions, student_regions, eps=1e-4):
    """The statistic of IDa-Det's released code (ablation): per channel, a softmax over the region's cells, then
    ``r_c = mean^2 / var`` of those weights; ``d_n = sum_c |r_t,c - r_s,c|``.

    Args / returns as :func:`gaussian_kl_disparity` ((P, K, C) regions -> (P,) detached).
    """
    if teacher_regions.shape != student_regions.shape:
        raise ValueError(f'region pairs differ in shape: teacher {tuple(teacher_regions.shape)}, '
                         f'student {tuple(student_regions.shape)}')
    ratios = []
    for regions in (teacher_regions, student_regions):
        var, mean = _moments(torch.softmax(regions.detach().float(), dim=1))
        ratios.append(mean * mean / (var + eps))
    return (ratios[0] - ratios[1]).abs().sum(dim=-1)


DISPARITIES = {'kl': gaussian_kl_disparity, 'snr': snr_disparity}


@torch.no_grad()
def select_top_fraction(disparity, batch_idx, batch_size, gamma):
    """Keep, in each sample, the ``ceil(gamma * N_b)`` pairs of largest disparity (ties: lower index first).

    Args:
        disparity: (P,) scores.
        batch_idx: (P,) int64 sample of each pair.
        batch_size: B.
        gamma: fraction in (0, 1].
    Returns:
        (P,) bool keep mask; every sample with >= 1 pair keeps >= 1.
    """
    if not 0.0 < float(gamma) <= 1.0:
        raise ValueError(f'GAMMA must be in (0, 1], got {gamma}')
    num = disparity.shape[0]
    if num == 0:
        return torch.zeros(0, dtype=torch.bool, device=disparity.device)
    batch_idx = batch_idx.long()
    counts = torch.bincount(batch_idx, minlength=batch_size)
    k = torch.ceil(counts.double() * float(gamma) - 1e-6).long()
    order = torch.argsort(disparity, descending=True, stable=True)
    order = order[torch.argsort(batch_idx[order], stable=True)]
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(batch_idx)
    rank[order] = torch.arange(num, device=disparity.device) - starts[batch_idx[order]]
    return rank < k[batch_idx]
