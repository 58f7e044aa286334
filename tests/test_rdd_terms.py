"""RDD steps 3-7 on hand-computed tiny inputs (golden values worked out below, not with the module's helpers).

The golden pair: two 3x3 patches of 2 channels (K = 9 cells, C = 2), softmax temperature τ = 4. In every cell
channel 1 is 0 and channel 0 is ``4 ln 3 · t`` with ``t ∈ {1, 0, −1}``, so the softmax gives channel 0 the
probability ``3^t / (3^t + 1)`` ∈ {3/4, 1/2, 1/4} and channel 1 the rest:

    teacher t = [1, 1, 1, 1, 1, 0, 0, 0, 0]  -> N_T cells 0-4: (3/4, 1/4), cells 5-8: (1/2, 1/2)
    student s = [1, 1, 1, 1, −1, 0, 0, 0, 0] -> N_S equal to N_T except cell 4: (1/4, 3/4)

Correlation of the flattened 18 values: both means are 1/2 (each cell sums to 1); the deviations are ±1/4 in
cells 0-4 (teacher) / 0-4 (student, cell 4 with the opposite sign) and 0 elsewhere, so
``cov ∝ 4·2·(1/16) − 2·(1/16) = 6/16``, ``var_T ∝ var_S ∝ 5·2·(1/16) = 10/16`` and ρ = 6/10 = 0.6.
MI (Gaussian): ``I = −½ ln(1 − 0.36) = −ln 0.8 = 0.2231435513``; disparity ``d = √0.64 = 0.8``.
Weights (λ = 0.1): ``m = 1[0.8 ≥ 0.1] = 1``; at λ = 0.9 it is 0.
L_feat distance: only cell 4 differs, by (−1/2, +1/2): ``‖N_S − N_T‖₂ = √(1/4 + 1/4) = 0.7071067812``.
L_logit distance: sigmoid heatmap patches, teacher 0.75 at the centre cell and 0.5 in the 8 others (logits ln 3,
0), student 0.05 everywhere (logit −ln 19): ``‖q_S − q_T‖₁ = 0.70 + 8 · 0.45 = 4.3``.

A second pair B has identical teacher and student patches: ρ = 1, d = 0, m = 0 for λ > 0, distances 0.
Batch: sample 0 holds pairs A and B (M + N = 2), sample 1 has no pair; B = 2 samples:
``L_feat = mean(1·0.70710678 / 2, 0) = 0.1767766953``, ``L_logit = mean(1·4.3 / 2, 0) = 1.075``.
"""
import math

import pytest
import torch

from rdd.distill.rdd import (channel_softmax, feature_distance, gaussian_disparity, l1_distance, pair_weights,
                             pearson_correlation, per_sample_mean)

LN3 = math.log(3.0)
T_SIGNS = [1, 1, 1, 1, 1, 0, 0, 0, 0]
S_SIGNS = [1, 1, 1, 1, -1, 0, 0, 0, 0]


def raw_patch(signs):
    """(1, 9, 2) patch: channel 0 = 4 ln3 · t, channel 1 = 0."""
    return torch.tensor([[[4.0 * LN3 * t, 0.0] for t in signs]], dtype=torch.float64)


def golden_batch():
    """Normalised patches of pairs A (golden) and B (identical), heatmap patches, sample index."""
    t = channel_softmax(torch.cat([raw_patch(T_SIGNS), raw_patch(T_SIGNS)]), 4.0)
    s = channel_softmax(torch.cat([raw_patch(S_SIGNS), raw_patch(T_SIGNS)]), 4.0)
    hm_t = torch.sigmoid(torch.tensor([0.0, 0, 0, 0, LN3, 0, 0, 0, 0], dtype=torch.float64)).view(1, 9, 1)
    hm_s = torch.full((1, 9, 1), -math.log(19.0), dtype=torch.float64).sigmoid()
    return t, s, torch.cat([hm_t, hm_t]), torch.cat([hm_s, hm_t]), torch.tensor([0, 0]), torch.tensor([2, 0])


def test_softmax_golden():
    t, s, *_ = golden_batch()
    assert t[0, :5].flatten().tolist() == pytest.approx([0.75, 0.25] * 5, abs=1e-12)
    assert t[0, 5:].flatten().tolist() == pytest.approx([0.5, 0.5] * 4, abs=1e-12)
    assert s[0, 4].tolist() == pytest.approx([0.25, 0.75], abs=1e-12)
    assert torch.allclose(t.sum(-1), torch.ones(2, 9, dtype=torch.float64))


def test_correlation_mi_disparity_golden():
    t, s, *_ = golden_batch()
    assert pearson_correlation(t, s).tolist() == pytest.approx([0.6, 1.0], abs=1e-6)  # float32 statistics
    dis = gaussian_disparity(t, s)
    assert dis.mi[0].item() == pytest.approx(0.2231435513, abs=1e-6)
    assert dis.d[0].item() == pytest.approx(0.8, abs=1e-6)
    assert dis.d[1].item() == 0.0  # identical patches: exactly
    assert dis.mi[1].item() == pytest.approx(-math.log(1e-6), rel=1e-6)  # capped, finite


def test_weights_golden():
    d = torch.tensor([0.8, 0.0], dtype=torch.float64)
    assert pair_weights(d, 0.1).tolist() == [1.0, 0.0]
    assert pair_weights(d, 0.0).tolist() == [1.0, 1.0]  # λ = 0: every pair, weight 1
    assert pair_weights(d, 0.9).tolist() == [0.0, 0.0]
    assert pair_weights(torch.tensor([0.3]), 0.3).tolist() == [1.0]  # a tie is kept


def test_feature_and_logit_terms_golden():
    t, s, hm_t, hm_s, batch_idx, pairs_per_sample = golden_batch()
    dist = feature_distance(t, s)
    assert dist.tolist() == pytest.approx([0.7071067812, 0.0], abs=1e-9)
    l1 = l1_distance(hm_t, hm_s)
    assert l1.tolist() == pytest.approx([4.3, 0.0], abs=1e-9)
    m = torch.tensor([1.0, 0.0])
    assert per_sample_mean(dist, m, batch_idx, pairs_per_sample).item() == pytest.approx(0.1767766953, abs=1e-9)
    assert per_sample_mean(l1, m, batch_idx, pairs_per_sample).item() == pytest.approx(1.075, abs=1e-9)
    # pair B kept (λ = 0) adds its zero distance: same values; pair A dropped: 0
    assert per_sample_mean(dist, torch.ones(2), batch_idx, pairs_per_sample).item() == pytest.approx(0.1767766953)
    assert per_sample_mean(l1, torch.zeros(2), batch_idx, pairs_per_sample).item() == 0.0


def test_identical_patches_give_zero_distance_and_disparity():
    gen = torch.Generator().manual_seed(0)
    patches = channel_softmax(torch.randn(5, 49, 16, generator=gen), 4.0)
    dis = gaussian_disparity(patches, patches.clone())
    assert torch.all(dis.d == 0) and torch.all(torch.isfinite(dis.mi))
    assert torch.all(pair_weights(dis.d, 0.1) == 0)  # dropped for any λ > 0
    assert torch.all(feature_distance(patches, patches.clone()) == 0)


def test_constant_patch_has_no_information():
    """A constant patch (e.g. a region entirely outside a map: softmax of zeros) correlates with nothing: ρ = 0,
    I = 0, d = 1."""
    const = torch.full((1, 9, 2), 0.5)
    other = channel_softmax(raw_patch(T_SIGNS).float(), 4.0)
    dis = gaussian_disparity(const, other)
    assert (dis.rho.item(), dis.mi.item(), dis.d.item()) == (0.0, 0.0, 1.0)


def test_higher_disparity_never_gets_lower_weight():
    gen = torch.Generator().manual_seed(1)
    d = torch.rand(200, generator=gen, dtype=torch.float64)
    for lam in (0.0, 0.1, 0.3, 0.6, 1.0):
        m = pair_weights(d, lam)
        higher = d[:, None] > d[None, :]
        assert not torch.any(higher & (m[:, None] < m[None, :])), lam


def test_gradients_of_the_terms():
    """The distances differentiate the student side only; the norm of a zero difference has a zero gradient."""
    t = channel_softmax(raw_patch(T_SIGNS), 4.0).requires_grad_(True)
    s = channel_softmax(raw_patch(S_SIGNS), 4.0).requires_grad_(True)
    (feature_distance(t, s).sum() + l1_distance(t, s).sum()).backward()
    assert t.grad is None and s.grad.abs().sum() > 0
    z = t.detach().clone().requires_grad_(True)
    feature_distance(t.detach(), z).sum().backward()
    assert torch.all(z.grad == 0)
