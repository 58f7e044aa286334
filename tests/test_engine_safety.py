"""Nothing silent in the engine (#11 section 3): a skipped non-finite step leaves the model exactly as it was, no
checkpoint with a NaN / Inf is written or resumed from, one live run per run dir, no resuming into a run dir made
with another config, and the small traps (``--epochs 0``, ``--eval_all`` on a wrong dir, stale temp files,
orphaned DataLoader workers, ``KD_LOSSES: []``, evaluation inputs checked before training)."""
import ctypes
import logging
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from engine_fakes import FakeDetector, make_loader
from rdd.engine import checkpoint_io, train_pipeline
from rdd.engine.hooks import CheckpointHook, HookBase
from rdd.engine.optimization import build_optimizer, build_scheduler
from rdd.engine.rng import set_random_seed
from rdd.engine.run_dir import RunDir
from rdd.engine.run_lock import LOCK_NAME, RunDirLock
from rdd.engine.trainer import Trainer, TrainerOptions
from rdd.errors import ConfigDriftError, ConfigError, NonFiniteCheckpointError, RunDirError, RunDirLockedError
from test_engine_trainer import OPT

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / 'tests' / 'configs' / 'tiny_teacher.yaml')
NAN = float('nan')


def fake_trainer(epochs=2, hooks=(), device='cpu', use_amp=False):
    set_random_seed(0)
    loader = make_loader()
    model = FakeDetector().to(device)
    optimizer = build_optimizer(model, OPT)
    return Trainer(model, optimizer, build_scheduler(optimizer, len(loader), epochs, OPT), loader,
                   TrainerOptions(total_epochs=epochs, device=device, use_amp=use_amp), hooks=hooks)


def training_state(trainer):
    """Everything a skipped step must leave alone, deep-copied: model state (parameters and every buffer),
    optimizer per-parameter state, AMP scaler state."""
    clone = lambda tree: {k: clone(v) if isinstance(v, dict) else (v.clone() if torch.is_tensor(v) else v)
                          for k, v in tree.items()}
    return {'model': clone(trainer.core_model.state_dict()), 'optimizer': clone(trainer.optimizer.state_dict()['state']),
            'scaler': clone(trainer.scaler.state_dict())}


def assert_same_state(before, after, skip=('global_step',)):
    """Bitwise equality (NaN == NaN counts as equal: a NaN that was there before may stay)."""
    for part in before:
        flat_b, flat_a = _flatten(before[part]), _flatten(after[part])
        assert flat_b.keys() == flat_a.keys(), part
        for key, value in flat_b.items():
            if key.split('.')[-1] in skip:
                continue
            other = flat_a[key]
            same = torch.equal(value, other) or bool(torch.equal(value.isnan(), other.isnan()) and torch.equal(
                value.nan_to_num(), other.nan_to_num())) if torch.is_tensor(value) else value == other
            assert same, f'{part}: {key} changed'


def _flatten(tree, prefix=''):
    out = {}
    for key, value in tree.items():
        name = f'{prefix}.{key}' if prefix else str(key)
        out.update(_flatten(value, name) if isinstance(value, dict) else {name: value})
    return out


class StateAround(HookBase):
    """Records :func:`training_state` after every step (``states[it]``: the state after iteration ``it``)."""

    def __init__(self):
        self.states = {}

    def after_step(self, trainer, record):
        self.states[record['it']] = training_state(trainer)


# ---------------------------------------------------------------- 1. a skipped step leaves the model as it was
@pytest.mark.parametrize('device', ['cpu', pytest.param('cuda', marks=[pytest.mark.cuda, pytest.mark.skipif(
    not torch.cuda.is_available(), reason='needs CUDA')])])
def test_nan_input_step_leaves_parameters_buffers_and_optimizer_bitwise_unchanged(device):
    """On CUDA with AMP: the scaler state (scale, growth tracker) is compared too."""
    states = StateAround()
    trainer = fake_trainer(hooks=[states], device=device, use_amp=device == 'cuda')
    assert trainer.scaler.is_enabled() == (device == 'cuda')
    body = trainer.core_model.body

    def nan_input(module, args):  # one NaN in one sample's input at iteration 3: BN statistics see it
        if int(trainer.core_model.global_step) == 3:
            x = args[0].clone()
            x[0, 0] = NAN
            return (x,)
    body.register_forward_pre_hook(nan_input)
    trainer.train()
    assert_same_state(states.states[2], states.states[3])
    bn = dict(trainer.core_model.named_buffers())
    assert int(states.states[3]['model']['global_step']) == 4  # the batch counter advances (data order, schedule)
    assert all(torch.isfinite(b).all() for b in bn.values())
    if device == 'cpu':  # (with AMP the scaler may skip an overflowing step of its own, undone the same way)
        assert int(states.states[3]['model']['body.1.num_batches_tracked']) == 3  # not 4: the skip is undone
        assert int(bn['body.1.num_batches_tracked']) == 11  # 12 steps, one skipped
    assert not torch.equal(states.states[3]['model']['body.0.weight'], states.states[4]['model']['body.0.weight'])


def test_nonfinite_buffer_with_finite_loss_skips_the_step():
    """A forward that leaves a buffer non-finite (BN running_var overflowing) while the loss stays finite is
    skipped too: the buffer would poison every later evaluation and checkpoint."""
    states = StateAround()
    trainer = fake_trainer(hooks=[states])

    def overflow_running_var(module, args, output):
        if int(trainer.core_model.global_step) == 2:
            module.running_var.data[0] = float('inf')  # .data: autograd's saved tensors are not touched
    trainer.core_model.body[1].register_forward_hook(overflow_running_var)
    trainer.train()
    assert_same_state(states.states[1], states.states[2])
    assert torch.isfinite(trainer.core_model.body[1].running_var).all()


# ---------------------------------------------------------------- 2. no non-finite checkpoint written or resumed
def test_checkpoint_with_nan_is_never_written(tmp_path):
    state = checkpoint_io.checkpoint_state(FakeDetector())
    state['model_state']['body.1.running_mean'][3] = NAN
    state['model_state']['log_var'][0] = float('inf')
    path = tmp_path / 'ckpt' / 'checkpoint_epoch_1.pth'
    with pytest.raises(NonFiniteCheckpointError, match=rf'{path}: 2 tensors with NaN/Inf: '
                                                       r'model_state.log_var, model_state.body.1.running_mean'):
        checkpoint_io.save_checkpoint(state, path)
    assert not path.parent.exists() or os.listdir(path.parent) == []  # no file, no temp file


def test_trainer_refuses_to_checkpoint_a_diverged_model(tmp_path):
    class Diverge(HookBase):
        def after_step(self, trainer, record):
            if record['it'] == 5:
                with torch.no_grad():
                    trainer.core_model.log_var.fill_(NAN)
    trainer = fake_trainer(hooks=[Diverge(), CheckpointHook(str(tmp_path))])
    with pytest.raises(NonFiniteCheckpointError, match='checkpoint_epoch_1.pth.*model_state.log_var'):
        trainer.train()
    assert os.listdir(tmp_path) == []


def test_auto_resume_refuses_a_nonfinite_checkpoint(tmp_path):
    trainer = fake_trainer()
    good = checkpoint_io.checkpoint_state(trainer.model, trainer.optimizer, 1, 6, trainer.scheduler)
    checkpoint_io.save_checkpoint(good, tmp_path / 'ckpt' / 'checkpoint_epoch_1.pth')
    bad = checkpoint_io.checkpoint_state(trainer.model, trainer.optimizer, 2, 12, trainer.scheduler)
    bad['model_state'] = {k: v.clone() for k, v in bad['model_state'].items()}  # (CPU: shares the model's memory)
    bad['model_state']['body.1.running_var'][0] = NAN
    time.sleep(0.01)
    torch.save(bad, tmp_path / 'ckpt' / 'checkpoint_epoch_2.pth')  # written by an older version: newest file
    run_dir = SimpleNamespace(ckpt_dir=tmp_path / 'ckpt')
    args = SimpleNamespace(pretrained_model=None, ckpt=None)
    with pytest.raises(NonFiniteCheckpointError, match=r'refusing to resume from checkpoint .*checkpoint_epoch_2'
                                                       r'\.pth: 1 tensor with NaN/Inf: model_state.body.1.running_var'):
        train_pipeline.resume(trainer, args, run_dir, logging.getLogger('test'))
    assert trainer.it == 0 and torch.isfinite(trainer.core_model.body[1].running_var).all()  # nothing loaded


# ---------------------------------------------------------------- 3. run dir lock
def test_lock_held_by_a_live_run_names_dir_pid_and_host(tmp_path):
    holder = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
    try:
        first = RunDirLock(tmp_path / 'run').acquire()
        first.me['pid'] = holder.pid  # as if that live process had taken it
        (tmp_path / 'run' / LOCK_NAME).write_text(__import__('json').dumps(first.me))
        with pytest.raises(RunDirLockedError, match=rf"run dir {tmp_path / 'run'} is in use by another run: pid "
                                                    rf"{holder.pid} on host {first.me['host']}"):
            RunDirLock(tmp_path / 'run').acquire()
    finally:
        holder.kill()
        holder.wait()


def test_stale_lock_of_a_dead_pid_is_taken_over_with_a_log_line(tmp_path, caplog):
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()
    stale = RunDirLock(tmp_path).acquire()
    stale.me['pid'] = dead.pid
    (tmp_path / LOCK_NAME).write_text(__import__('json').dumps(stale.me))
    lock = RunDirLock(tmp_path, logging.getLogger('rdd.test_lock'))
    with caplog.at_level(logging.WARNING, logger='rdd.test_lock'):
        lock.acquire()
    assert f'taking over the stale lock of pid {dead.pid}' in caplog.text
    lock.release()
    assert not (tmp_path / LOCK_NAME).exists()


def _on_main_rank_worker(rank, port, queue):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    torch.distributed.init_process_group('gloo', rank=rank, world_size=2)
    from rdd.engine import dist

    def take():
        raise RunDirLockedError('run dir X is in use by another run: pid 1 on host h')
    try:
        dist.on_main_rank(take)
        queue.put((rank, 'no error'))
    except Exception as exc:  # noqa: BLE001 -- reported to the test
        queue.put((rank, f'{type(exc).__name__}: {exc}'))
    torch.distributed.destroy_process_group()


def test_lock_failure_on_rank_0_raises_on_every_rank():
    ctx = torch.multiprocessing.get_context('fork')
    queue = ctx.SimpleQueue()
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    procs = [ctx.Process(target=_on_main_rank_worker, args=(r, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    got = dict(queue.get() for _ in range(2))
    assert got[0].startswith('RunDirLockedError: run dir X is in use')
    assert got[1].startswith('RuntimeError: rank 0 failed, so this rank stops too: RunDirLockedError: run dir X')


# ---------------------------------------------------------------- integration on the synthetic set (real model)
def data_set(synth):
    return ['DATA_CONFIG.DATA_PATH', synth.data_path, 'DATA_CONFIG.VERSION', synth.version,
            'DATA_CONFIG.BALANCED_RESAMPLING', 'False', 'DATA_CONFIG.MAX_SWEEPS', '2']


def train_argv(synth, out, *extra, epochs='1', sets=()):
    return ['--cfg', TINY, '--batch_size', '4', '--epochs', epochs, '--workers', '0', '--output_root', str(out),
            '--fix_random_seed', '--skip_eval', *extra, '--set', *data_set(synth), *sets]


@pytest.fixture(scope='module')
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope='module')
def nan_run(synth_nusc, tmp_path_factory, one_thread):
    """A tiny CenterPoint run (2 iterations) whose 2nd batch has one NaN voxel intensity; its states per step."""
    out = tmp_path_factory.mktemp('nan_run')
    states = StateAround()

    class InjectNaN(HookBase):
        def before_train(self, trainer):
            def poison(module, args):
                if trainer.it == 1:
                    args[0]['voxels'][0, 0, 3] = NAN
            trainer.core_model.vfe.register_forward_pre_hook(poison)
    before = {}

    class First(HookBase):
        def before_train(self, trainer):
            before['state'] = training_state(trainer)
    train_pipeline.main(train_argv(synth_nusc, out), hooks=[First(), InjectNaN(), states])
    return SimpleNamespace(out=out, states=states.states, before=before['state'],
                           run_dir=out / 'configs' / 'tiny_teacher' / 'default')


def test_real_model_nan_voxel_step_leaves_model_unchanged_and_checkpoint_finite(nan_run):
    assert_same_state(nan_run.states[0], nan_run.states[1])  # iteration 1 (the NaN batch) changed nothing
    assert any(not torch.equal(nan_run.before['model'][k], v) for k, v in nan_run.states[0]['model'].items()
               if k.endswith('running_mean'))  # the state compared is live: iteration 0 did move BN statistics
    ckpt = torch.load(nan_run.run_dir / 'ckpt' / 'checkpoint_epoch_1.pth', map_location='cpu', weights_only=True)
    assert checkpoint_io.nonfinite_tensors(ckpt) == []
    assert ckpt['it'] == 2 and int(ckpt['model_state']['global_step']) == 2


def test_rerun_with_another_config_is_config_drift(nan_run, synth_nusc):
    saved = (nan_run.run_dir / 'config_resolved.yaml').read_text()
    with pytest.raises(ConfigDriftError, match=r"OPTIMIZATION.LR: 0.003 -> 0.001.*run_info.epochs: 1 -> 2.*"
                                               r"--extra_tag NAME, or delete") as err:
        train_pipeline.main(train_argv(synth_nusc, nan_run.out, epochs='2', sets=('OPTIMIZATION.LR', '0.001')))
    assert err.value.keys == ['OPTIMIZATION.LR', 'run_info.epochs']
    with pytest.raises(ConfigDriftError, match=r'run_info.effective_batch_size: 4 -> 2'):
        train_pipeline.main(train_argv(synth_nusc, nan_run.out, '--batch_size', '2'))
    assert (nan_run.run_dir / 'config_resolved.yaml').read_text() == saved  # not overwritten


def test_second_live_run_into_the_dir_is_refused_and_stale_temp_files_go(nan_run, synth_nusc, capsys):
    lock = RunDirLock(nan_run.run_dir).acquire()  # this process holds it: a live run
    try:
        with pytest.raises(RunDirLockedError, match=rf'run dir {nan_run.run_dir} is in use by another run: pid '
                                                    rf'{os.getpid()}'):
            train_pipeline.main(train_argv(synth_nusc, nan_run.out))
    finally:
        lock.release()
    stale = nan_run.run_dir / 'ckpt' / '.tmp_k1ll3d.pth'
    stale.write_bytes(b'PK\x03\x04half a checkpoint')
    capsys.readouterr()
    trainer = train_pipeline.main(train_argv(synth_nusc, nan_run.out))  # same config: resumes, nothing to do
    assert trainer.it == 2 and not stale.exists()
    assert f'Removed {stale}: the temp file of a checkpoint save that was interrupted' in capsys.readouterr().out
    assert not (nan_run.run_dir / LOCK_NAME).exists()  # released at the end


def test_epochs_zero_is_an_error(synth_nusc, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_pipeline.main(train_argv(synth_nusc, tmp_path, epochs='0'))
    assert exit_info.value.code == 2 and 'argument --epochs: must be >= 1, got 0' in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r'--set: OPTIMIZATION.NUM_EPOCHS: must be >= 1, got 0'):
        train_pipeline.main(['--cfg', TINY, '--output_root', str(tmp_path), '--set', *data_set(synth_nusc),
                             'OPTIMIZATION.NUM_EPOCHS', '0'])
    assert list(tmp_path.iterdir()) == []


def test_eval_all_on_a_missing_dir_exits_nonzero_naming_it(tmp_path, synth_nusc):
    missing = tmp_path / 'output' / 'ckpt_misspelt'
    proc = subprocess.run([sys.executable, 'tools/test.py', '--cfg', TINY, '--eval_all', '--ckpt_dir', str(missing),
                           '--workers', '0', '--set', *data_set(synth_nusc)], cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS='1'), timeout=300)
    assert proc.returncode != 0
    assert f'RunDirError: --eval_all: checkpoint directory {missing} does not exist' in proc.stderr
    (tmp_path / 'empty_ckpt').mkdir()
    from rdd.engine import test_pipeline
    with pytest.raises(RunDirError, match=r'no checkpoint_epoch_N.pth in .*empty_ckpt'):
        test_pipeline.main(['--cfg', TINY, '--eval_all', '--ckpt_dir', str(tmp_path / 'empty_ckpt'), '--workers',
                            '0', '--output_root', str(tmp_path), '--set', *data_set(synth_nusc)])


def test_partial_val_infos_stop_training_before_the_first_step(synth_nusc, tmp_path):
    data = tmp_path / 'data'
    (data / synth_nusc.version).mkdir(parents=True)
    for name in os.listdir(synth_nusc.root):
        os.symlink(os.path.join(synth_nusc.root, name), data / synth_nusc.version / name)
    val = data / synth_nusc.version / 'nuscenes_infos_10sweeps_val.pkl'
    infos = pickle.load(open(synth_nusc.val_info_path, 'rb'))
    val.unlink()
    val.write_bytes(pickle.dumps(infos[:1]))

    class NoStep(HookBase):
        def before_train(self, trainer):
            raise AssertionError('training started before the evaluation inputs were checked')
    argv = train_argv(synth_nusc, tmp_path / 'out')
    argv.remove('--skip_eval')
    argv[argv.index(synth_nusc.data_path)] = str(data)
    from rdd.datasets.nuscenes_splits import PartialEvaluationError
    with pytest.raises(PartialEvaluationError, match=r'cover 1 of the 4 samples'):
        train_pipeline.main(argv, hooks=[NoStep()])
    assert not (tmp_path / 'out').exists()


# ---------------------------------------------------------------- small traps
def test_empty_kd_losses_is_a_config_error_naming_the_key(tiny_teacher_ckpt):
    from rdd.distill.build import parse_distiller_config
    from rdd.engine.cli import load_config
    from rdd.errors import KDConfigError
    with pytest.raises(ConfigError, match=r'--set: MODEL.KD_LOSSES: is empty'):
        load_config(str(REPO / 'tests' / 'configs' / 'tiny_kd.yaml'), ['MODEL.KD_LOSSES', '[]'],
                    teacher_ckpt=str(tiny_teacher_ckpt))
    cfg = load_config(str(REPO / 'tests' / 'configs' / 'tiny_kd.yaml'), teacher_ckpt=str(tiny_teacher_ckpt))
    cfg.MODEL.KD_LOSSES = []
    with pytest.raises(KDConfigError, match=r'MODEL.KD_LOSSES: is empty'):
        parse_distiller_config(cfg.MODEL)


class PdeathsigOfWorker(torch.utils.data.Dataset):
    def __len__(self):
        return 1

    def __getitem__(self, i):
        sig = ctypes.c_int(0)
        ctypes.CDLL(None).prctl(2, ctypes.byref(sig), 0, 0, 0)  # PR_GET_PDEATHSIG
        return sig.value


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='PR_SET_PDEATHSIG is Linux-only')
def test_dataloader_workers_die_with_their_parent(tmp_path):
    from functools import partial

    from rdd.datasets import worker_init_fn
    loader = torch.utils.data.DataLoader(PdeathsigOfWorker(), num_workers=1,
                                         worker_init_fn=partial(worker_init_fn, seed=None))
    assert [int(x) for x in loader] == [signal.SIGKILL]
    script = ("import os, sys, time, torch\nsys.path.insert(0, os.getcwd())\nfrom rdd.datasets import worker_init_fn\n"
              "class D(torch.utils.data.Dataset):\n    def __len__(self): return 2\n"
              "    def __getitem__(self, i):\n        time.sleep(0 if i == 0 else 600); return os.getpid()\n"
              "it = iter(torch.utils.data.DataLoader(D(), num_workers=1, worker_init_fn=worker_init_fn))\n"
              "print(int(next(it)), flush=True)\nnext(it)\n")
    trainer = subprocess.Popen([sys.executable, '-c', script], cwd=REPO, stdout=subprocess.PIPE, text=True)
    worker = int(trainer.stdout.readline())
    trainer.send_signal(signal.SIGKILL)
    trainer.wait()
    from rdd.engine.run_lock import _pid_alive
    deadline = time.time() + 10
    while _pid_alive(worker) and time.time() < deadline:
        time.sleep(0.1)
    orphaned = _pid_alive(worker)
    if orphaned:
        os.kill(worker, signal.SIGKILL)  # do not leave it sleeping behind the test
    assert not orphaned, 'the DataLoader worker outlived its SIGKILLed parent'


def test_evaluation_refuses_a_nonfinite_checkpoint(tmp_path):
    """tools/test.py's weight loading: a checkpoint with a NaN tensor (e.g. written by another tool) is refused,
    naming the file and the tensor, and nothing is loaded into the model."""
    from rdd.engine.test_pipeline import load_weights
    model = FakeDetector()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    name = next(k for k in state if state[k].is_floating_point())
    state[name].view(-1)[0] = NAN
    torch.save({'model_state': state}, tmp_path / 'checkpoint_epoch_3.pth')
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(NonFiniteCheckpointError, match=rf'refusing to evaluate checkpoint .*checkpoint_epoch_3\.pth: '
                                                       rf'1 tensor with NaN/Inf: {re.escape(name)}'):
        load_weights(model, str(tmp_path / 'checkpoint_epoch_3.pth'), logging.getLogger('test'))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
