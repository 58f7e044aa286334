"""Disparity, top-gamma selection, balanced mask and MI bounds on hand-made tensors."""
import math

import pytest
import torch

from rdd.distill.rdd.balanced_mask import balanced_pair_weights, weighted_sample_mean
from rdd.distill.rdd.disparity import gaussian_kl_disparity, select_top_fraction, snr_disparity
from rdd.distill.rdd.mi_bounds import LearnableVariance, bernoulli_bound, gaussian_bound

# ---------------------------------------------------------------- disparity


def test_disparity_golden_value_and_zero_for_identical():
    t = torch.tensor([[[-1.0], [1.0]]])  # (P=1, K=2, C=1): mean 0, var 1
    s = torch.tensor([[[-1.0], [3.0]]])  # mean 1, var 4
    expected = 0.5 * (math.log(4.0) + (1.0 + 1.0) / 4.0 - 1.0)
    assert gaussian_kl_disparity(t, s, eps=0.0).item() == pytest.approx(expected, rel=1e-6)
    r = torch.randn(5, 49, 8)
    assert torch.allclose(gaussian_kl_disparity(r, r.clone()), torch.zeros(5), atol=1e-6)


def test_disparity_sums_channels_and_is_direction_kl_t_s():
    t = torch.tensor([[[-1.0, -1.0], [1.0, 1.0]]])  # (P=1, K=2, C=2)
    s = torch.tensor([[[-2.0, -1.0], [2.0, 1.0]]])  # channel 0: var 4, channel 1 identical
    expected = 0.5 * (math.log(4.0) + 1.0 / 4.0 - 1.0)
    assert gaussian_kl_disparity(t, s, eps=0.0).item() == pytest.approx(expected, rel=1e-6)
    assert gaussian_kl_disparity(s, t, eps=0.0).item() != pytest.approx(expected, rel=1e-3)


def test_disparity_ranking_picks_planted_pairs():
    g = torch.Generator().manual_seed(0)
    t = torch.randn(10, 49, 16, generator=g)
    s = t + 0.05 * torch.randn(10, 49, 16, generator=g)
    s[2] += 1.5
    s[7] = s[7] * 3.0
    d = gaussian_kl_disparity(t, s)
    keep = select_top_fraction(d, torch.zeros(10, dtype=torch.long), 1, 0.2)
    assert torch.nonzero(keep).flatten().tolist() == [2, 7]


def test_snr_disparity_golden_and_planted():
    r = torch.randn(4, 9, 3)
    assert torch.allclose(snr_disparity(r, r.clone()), torch.zeros(4))
    t = torch.zeros(1, 2, 1)  # softmax weights (0.5, 0.5): var 0 -> ratio 0.25 / eps
    s = torch.tensor([[[0.0], [math.log(3.0)]]])  # weights (0.25, 0.75): mean 0.5, var 0.0625 -> ratio 4
    expected = abs(0.25 / 1e-4 - 0.25 / (0.0625 + 1e-4))
    assert snr_disparity(t, s).item() == pytest.approx(expected, rel=1e-4)
    g = torch.Generator().manual_seed(1)
    t = torch.randn(8, 49, 16, generator=g)
    s = t + 0.01 * torch.randn(8, 49, 16, generator=g)
    s[5] *= 4.0
    assert snr_disparity(t, s).argmax().item() == 5


def test_disparity_has_no_grad():
    s = torch.randn(3, 9, 4, requires_grad=True)
    assert not gaussian_kl_disparity(torch.randn(3, 9, 4), s).requires_grad


def test_top_fraction_is_per_sample_with_ceil():
    d = torch.tensor([5.0, 1.0, 4.0, 9.0, 2.0, 3.0, 0.5])
    b = torch.tensor([0, 0, 1, 0, 0, 0, 1])
    keep = select_top_fraction(d, b, 3, 0.6)  # sample 0: 5 pairs -> 3; sample 1: 2 pairs -> 2 (ceil 1.2)
    assert keep.tolist() == [True, False, True, True, False, True, True]
    assert select_top_fraction(d, b, 3, 1.0).all()
    assert select_top_fraction(d[:0], b[:0], 2, 0.6).shape == (0,)
    with pytest.raises(ValueError, match='GAMMA'):
        select_top_fraction(d, b, 3, 0.0)

# ---------------------------------------------------------------- balanced mask


def _src(cols):
    out = torch.zeros(len(cols), 3, dtype=torch.bool)
    for i, c in enumerate(cols):
        for k in c:
            out[i, k] = True
    return out


def _totals(w, key, n):
    return torch.zeros(n, dtype=torch.float64).index_add_(0, key, w.double())


def test_weights_sum_to_one_per_sample_and_equalise_sources():
    b = torch.tensor([0, 0, 0, 0, 1, 1])
    src = _src([[0], [0], [0], [1], [1], [1]])
    w = balanced_pair_weights(b, src, torch.zeros(6, dtype=torch.long), 2, 6, balance_class=False)
    assert _totals(w, b, 2).tolist() == pytest.approx([1.0, 1.0])
    assert w[:4].tolist() == pytest.approx([1 / 6, 1 / 6, 1 / 6, 1 / 2])
    assert w[4:].tolist() == pytest.approx([1 / 2, 1 / 2])  # one source present -> plain uniform


def test_weights_equalise_classes():
    b = torch.zeros(4, dtype=torch.long)
    grp = torch.tensor([0, 0, 0, 3])
    w = balanced_pair_weights(b, _src([[0]] * 4), grp, 1, 6, balance_source=False)
    assert _totals(w, grp, 6).tolist() == pytest.approx([0.5, 0, 0, 0.5, 0, 0])


def test_weights_equalise_sources_and_classes_together():
    # teacher: car x2, ped x1; student: car x1, ped x3 (a feasible table)
    src = _src([[0], [0], [0], [1], [1], [1], [1]])
    grp = torch.tensor([0, 0, 5, 0, 5, 5, 5])
    b = torch.zeros(7, dtype=torch.long)
    w = balanced_pair_weights(b, src, grp, 1, 6)
    assert w.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert _totals(w[:3], grp[:3], 6).sum().item() == pytest.approx(0.5, abs=1e-5)  # teacher total
    per_class = _totals(w, grp, 6)
    assert per_class[0].item() == pytest.approx(0.5, abs=1e-5) and per_class[5].item() == pytest.approx(0.5, abs=1e-5)


def test_merged_pair_weight_equals_concatenated_duplicates():
    grp = torch.tensor([0, 1, 1])
    merged = balanced_pair_weights(torch.zeros(3, dtype=torch.long), _src([[0, 1], [0], [1]]), grp, 1, 2,
                                   balance_class=False)
    concat = balanced_pair_weights(torch.zeros(4, dtype=torch.long), _src([[0], [0], [1], [1]]),
                                   torch.tensor([0, 1, 0, 1]), 1, 2, balance_class=False)
    assert merged[0].item() == pytest.approx((concat[0] + concat[2]).item())
    assert merged[1:].tolist() == pytest.approx([concat[1].item(), concat[3].item()])


def test_switches_off_give_uniform_or_area_weights():
    b = torch.tensor([0, 0, 0, 1])
    src, grp = _src([[0], [1], [1], [0]]), torch.tensor([0, 1, 1, 2])
    area = torch.tensor([1.0, 2.0, 5.0, 3.0])
    off = dict(balance_source=False, balance_class=False)
    assert balanced_pair_weights(b, src, grp, 2, 3, **off).tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 1.0])
    w = balanced_pair_weights(b, src, grp, 2, 3, box_area=area, balance_size=False, **off)
    assert w.tolist() == pytest.approx([0.125, 0.25, 0.625, 1.0])


def test_weighted_sample_mean_skips_samples_without_pairs():
    vals = torch.tensor([1.0, 3.0, 10.0], requires_grad=True)
    out = weighted_sample_mean(vals, torch.tensor([0.5, 0.5, 1.0]), torch.tensor([0, 0, 2]), 3)
    assert out.item() == pytest.approx((2.0 + 10.0) / 2)  # sample 1 has no pair and is not counted
    out.backward()
    assert vals.grad.tolist() == pytest.approx([0.25, 0.25, 0.5])
    assert weighted_sample_mean(vals[:0], vals[:0], torch.zeros(0, dtype=torch.long), 2).item() == 0.0

# ---------------------------------------------------------------- MI bounds


def test_learnable_variance_init_and_floor():
    v = LearnableVariance(4, init=2.0, eps=1e-4)
    assert torch.allclose(v(), torch.full((4,), 2.0), atol=1e-6)
    with torch.no_grad():
        v.s.fill_(-100.0)
    assert torch.allclose(v(), torch.full((4,), 1e-4))
    with pytest.raises(ValueError, match='VAR_INIT'):
        LearnableVariance(2, init=1e-5, eps=1e-4)


def test_gaussian_bound_golden_values():
    t = torch.zeros(2, 4, 3)
    sigma2 = torch.tensor([0.5, 1.0, 2.0])
    variance_only = 0.5 * torch.log(sigma2).mean()
    assert torch.allclose(gaussian_bound(t, t.clone(), sigma2), variance_only.expand(2))
    s = torch.full((1, 4, 1), 2.0)
    assert gaussian_bound(torch.zeros(1, 4, 1), s, torch.tensor([2.0])).item() == pytest.approx(1.0 + 0.5 * math.log(2))


def test_gaussian_bound_gradients():
    t = torch.randn(2, 4, 3, requires_grad=True)
    s = torch.randn(2, 4, 3, requires_grad=True)
    v = LearnableVariance(3)
    gaussian_bound(t, s, v()).sum().backward()
    assert t.grad is None and s.grad.abs().sum() > 0 and v.s.grad.abs().sum() > 0


def test_bernoulli_bound_is_entropy_at_match_and_minimal_there():
    z = torch.tensor([-2.0, 0.0, 1.5])
    p = torch.sigmoid(z)
    entropy = -(p * p.log() + (1 - p) * (1 - p).log())
    assert torch.allclose(bernoulli_bound(z.clone(), z), entropy, atol=1e-6)
    zs = z.clone().requires_grad_(True)
    bernoulli_bound(zs, z).sum().backward()
    assert torch.allclose(zs.grad, torch.zeros(3), atol=1e-6)
    assert (bernoulli_bound(z + 0.5, z) > entropy).all()


def test_bernoulli_bound_temperature_scaling():
    zs, zt = torch.tensor([0.3, -1.0]), torch.tensor([2.0, 1.0])
    t = 2.0
    expected = torch.nn.functional.binary_cross_entropy_with_logits(zs / t, torch.sigmoid(zt / t), reduction='none')
    assert torch.allclose(bernoulli_bound(zs, zt, t), expected * t * t)
    with pytest.raises(ValueError, match='TEMPERATURE'):
        bernoulli_bound(zs, zt, 0.0)
