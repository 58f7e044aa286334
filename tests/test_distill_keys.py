"""KD loss keys: parameters are named by each KD_LOSSES entry's TAG / NAME, so reordering the list keeps resume."""
import pytest
import torch
from easydict import EasyDict

from rdd.errors import KDConfigError
from rdd.engine.checkpoint_io import checkpoint_state, load_training_state, save_checkpoint
from rdd.engine.optimization import build_optimizer
from test_distill_helpers import build_distiller, kd_cfg, make_batch

LOSSES = [{'NAME': 'RDDLoss', 'PROPOSAL': {'SCORE_THRESH': 0.0}}, {'NAME': 'FitNetLoss'}, {'NAME': 'RoIMimicLoss'}]
OPTIM = EasyDict({'OPTIMIZER': 'adam_onecycle', 'LR': 0.003, 'DIV_FACTOR': 10, 'WEIGHT_DECAY': 0.01,
                  'MOMS': [0.95, 0.85]})


def _step(d, opt, batch):
    d.train()
    ret, tb, _ = d(batch)
    opt.zero_grad()
    ret['loss'].backward()
    opt.step()
    return tb


def test_state_dict_keys_are_name_based(tiny_teacher_ckpt):
    d = build_distiller(kd_cfg(tiny_teacher_ckpt, losses=LOSSES))
    kd_keys = {k.split('.')[1] for k in d.state_dict() if k.startswith('kd_losses.')}
    assert kd_keys == {'RDDLoss', 'FitNetLoss', 'RoIMimicLoss'}
    assert d.kd_names == ['RDDLoss', 'FitNetLoss', 'RoIMimicLoss']  # run (and tb) order = list order


def test_reordered_kd_losses_resume_exactly(tiny_teacher_ckpt, tmp_path):
    cfg = kd_cfg(tiny_teacher_ckpt, losses=LOSSES)
    d1 = build_distiller(cfg)
    opt1 = build_optimizer(d1, OPTIM)
    _step(d1, opt1, make_batch(cfg, seed=0))
    ckpt = save_checkpoint(checkpoint_state(d1, opt1, epoch=1, it=1), tmp_path / 'ckpt.pth')

    reordered = kd_cfg(tiny_teacher_ckpt, losses=LOSSES[::-1])
    d2 = build_distiller(reordered, seed=5)  # other init: everything must come from the checkpoint
    opt2 = build_optimizer(d2, OPTIM)
    load_training_state(ckpt, d2, opt2)
    s1, s2 = d1.state_dict(), d2.state_dict()
    assert set(s1) == set(s2) and all(torch.equal(s1[k], s2[k]) for k in s1)
    tb1 = _step(d1, opt1, make_batch(cfg, seed=1))
    tb2 = _step(d2, opt2, make_batch(cfg, seed=1))
    for key in ('kd/RDDLoss', 'kd/FitNetLoss', 'kd/RoIMimicLoss', 'loss_det', 'loss'):
        assert tb1[key] == tb2[key], key
    s1, s2 = d1.state_dict(), d2.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)


def test_repeated_name_needs_tags(tiny_teacher_ckpt):
    twice = [{'NAME': 'FitNetLoss'}, {'NAME': 'FitNetLoss', 'FEATURE_KEY': 'spatial_features'}]
    with pytest.raises(KDConfigError, match=r"KD_LOSSES\[1\].*'FitNetLoss'.*KD_LOSSES\[0\].*TAG"):
        build_distiller(kd_cfg(tiny_teacher_ckpt, losses=twice))
    tagged = [twice[0], dict(twice[1], TAG='fitnet_3d')]
    d = build_distiller(kd_cfg(tiny_teacher_ckpt, losses=tagged))
    assert d.kd_names == ['FitNetLoss', 'fitnet_3d']
    assert any(k.startswith('kd_losses.fitnet_3d.') for k in d.state_dict())
    _, tb, _ = d(make_batch(kd_cfg(tiny_teacher_ckpt)))
    assert 'kd/fitnet_3d' in tb and 'kd/FitNetLoss' in tb
    with pytest.raises(KDConfigError, match=r'KD_LOSSES\[1\]\.TAG'):
        build_distiller(kd_cfg(tiny_teacher_ckpt, losses=[twice[0], dict(twice[1], TAG='a.b')]))
