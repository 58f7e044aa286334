"""Steps 6-7, the loss terms (Eq. 8-9): per-pair distances, weighted and reduced per sample by ``1/(M + N)``.

* Eq. 8 ``L_feat = 1/(M+N) Σ_i m_i ‖N_S,i − N_T,i‖₂`` on the normalised (channel-softmax) patches, the student's
  through ψ; the norm (not squared) over all of a patch's cells and channels.
* Eq. 9 ``L_logit = 1/(M+N) Σ_i m_i (‖p_cls,S,i − p_cls,T,i‖₁ + w_reg ‖p_reg,S,i − p_reg,T,i‖₁)`` on the sigmoid
  heatmaps (every class of every head group) and, with ``REG_WEIGHT`` > 0, the regression maps, sampled at the
  region. Each sample's sum is divided by its own pair count ``M + N`` (teacher plus student proposals); the
  batch's loss is the mean over its samples (a sample without pairs contributes 0).
"""
import torch

__all__ = ['feature_distance', 'l1_distance', 'per_sample_mean']


def feature_distance(teacher_patches, student_patches):
    """``(P,)`` L2 norm of ``student − teacher`` over each pair's ``(K, C)`` values (teacher detached)."""
    return torch.linalg.vector_norm((student_patches - teacher_patches.detach()).flatten(1), ord=2, dim=1)


def l1_distance(teacher_values, student_values):
    """``(P,)`` L1 norm of ``student − teacher`` over each pair's ``(K, C)`` values (teacher detached)."""
    return (student_values - teacher_values.detach()).abs().flatten(1).sum(dim=1)


def per_sample_mean(values, weights, batch_idx, pairs_per_sample):
    """``mean_b [ Σ_{i in b} m_i v_i / (M_b + N_b) ]``.

    Args:
        values: (P,) per-pair distances (may carry gradient).
        weights: (P,) pair weights m (no gradient).
        batch_idx: (P,) int64 sample of each pair.
        pairs_per_sample: (B,) int64 ``M_b + N_b`` (every pair of the sample, kept or not).
    Returns:
        scalar; a sample without pairs adds 0 and still counts in the mean over the B samples.
    """
    per_sample = values.new_zeros(pairs_per_sample.shape[0]).index_add(
        0, batch_idx, values * weights.to(values.dtype))
    return (per_sample / pairs_per_sample.clamp(min=1).to(values.dtype)).mean()
