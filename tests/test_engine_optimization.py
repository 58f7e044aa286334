import math

import pytest
import torch
from easydict import EasyDict

from rdd.engine.optimization import (AdamDecoupledWD, OneCycle, StepDecay, annealing_cos,
                                     assert_all_trainable_in_optimizer, build_optimizer, build_scheduler,
                                     split_bn_params)
from engine_fakes import FakeDetector

ONECYCLE = EasyDict(OPTIMIZER='adam_onecycle', LR=0.003, WEIGHT_DECAY=0.01, MOMENTUM=0.9, MOMS=[0.95, 0.85],
                    PCT_START=0.4, DIV_FACTOR=10, DECAY_STEP_LIST=[35, 45], LR_DECAY=0.1, LR_CLIP=1e-7,
                    LR_WARMUP=False, WARMUP_EPOCH=1, GRAD_NORM_CLIP=10)


def test_onecycle_golden_values():
    model = FakeDetector()
    opt = build_optimizer(model, ONECYCLE)
    sched = build_scheduler(opt, iters_per_epoch=10, total_epochs=10, optim_cfg=ONECYCLE)  # 100 steps, split 40
    assert opt.param_groups[0]['lr'] == pytest.approx(3e-4)  # LR / DIV_FACTOR before the first step
    expect = {0: (3e-4, 0.95), 20: (annealing_cos(3e-4, 3e-3, 0.5), 0.90), 40: (3e-3, 0.85),
              70: (annealing_cos(3e-3, 3e-8, 0.5), 0.90), 99: (annealing_cos(3e-3, 3e-8, 59 / 60), None)}
    for it, (lr, mom) in expect.items():
        sched.step(it)
        for g in opt.param_groups:
            assert g['lr'] == pytest.approx(lr, rel=1e-12)
            if mom is not None:
                assert g['betas'] == (pytest.approx(mom), 0.99)
    assert expect[20][0] == pytest.approx((3e-4 + 3e-3) / 2)


def test_adam_onecycle_groups_and_decoupled_decay():
    model = FakeDetector()
    non_bn, bn = split_bn_params(model)
    bn_ids = {id(p) for p in model.body[1].parameters()}
    assert {id(p) for p in bn} == bn_ids
    assert any(p is model.log_var for p in non_bn)  # a parameter held by a non-leaf module is included
    assert not any(p is model.frozen.weight for p in non_bn + bn)
    opt = build_optimizer(model, ONECYCLE)
    assert isinstance(opt, AdamDecoupledWD) and len(opt.param_groups) == 2
    assert all(g['weight_decay'] == 0 for g in opt.param_groups)
    # one step with zero gradients: Adam's update is 0, so only the decoupled decay acts, on both groups
    for p in model.parameters():
        p.grad = torch.zeros_like(p) if p.requires_grad else None
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt.param_groups[0]['lr'] = opt.param_groups[1]['lr'] = 0.5
    opt.step()
    for n, p in model.named_parameters():
        factor = 1 - 0.01 * 0.5 if p.requires_grad else 1.0
        assert torch.allclose(p, before[n] * factor), n


def test_missing_trainable_parameter_is_an_error():
    model = FakeDetector()
    opt = torch.optim.Adam([model.body[0].weight], lr=1e-3)
    with pytest.raises(RuntimeError, match='not in the optimizer'):
        assert_all_trainable_in_optimizer(model, opt)


def test_adam_and_sgd_step_decay_with_clip_and_warmup():
    cfg = EasyDict(OPTIMIZER='sgd', LR=0.1, WEIGHT_DECAY=0.0, MOMENTUM=0.9, DECAY_STEP_LIST=[2, 4], LR_DECAY=0.1,
                   LR_CLIP=0.002, LR_WARMUP=True, WARMUP_EPOCH=1, DIV_FACTOR=10)
    model = FakeDetector()
    opt = build_optimizer(model, cfg)
    assert isinstance(opt, torch.optim.SGD)
    sched = build_scheduler(opt, iters_per_epoch=5, total_epochs=6, optim_cfg=cfg)
    assert isinstance(sched, StepDecay)
    assert sched.step(0) == pytest.approx(0.01)                  # warm-up starts at LR / DIV_FACTOR
    assert sched.step(5) == pytest.approx(0.1)                   # after warm-up
    assert sched.step(10) == pytest.approx(0.01)                 # first decay at epoch 2
    assert sched.step(20) == pytest.approx(0.002)                # 0.001 clipped to LR_CLIP
    cfg.OPTIMIZER = 'adam'
    assert isinstance(build_optimizer(model, cfg), torch.optim.Adam)
    cfg.OPTIMIZER = 'lamb'
    with pytest.raises(ValueError, match='lamb'):
        build_optimizer(model, cfg)


def test_scheduler_state_roundtrip_gives_same_lr():
    model = FakeDetector()
    opt = build_optimizer(model, ONECYCLE)
    sched = build_scheduler(opt, 10, 10, ONECYCLE)
    sched.step(57)
    opt2 = build_optimizer(FakeDetector(), ONECYCLE)
    sched2 = build_scheduler(opt2, 10, 10, ONECYCLE)
    sched2.load_state_dict(sched.state_dict())
    assert opt2.param_groups[0]['lr'] == opt.param_groups[0]['lr']
    assert opt2.param_groups[0]['betas'] == opt.param_groups[0]['betas']
    assert not math.isnan(sched.values(0)[0])


def test_onecycle_tiny_schedule_does_not_divide_by_zero():
    opt = build_optimizer(FakeDetector(), ONECYCLE)
    sched = OneCycle(opt, total_steps=1, lr_max=1e-3, moms=[0.95, 0.85], div_factor=10, pct_start=0.4)
    assert sched.step(0) == pytest.approx(1e-3)
