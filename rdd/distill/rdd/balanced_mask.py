"""Balanced per-pair weights and the weighted per-sample reduction.

A pair's weight starts from a base value (1, or the box's BEV area when size balance is off), and is then scaled
so that, within each sample,

* every source present (teacher, student, GT) carries the same total weight (source balance), and
* every head group (class family) present carries the same total weight (class balance).

A region proposed by several sources (merged duplicates) counts as one virtual pair per source and receives the
sum of their weights, exactly what plain concatenation of the duplicates would give. Both balances at once are a
matrix-scaling problem on the per-sample (source x group) table of base weights, solved by iterative proportional
fitting (Sinkhorn); when the table admits no exact solution on its support the iteration approaches the nearest
one and the last step (source balance) is exact. Weights are finally normalised to sum to 1 per sample.
"""
import torch

__all__ = ['balanced_pair_weights', 'weighted_sample_mean']


def balanced_pair_weights(batch_idx, sources, group_idx, batch_size, num_groups, box_area=None,
                          balance_size=True, balance_source=True, balance_class=True, iters=50):
    """
    Args:
        batch_idx: (P,) int64 sample of each pair.
        sources: (P, S) bool source membership (>= 1 True per row).
        group_idx: (P,) int64 head group (class family) of each pair, in [0, num_groups).
        batch_size: B.
        num_groups: number of head groups.
        box_area: (P,) BEV area dx*dy (m^2); used as the base weight when ``balance_size`` is False.
        balance_size / balance_source / balance_class: switches; all off gives uniform weights.
        iters: IPF iterations when both source and class balance are on.
    Returns:
        (P,) float weights (no grad), summing to 1 over the pairs of each sample that has pairs.
    """
    num = batch_idx.shape[0]
    dev = batch_idx.device
    if num == 0:
        return torch.zeros(0, device=dev)
    batch_idx = batch_idx.long()
    group_idx = group_idx.long()
    if balance_size:
        base = torch.ones(num, device=dev, dtype=torch.float64)
    else:
        if box_area is None:
            raise ValueError('box_area is needed when size balance is off')
        base = box_area.detach().double().clamp(min=1e-6)
    memb = sources.to(device=dev, dtype=torch.float64) if balance_source else \
        torch.ones((num, 1), device=dev, dtype=torch.float64)
    n_src = memb.shape[1]
    if not balance_class:
        group_idx = torch.zeros_like(group_idx)
        num_groups = 1
    # per-sample (source x group) table of base weights of the virtual pairs
    cell = (batch_idx[:, None] * n_src + torch.arange(n_src, device=dev)[None, :]) * num_groups + group_idx[:, None]
    table = torch.zeros(batch_size * n_src * num_groups, device=dev, dtype=torch.float64)
    table.index_add_(0, cell.flatten(), (memb * base[:, None]).flatten())
    table = table.view(batch_size, n_src, num_groups)
    row_present = table.sum(2) > 0
    col_present = table.sum(1) > 0
    row_target = row_present.double() / row_present.sum(1, keepdim=True).clamp(min=1)
    col_target = col_present.double() / col_present.sum(1, keepdim=True).clamp(min=1)
    a = torch.ones(batch_size, n_src, device=dev, dtype=torch.float64)
    c = torch.ones(batch_size, num_groups, device=dev, dtype=torch.float64)
    steps = iters if (balance_source and balance_class) else 1
    for _ in range(steps):
        if balance_class:
            col = (table * a[:, :, None]).sum(1) * c
            c = torch.where(col > 0, c * col_target / col.clamp(min=1e-300), c)
        if balance_source:
            row = (table * c[:, None, :]).sum(2) * a
            a = torch.where(row > 0, a * row_target / row.clamp(min=1e-300), a)
    w = base * c[batch_idx, group_idx] * (memb * a[batch_idx]).sum(1)
    total = torch.zeros(batch_size, device=dev, dtype=torch.float64).index_add_(0, batch_idx, w)
    return (w / total[batch_idx].clamp(min=1e-300)).float()


def weighted_sample_mean(values, weights, batch_idx, batch_size):
    """``mean over samples with >= 1 pair of sum_n w_n * values_n``.

    Args:
        values: (P,) per-pair loss values (may carry grad).
        weights: (P,) per-pair weights (sum 1 per sample).
        batch_idx: (P,) int64.
        batch_size: B.
    Returns:
        scalar; 0 (a plain zero tensor) when there is no pair.
    """
    if values.shape[0] == 0:
        return values.new_zeros(())
    per_sample = values.new_zeros(batch_size).index_add(0, batch_idx.long(), values * weights.to(values.dtype))
    has_pairs = torch.bincount(batch_idx.long(), minlength=batch_size) > 0
    return per_sample[has_pairs].sum() / has_pairs.sum().clamp(min=1)
