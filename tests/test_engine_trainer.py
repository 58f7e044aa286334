"""Trainer unit tests on a fake detector: checkpoints, kill-and-resume reproducibility, non-finite losses."""
import os

import pytest
import torch
from easydict import EasyDict

from engine_fakes import FakeDetector, make_loader
from rdd.engine import checkpoint_io
from rdd.engine.logging_utils import ScalarWriter, read_scalar_log
from rdd.engine.optimization import build_optimizer, build_scheduler
from rdd.engine.rng import set_random_seed
from rdd.engine.trainer import NonFiniteLossError, Trainer, TrainerOptions

OPT = EasyDict(OPTIMIZER='adam_onecycle', LR=0.01, WEIGHT_DECAY=0.01, MOMENTUM=0.9, MOMS=[0.95, 0.85],
               PCT_START=0.4, DIV_FACTOR=10, DECAY_STEP_LIST=[35, 45], LR_DECAY=0.1, LR_CLIP=1e-7,
               LR_WARMUP=False, WARMUP_EPOCH=1, GRAD_NORM_CLIP=10)


class Killed(Exception):
    pass


def make_trainer(ckpt_dir, epochs=3, hooks=(), seed=666, **opts):
    set_random_seed(seed)
    loader = make_loader()
    model = FakeDetector()
    optimizer = build_optimizer(model, OPT)
    scheduler = build_scheduler(optimizer, len(loader), epochs, OPT)
    options = TrainerOptions(total_epochs=epochs, show_progress=False, **opts)
    return Trainer(model, optimizer, scheduler, loader, options, 'cpu', ckpt_dir=ckpt_dir, hooks=hooks)


def record_losses(store):
    def hook(trainer, record):
        store[record['it']] = (record['loss'], record['lr'])
    return hook


def test_checkpoint_format_and_rotation(tmp_path):
    trainer = make_trainer(str(tmp_path), epochs=4, max_ckpt_save_num=2)
    trainer.train()
    names = sorted(os.listdir(tmp_path))
    assert names == ['checkpoint_epoch_3.pth', 'checkpoint_epoch_4.pth']  # rotated, no temp files left
    ckpt = torch.load(tmp_path / 'checkpoint_epoch_4.pth', map_location='cpu', weights_only=True)
    assert {'model_state', 'optimizer_state', 'epoch', 'it', 'version', 'scheduler_state', 'scaler_state',
            'rng_state'} <= set(ckpt)
    assert ckpt['epoch'] == 4 and ckpt['it'] == 4 * 6
    assert int(ckpt['model_state']['global_step']) == 24
    fresh = FakeDetector()
    fresh.load_state_dict(ckpt['model_state'], strict=True)


@pytest.mark.parametrize('kill_after', [8, 12])  # mid-epoch (latest_model.pth) and at an epoch boundary
def test_kill_and_resume_reproduces_losses_and_lr(tmp_path, kill_after):
    reference = {}
    make_trainer(str(tmp_path / 'ref'), hooks=[record_losses(reference)]).train()

    def killer(trainer, record):
        if record['it'] + 1 == kill_after:
            trainer._maybe_save_latest()  # the time-interval save of this iteration, then the "kill"
            raise Killed()

    first = {}
    run = str(tmp_path / 'run')
    with pytest.raises(Killed):
        make_trainer(run, hooks=[record_losses(first), killer], ckpt_save_time_interval=0).train()
    resumed = {}
    trainer = make_trainer(run, hooks=[record_losses(resumed)], seed=1234)  # other seed: state must come from ckpt
    path = checkpoint_io.resume_candidates(run)[0]
    trainer.resume_from(path)
    assert trainer.it == kill_after
    trainer.train()
    assert sorted(resumed) == list(range(kill_after, 18))
    for it in range(kill_after, 18):
        assert resumed[it][1] == reference[it][1]
        assert resumed[it][0] == pytest.approx(reference[it][0], rel=1e-6, abs=1e-9), it
    for it in range(kill_after):
        assert first[it] == reference[it]


def test_atomic_save_leaves_old_file_on_failure(tmp_path):
    path = tmp_path / 'latest_model.pth'
    checkpoint_io.save_checkpoint({'it': 1}, path)

    class Boom:
        def __reduce__(self):
            raise RuntimeError('disk full')
    with pytest.raises(RuntimeError):
        checkpoint_io.save_checkpoint({'it': 2, 'bad': Boom()}, path)
    assert torch.load(path, weights_only=True) == {'it': 1}
    assert os.listdir(tmp_path) == ['latest_model.pth']


def test_nonfinite_loss_skips_step_then_aborts(tmp_path):
    trainer = make_trainer(None, epochs=2, max_nonfinite_steps=3)
    trainer.core_model.nan_at = {2}
    before = {}

    def snap(tr, record):
        before[record['it']] = [p.detach().clone() for p in tr.core_model.parameters()]
    trainer.hooks.append(snap)
    trainer.train()  # one NaN: skipped, training goes on
    assert all(torch.equal(a, b) for a, b in zip(before[1], before[2]))
    assert not all(torch.equal(a, b) for a, b in zip(before[2], before[3]))
    trainer = make_trainer(None, epochs=2, max_nonfinite_steps=3)
    trainer.core_model.nan_at = {1, 2, 3}
    with pytest.raises(NonFiniteLossError, match='3 consecutive'):
        trainer.train()


def test_scalar_log_and_tensorboard(tmp_path):
    trainer = make_trainer(None, epochs=1)
    trainer.writer = ScalarWriter(tmp_path / 'tb', tmp_path / 'scalars.jsonl')
    trainer.train()
    trainer.writer.close()
    log = read_scalar_log(tmp_path / 'scalars.jsonl')
    assert sorted(log) == list(range(6))
    assert {'loss', 'lr', 'grad_norm', 'samples_per_s', 'mse'} <= set(log[0])
    assert any(f.startswith('events.out.tfevents') for f in os.listdir(tmp_path / 'tb'))


def test_empty_loader_is_an_error():
    set_random_seed(0)
    model = FakeDetector()
    optimizer = build_optimizer(model, OPT)
    loader = make_loader(n=1, batch_size=2)  # drop_last -> no batch
    with pytest.raises(ValueError, match='empty'):
        Trainer(model, optimizer, build_scheduler(optimizer, 1, 1, OPT), loader, TrainerOptions(1), 'cpu')
