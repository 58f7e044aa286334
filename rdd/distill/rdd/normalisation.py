"""Step 3, normalisation (Eq. 2): a softmax over channels at every sampled cell, with temperature τ."""
import torch

__all__ = ['channel_softmax']


def channel_softmax(patches, tau):
    """``softmax(R / τ)`` over channels.

    Args:
        patches: (P, K, C) RoIAlign'ed region patches (K sampled cells, C channels).
        tau: temperature τ > 0 (``TAU``, 4 in the paper).
    Returns:
        (P, K, C), every cell's channel vector summing to 1.
    """
    return torch.softmax(patches / float(tau), dim=-1)
