"""DDP with find_unused_parameters off needs a gradient on every trainable parameter at every step: check the
Distiller with each KD loss on batches with no GT box and with nothing for the losses to distil."""
import pytest
import torch

from test_distill_helpers import build_distiller, kd_cfg, make_batch

NOTHING = 1.01  # a score no box reaches: zero proposals / teacher boxes
LOSS_SETS = {
    'rdd': [{'NAME': 'RDDLoss', 'PROPOSAL': {'SCORE_THRESH': 0.0}}],
    'rdd_no_proposals': [{'NAME': 'RDDLoss', 'PROPOSAL': {'SCORE_THRESH': NOTHING}}],
    'fitnet': [{'NAME': 'FitNetLoss'}],
    'logit_kd': [{'NAME': 'LogitKDLoss', 'SCORE_THRESH': NOTHING}],
    'roi_mimic': [{'NAME': 'RoIMimicLoss'}],
    'label_kd': [{'NAME': 'LabelKDLoss', 'SCORE_THRESH': 1.0}],
    'fg': [{'NAME': 'FGLoss'}],
    'gid_f': [{'NAME': 'GIDFeatureLoss'}],
    'gid_f_no_instance': [{'NAME': 'GIDFeatureLoss', 'GISM': {'SCORE_THRESH': 0.999}}],
    'gid_l': [{'NAME': 'GIDLogitLoss'}],
    'lad': [{'NAME': 'LADLoss'}],
    'all': [{'NAME': 'RDDLoss', 'PROPOSAL': {'SCORE_THRESH': NOTHING}}, {'NAME': 'LogitKDLoss'},
            {'NAME': 'FitNetLoss'}, {'NAME': 'RoIMimicLoss'}, {'NAME': 'LabelKDLoss', 'SCORE_THRESH': 1.0}],
}


@pytest.mark.parametrize('name', sorted(LOSS_SETS))
@pytest.mark.parametrize('gt', ['no_gt', 'one_empty_sample'])
def test_every_trainable_parameter_gets_a_gradient(tiny_teacher_ckpt, name, gt):
    cfg = kd_cfg(tiny_teacher_ckpt, losses=LOSS_SETS[name])
    d = build_distiller(cfg)
    d.train()
    batch = make_batch(cfg, num_boxes=0) if gt == 'no_gt' else make_batch(cfg, empty_sample=1)
    ret, tb, _ = d(batch)
    assert torch.isfinite(ret['loss'])
    if name == 'rdd_no_proposals':
        assert tb['kd/RDDLoss/rdd_pairs'] == 0 and tb['kd/RDDLoss'] == 0.0  # the nothing-to-distil path
    if name == 'roi_mimic' and gt == 'no_gt':
        assert tb['kd/RoIMimicLoss'] == 0.0
    if name == 'fg' and gt == 'no_gt':
        assert tb['kd/FGLoss'] == 0.0
    if name == 'gid_f_no_instance':
        assert tb['kd/GIDFeatureLoss/gid_instances'] == 0.0 and tb['kd/GIDFeatureLoss'] == 0.0
    ret['loss'].backward()
    trainable = [(n, p) for n, p in d.named_parameters() if p.requires_grad]
    assert any(n.startswith('kd_losses.') for n, _ in trainable) or name in ('logit_kd', 'label_kd', 'gid_l', 'lad')
    missing = [n for n, p in trainable if p.grad is None]
    assert not missing, missing[:10]
    assert all(torch.isfinite(p.grad).all() for _, p in trainable)
