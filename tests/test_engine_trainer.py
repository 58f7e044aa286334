"""Trainer unit tests on a fake detector: checkpoints, kill-and-resume reproducibility, non-finite losses."""
import os

import pytest
import torch
from easydict import EasyDict

from engine_fakes import FakeDetector, make_loader
from rdd.engine import checkpoint_io
from rdd.engine.hooks import CheckpointHook, EvalHook, HookBase, LoggingHook
from rdd.engine.logging_utils import ScalarWriter, read_scalar_log
from rdd.engine.optimization import build_optimizer, build_scheduler
from rdd.engine.rng import set_random_seed
from rdd.engine.trainer import NonFiniteLossError, Trainer, TrainerOptions

OPT = EasyDict(OPTIMIZER='adam_onecycle', LR=0.01, WEIGHT_DECAY=0.01, MOMENTUM=0.9, MOMS=[0.95, 0.85],
               PCT_START=0.4, DIV_FACTOR=10, DECAY_STEP_LIST=[35, 45], LR_DECAY=0.1, LR_CLIP=1e-7,
               LR_WARMUP=False, WARMUP_EPOCH=1, GRAD_NORM_CLIP=10)


class Killed(Exception):
    pass


def make_trainer(ckpt_dir, epochs=3, hooks=(), seed=666, ckpt_opts=None, **opts):
    """A trainer on the fake detector; ``ckpt_dir``: a :class:`CheckpointHook` after ``hooks`` (None: none)."""
    set_random_seed(seed)
    loader = make_loader()
    model = FakeDetector()
    optimizer = build_optimizer(model, OPT)
    scheduler = build_scheduler(optimizer, len(loader), epochs, OPT)
    hooks = list(hooks) + ([CheckpointHook(ckpt_dir, **(ckpt_opts or {}))] if ckpt_dir is not None else [])
    return Trainer(model, optimizer, scheduler, loader, TrainerOptions(total_epochs=epochs, **opts), hooks=hooks)


class RecordLosses(HookBase):
    def __init__(self, store):
        self.store = store

    def after_step(self, trainer, record):
        self.store[record['it']] = (record['loss'], record['lr'])


def test_checkpoint_format_and_rotation(tmp_path):
    trainer = make_trainer(str(tmp_path), epochs=4, ckpt_opts={'max_keep': 2})
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
    make_trainer(str(tmp_path / 'ref'), hooks=[RecordLosses(reference)]).train()
    run = str(tmp_path / 'run')

    class Killer(HookBase):
        def after_step(self, trainer, record):
            if record['it'] + 1 == kill_after:
                trainer.hook(CheckpointHook).save_latest(trainer)  # this iteration's time-interval save
                raise Killed()

    first = {}
    with pytest.raises(Killed):
        make_trainer(run, hooks=[RecordLosses(first), Killer()]).train()
    resumed = {}
    trainer = make_trainer(run, hooks=[RecordLosses(resumed)], seed=1234)  # other seed: state must come from ckpt
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

    class Snapshot(HookBase):
        def after_step(self, tr, record):
            before[record['it']] = [p.detach().clone() for p in tr.core_model.parameters()]
    trainer.hooks.append(Snapshot())
    trainer.train()  # one NaN: skipped, training goes on
    assert all(torch.equal(a, b) for a, b in zip(before[1], before[2]))
    assert not all(torch.equal(a, b) for a, b in zip(before[2], before[3]))
    trainer = make_trainer(None, epochs=2, max_nonfinite_steps=3)
    trainer.core_model.nan_at = {1, 2, 3}
    with pytest.raises(NonFiniteLossError, match='3 consecutive'):
        trainer.train()


def test_scalar_log_and_tensorboard(tmp_path):
    writer = ScalarWriter(tmp_path / 'tb', tmp_path / 'scalars.jsonl')
    assert not (tmp_path / 'tb').exists()  # files open on the first write
    trainer = make_trainer(None, epochs=1, hooks=[LoggingHook(writer, show_progress=False)])
    trainer.train()
    writer.close()
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
        Trainer(model, optimizer, build_scheduler(optimizer, 1, 1, OPT), loader, TrainerOptions(1))


def test_user_hook_sees_every_stage_in_order(tmp_path):
    """A hook written outside the engine gets before_train, every step, every epoch and after_train, in order,
    between the built-in hooks it is listed with."""
    calls = []

    class Spy(HookBase):
        def before_train(self, trainer):
            calls.append(('before_train', trainer.it))

        def after_step(self, trainer, record):
            calls.append(('step', record['it'], sorted(os.listdir(tmp_path))))

        def after_epoch(self, trainer, epoch):
            calls.append(('epoch', epoch, sorted(os.listdir(tmp_path))))

        def after_train(self, trainer):
            calls.append(('after_train', trainer.it, trainer.finished))

    trainer = make_trainer(str(tmp_path), epochs=2, hooks=[Spy()])
    trainer.train()
    steps = [c[1] for c in calls if c[0] == 'step']
    assert calls[0] == ('before_train', 0) and calls[-1] == ('after_train', 12, True) and steps == list(range(12))
    # the Spy runs before the CheckpointHook: at the end of epoch 1 its file is not written yet
    assert [c for c in calls if c[0] == 'epoch'] == [('epoch', 1, []), ('epoch', 2, ['checkpoint_epoch_1.pth'])]


def test_eval_hook_interval_and_final():
    seen = []
    evaluate = lambda model, epoch: seen.append(epoch) or {'mAP': 0.5, 'note': 'x'}
    make_trainer(None, epochs=3, hooks=[EvalHook(evaluate, interval=2, final=True)]).train()
    assert seen == [2, 3]
    seen.clear()
    make_trainer(None, epochs=2, hooks=[EvalHook(evaluate, interval=1, final=True)]).train()
    assert seen == [1, 2]  # the last epoch is not evaluated twice


def test_after_train_runs_on_errors_and_eval_skips_unfinished_runs():
    seen = []

    class Boom(HookBase):
        def after_step(self, trainer, record):
            if record['it'] == 3:
                raise Killed()
    trainer = make_trainer(None, epochs=2, hooks=[Boom(), EvalHook(lambda m, e: seen.append(e) or {}, final=True)])
    with pytest.raises(Killed):
        trainer.train()
    assert not trainer.finished and seen == []
