"""tools/train.py and tools/test.py end to end on the tiny synthetic set (real model, data and devkit)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rdd.engine import train_pipeline
from rdd.engine.hooks import HookBase
from rdd.engine.logging_utils import read_scalar_log
from rdd.errors import CheckpointError

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / 'tests' / 'configs' / 'tiny_teacher.yaml')
TINY_STUDENT = str(REPO / 'tests' / 'configs' / 'tiny_student.yaml')


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    """spconv/torch CPU ops degrade badly with 2 OpenMP threads on a busy 2-core box; tests run on 1."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def data_set(synth):
    return ['DATA_CONFIG.DATA_PATH', synth.data_path, 'DATA_CONFIG.VERSION', synth.version,
            'DATA_CONFIG.BALANCED_RESAMPLING', 'False', 'DATA_CONFIG.MAX_SWEEPS', '2']


def train_argv(synth, out, *extra, cfg=TINY, epochs=1):
    return ['--cfg', cfg, '--batch_size', '4', '--epochs', str(epochs), '--workers', '0', '--output_root', str(out),
            '--fix_random_seed', '--skip_eval', *extra, '--set', *data_set(synth)]


def run_dir(out, cfg=TINY, tag='default'):
    return Path(out) / 'configs' / Path(cfg).stem / tag


@pytest.fixture(scope='module')
def trained(synth_nusc, tmp_path_factory):
    out = tmp_path_factory.mktemp('train_out')
    train_pipeline.main(train_argv(synth_nusc, out, epochs=2))
    return out


def test_train_writes_run_dir_and_strictly_loadable_checkpoint(trained, synth_nusc):
    rd = run_dir(trained)
    assert sorted(p.name for p in (rd / 'ckpt').iterdir()) == ['checkpoint_epoch_1.pth', 'checkpoint_epoch_2.pth']
    assert any(p.name.startswith('events.out.tfevents') for p in (rd / 'tensorboard').iterdir())
    assert list(rd.glob('log_train_*.txt'))
    info = json.loads((rd / 'run_info.json').read_text())
    assert info['seed'] == 666 and info['world_size'] == 1 and info['effective_batch_size'] == 4
    text = (rd / 'config_resolved.yaml').read_text()
    assert '# git_sha:' in text and synth_nusc.data_path in text
    log = read_scalar_log(rd / 'scalars.jsonl')
    assert sorted(log) == [0, 1, 2, 3]  # 8 train samples, batch 4, 2 epochs
    assert {'loss', 'lr', 'grad_norm', 'samples_per_s', 'hm_loss_head_0'} <= set(log[0]) or len(log[0]) > 6
    ckpt = torch.load(rd / 'ckpt' / 'checkpoint_epoch_2.pth', map_location='cpu', weights_only=True)
    assert ckpt['epoch'] == 2 and ckpt['it'] == 4 and int(ckpt['model_state']['global_step']) == 4
    from rdd.datasets import build_dataloader
    from rdd.engine.cli import load_config
    from rdd.models import build_network
    from rdd.models.checkpoint import load_state_dict_strict
    cfg = load_config(TINY, data_set(synth_nusc))
    ds, _, _ = build_dataloader(cfg.DATA_CONFIG, cfg.CLASS_NAMES, 1, False, workers=0, training=False)
    fresh = build_network(cfg.MODEL, len(cfg.CLASS_NAMES), ds)
    load_state_dict_strict(fresh, ckpt['model_state'], strict=True)
    assert torch.equal(fresh.state_dict()['dense_head.shared_conv.0.weight'],
                       ckpt['model_state']['dense_head.shared_conv.0.weight'])


def test_test_py_prints_devkit_metrics(trained, synth_nusc):
    ckpt = run_dir(trained) / 'ckpt' / 'checkpoint_epoch_2.pth'
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, 'tools/test.py', '--cfg', TINY, '--ckpt', str(ckpt), '--workers', '0',
                           '--batch_size', '2', '--output_root', str(trained), '--infer_time',
                           '--set', *data_set(synth_nusc)], cwd=REPO, capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert any(l.startswith('mAP: ') and float(l.split()[1]) >= 0 for l in lines), proc.stdout[-2000:]
    assert any(l.startswith('NDS: ') for l in lines)
    assert any('Inference latency' in l for l in lines)
    eval_dir = run_dir(trained) / 'eval' / 'epoch_2' / 'val' / 'default'
    metrics = json.loads((eval_dir / 'metrics.json').read_text())
    assert 'mAP' in metrics and 'NDS' in metrics and metrics['infer_time_ms'] > 0
    results = json.loads((eval_dir / 'results_nusc.json').read_text())
    assert len(results['results']) == 4  # every val sample scored once


def test_kill_and_resume_reproduces_losses_and_lr(synth_nusc, tmp_path):
    ref_out, run_out = tmp_path / 'ref', tmp_path / 'run'
    argv = lambda out: train_argv(synth_nusc, out, '--batch_size', '2', '--ckpt_save_time_interval', '0', epochs=2)
    train_pipeline.main(argv(ref_out))
    reference = read_scalar_log(run_dir(ref_out) / 'scalars.jsonl')
    assert sorted(reference) == list(range(8))

    class Killed(Exception):
        pass

    class Kill(HookBase):  # a user hook: added without touching the trainer
        def after_step(self, trainer, record):
            if record['it'] == 5:  # mid-epoch 2; latest_model.pth holds iteration 5 (0-based 4 done)
                raise Killed()
    with pytest.raises(Killed):
        train_pipeline.main(argv(run_out), hooks=[Kill()])
    torch.manual_seed(12345)  # a resumed run must take its RNG state from the checkpoint, not from here
    train_pipeline.main(argv(run_out))
    resumed = read_scalar_log(run_dir(run_out) / 'scalars.jsonl')
    assert sorted(resumed) == list(range(8))
    for it in range(8):
        assert resumed[it]['lr'] == reference[it]['lr']
        assert resumed[it]['loss'] == pytest.approx(reference[it]['loss'], rel=1e-5), it


def test_missing_config_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match='no_such.yaml'):
        train_pipeline.main(['--cfg', str(tmp_path / 'no_such.yaml'), '--output_root', str(tmp_path)])
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_of_another_architecture_is_rejected(trained, synth_nusc, tmp_path):
    teacher_ckpt = run_dir(trained) / 'ckpt' / 'checkpoint_epoch_2.pth'
    with pytest.raises(CheckpointError, match='does not fit') as err:
        train_pipeline.main(train_argv(synth_nusc, tmp_path, '--ckpt', str(teacher_ckpt), cfg=TINY_STUDENT))
    assert 'mis-shaped' in str(err.value)
    assert not (tmp_path / 'configs').exists()  # nothing written that a resume could trip over


def test_empty_training_split_is_a_clear_error(synth_nusc, tmp_path):
    import pickle
    data = tmp_path / 'data'
    (data / synth_nusc.version).mkdir(parents=True)
    for name in os.listdir(synth_nusc.root):
        os.symlink(os.path.join(synth_nusc.root, name), data / synth_nusc.version / name)
    empty = data / synth_nusc.version / 'nuscenes_infos_10sweeps_train.pkl'
    empty.unlink()
    empty.write_bytes(pickle.dumps([]))
    argv = train_argv(synth_nusc, tmp_path / 'out')
    argv[argv.index(synth_nusc.data_path)] = str(data)
    with pytest.raises(Exception, match='(?i)no samples|empty') as err:
        train_pipeline.main(argv)
    assert 'train' in str(err.value)
    assert not (tmp_path / 'out').exists()


def test_eval_all_evaluates_every_checkpoint_once(trained, synth_nusc):
    from rdd.engine import test_pipeline
    argv = ['--cfg', TINY, '--eval_all', '--workers', '0', '--batch_size', '2', '--output_root', str(trained),
            '--set', *data_set(synth_nusc)]
    results = test_pipeline.main(argv)
    assert sorted(results) == [1, 2] and all('mAP' in r for r in results.values())
    out = run_dir(trained) / 'eval' / 'eval_all_default'
    assert (out / 'eval_list_val.txt').read_text().split() == ['1', '2']
    assert (out / 'epoch_1' / 'val' / 'metrics.json').is_file()
    assert test_pipeline.main(argv) == {}  # already evaluated: nothing to do


def test_pretrained_model_loads_weights_only(trained, synth_nusc, tmp_path):
    ckpt = str(run_dir(trained) / 'ckpt' / 'checkpoint_epoch_2.pth')
    fresh = train_pipeline.main(train_argv(synth_nusc, tmp_path / 'fresh', '--batch_size', '2'))
    tuned = train_pipeline.main(train_argv(synth_nusc, tmp_path / 'ft', '--batch_size', '2',
                                           '--pretrained_model', ckpt))
    fresh_log = read_scalar_log(run_dir(tmp_path / 'fresh') / 'scalars.jsonl')
    tuned_log = read_scalar_log(run_dir(tmp_path / 'ft') / 'scalars.jsonl')
    assert tuned.it == fresh.it == 4  # counters and schedule start from zero: weights only
    assert tuned_log[0]['lr'] == fresh_log[0]['lr']
    assert tuned_log[0]['loss'] < fresh_log[0]['loss']  # but the weights are the trained ones


def test_auto_resume_skips_an_unreadable_checkpoint(trained, synth_nusc, tmp_path):
    import shutil
    out = tmp_path / 'copy'
    shutil.copytree(run_dir(trained), run_dir(out))
    (run_dir(out) / 'ckpt' / 'latest_model.pth').write_bytes(b'not a checkpoint')  # newest file
    trainer = train_pipeline.main(train_argv(synth_nusc, out, epochs=2))
    assert trainer.it == 4 and trainer.epoch == 2  # resumed from checkpoint_epoch_2.pth, nothing left to train
