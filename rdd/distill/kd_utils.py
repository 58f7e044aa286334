"""Small tensor helpers shared by every KD loss (RDD and the baselines)."""
import torch.nn.functional as F


def adapt_regions(adapter, regions):
    """Apply a 1x1 conv adapter to pooled regions ``(P, K, Cs)`` (cells first, as ``roi_grid_pool`` returns
    them) -> ``(P, K, Ct)``. A 1x1 conv is per-cell linear, so adapting the pooled cells equals pooling the
    adapted map wherever the cells lie inside the map."""
    w = adapter.weight
    return F.linear(regions, w.view(w.shape[0], w.shape[1]), adapter.bias)


def zero_loss(module, ref):
    """A 0 scalar on ``ref``'s device that still touches every parameter of ``module`` (DDP-safe)."""
    loss = ref.new_zeros(())
    for p in module.parameters():
        loss = loss + p.sum() * 0.0
    return loss
