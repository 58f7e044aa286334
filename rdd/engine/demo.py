"""The CPU demo: synthetic nuScenes-format data -> teacher -> student alone -> student distilled with RDD,
each evaluated with the nuScenes devkit, summarised in one table (``tools/demo.py``)."""
import argparse
import json
import os
import time
from pathlib import Path

import torch

from rdd.config import ROOT_DIR
from rdd.datasets import build_dataloader
from rdd.datasets.nuscenes_infos import create_nuscenes_infos
from rdd.datasets.synthetic import write_synthetic_nuscenes
from rdd.engine.batch import load_data_to_device
from rdd.engine.checkpoint_io import checkpoint_state, save_checkpoint
from rdd.engine.cli import load_config
from rdd.engine.hooks import CheckpointHook
from rdd.engine.rng import set_random_seed
from rdd.engine.test_pipeline import main as test_main
from rdd.engine.train_pipeline import main as train_main
from rdd.models import build_network
from rdd.models.complexity import count_macs, count_parameters

DATA_ROOT = ROOT_DIR / 'data' / 'nuscenes_synth'
QUICK_DATA_ROOT = ROOT_DIR / 'data' / 'nuscenes_synth_quick'
VERSION = 'v1.0-trainval'
CONFIGS = {'teacher': 'configs/demo/cp_voxel.yaml', 'student': 'configs/demo/cp_voxel_s.yaml',
           'rdd': 'configs/demo/rdd_cp_voxel_s.yaml'}
# data size (scenes x key frames per scene) and epochs of the full demo and of the --quick smoke run
# (epochs None: the config's NUM_EPOCHS; the RDD config's schedule is the student's, which the demo checks)
PLANS = {'full': dict(scenes=20, samples=10, epochs=None, extra_tag='demo', data=DATA_ROOT),
         'quick': dict(scenes=4, samples=5, epochs=1, extra_tag='demo_quick', data=QUICK_DATA_ROOT)}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='RDD demo on a synthetic nuScenes-format set (CPU)')
    p.add_argument('--quick', action='store_true', help='a ~2-minute smoke run (1 epoch, small eval)')
    p.add_argument('--out', type=str, default=str(ROOT_DIR / 'output' / 'demo_results'), help='output dir')
    p.add_argument('--data_path', type=str, default=None,
                   help=f'synthetic data root (default {DATA_ROOT}, with --quick {QUICK_DATA_ROOT})')
    p.add_argument('--workers', type=int, default=1, help='dataloader workers')
    p.add_argument('--threads', type=int, default=1, help='torch compute threads')
    p.add_argument('--epochs', type=int, default=None, help='override the plan epochs')
    return p.parse_args(argv)


def ensure_data(root, scenes, samples, log):
    """Write the synthetic set and its infos into ``root`` unless they are there already."""
    root = Path(root) / VERSION  # the devkit dataroot (OpenPCDet: DATA_PATH / VERSION)
    infos = [root / f'nuscenes_infos_10sweeps_{s}.pkl' for s in ('train', 'val')]
    if all(p.is_file() for p in infos):
        log(f'Using the synthetic set in {root}')
        return
    tic = time.time()
    if not (root / VERSION).is_dir():
        log(f'Writing the synthetic nuScenes-format set ({scenes} scenes x {samples} samples) to {root}')
        write_synthetic_nuscenes(str(root), num_scenes=scenes, seed=0, samples_per_scene=samples,
                                 version=VERSION, workers=min(2, os.cpu_count() or 1))
    log('Creating info files')
    create_nuscenes_infos(str(root), VERSION, max_sweeps=10)
    log(f'Data ready in {time.time() - tic:.0f} s')


def _common_argv(cfg, args, plan):
    return ['--cfg', str(ROOT_DIR / cfg), '--extra_tag', plan['extra_tag'], '--workers', str(args.workers),
            '--output_root', str(Path(args.out) / 'runs')]


def run_train(cfg, args, plan, epochs, teacher_ckpt=None):
    """Train ``cfg`` for ``epochs`` (resuming a finished or interrupted run); returns the last checkpoint."""
    argv = _common_argv(cfg, args, plan) + ['--epochs', str(epochs), '--fix_random_seed', '--skip_eval']
    if teacher_ckpt is not None:
        argv += ['--teacher_ckpt', str(teacher_ckpt)]
    trainer = train_main(argv + ['--set', 'DATA_CONFIG.DATA_PATH', str(args.data_path)])
    return Path(trainer.hook(CheckpointHook).ckpt_dir) / f'checkpoint_epoch_{epochs}.pth'


def schedule(cfg_path, plan):
    """``(epochs, LR)`` a demo job trains with: the plan's epochs if set, else the config's."""
    opt = load_config(str(ROOT_DIR / cfg_path)).OPTIMIZATION
    return int(plan['epochs'] or opt.NUM_EPOCHS), float(opt.LR)


def run_test(cfg, ckpt, args, plan, teacher_ckpt=None):
    """Evaluate ``ckpt`` with the devkit (batch 1, with latency); returns the metrics dict."""
    argv = _common_argv(cfg, args, plan) + ['--batch_size', '1', '--infer_time', '--ckpt', str(ckpt)]
    if teacher_ckpt is not None:
        argv += ['--teacher_ckpt', str(teacher_ckpt)]
    return test_main(argv + ['--set', 'DATA_CONFIG.DATA_PATH', str(args.data_path)])


def complexity(cfg_path, data_path):
    """``(params, MACs)`` of the detector ``cfg_path`` builds, MACs on the first val sample."""
    try:
        cfg = load_config(str(ROOT_DIR / cfg_path), ['DATA_CONFIG.DATA_PATH', str(data_path)])
        dataset, _, _ = build_dataloader(cfg.DATA_CONFIG, cfg.CLASS_NAMES, 1, False, workers=0, training=False)
        model = build_network(cfg.MODEL, num_class=len(cfg.CLASS_NAMES), dataset=dataset)
        batch = load_data_to_device(dataset.collate_batch([dataset[0]]), 'cpu')
        return count_parameters(model)[0], count_macs(model, batch)[0]
    except Exception as exc:  # reporting only: never fail the demo over it
        print(f'[demo] complexity of {cfg_path} not measured: {exc}')
        return None, None


def untrained_checkpoint(cfg_path, data_path, path, seed=666):
    """Save the randomly initialised model of ``cfg_path`` (the demo's seed) as a checkpoint at ``path``."""
    cfg = load_config(str(ROOT_DIR / cfg_path), ['DATA_CONFIG.DATA_PATH', str(data_path)])
    dataset, _, _ = build_dataloader(cfg.DATA_CONFIG, cfg.CLASS_NAMES, 1, False, workers=0, training=False)
    rng = torch.get_rng_state()
    set_random_seed(seed)
    model = build_network(cfg.MODEL, num_class=len(cfg.CLASS_NAMES), dataset=dataset)
    torch.set_rng_state(rng)
    return save_checkpoint(checkpoint_state(model, epoch=0, it=0), path)


SEEDS = 1  # training seeds per row: --fix_random_seed (666)


def format_table(rows, seeds=SEEDS):
    """The demo table: one line per model (``n/a`` where a value was not measured), then how many training
    seeds each row shows."""
    cols = [('model', 28, None), ('mAP', 8, '.4f'), ('NDS', 8, '.4f'), ('params (M)', 12, '.3f'),
            ('GMACs', 9, '.2f'), ('latency (ms)', 14, '.1f')]
    head = ''.join(f'{name:<{w}}' if fmt is None else f'{name:>{w}}' for name, w, fmt in cols)
    lines = [head, '-' * len(head)]
    for r in rows:
        values = [r['model'], r['mAP'], r['NDS'], r['params'] / 1e6 if r['params'] else None,
                  r['macs'] / 1e9 if r['macs'] else None, r['latency_ms']]
        cells = []
        for (name, w, fmt), v in zip(cols, values):
            if fmt is None:
                cells.append(f'{v:<{w}}')
            else:
                cells.append(f'{v:>{w}{fmt}}' if isinstance(v, (int, float)) else f'{"n/a":>{w}}')
        lines.append(''.join(cells))
    lines.append('1 training seed per row (--fix_random_seed): one seed does not resolve differences between '
                 'rows; bench/kd_benchmark.py measures them over several seeds (docs/results.md, KD benchmark)'
                 if seeds == 1 else f'{seeds} training seeds per row')
    return '\n'.join(lines)


def main(argv=None):
    """Run the demo; returns the summary written to ``<out>/results.json``."""
    threads = torch.get_num_threads()
    try:
        return _run(parse_args(argv))
    finally:
        torch.set_num_threads(threads)


def _run(args):
    plan = dict(PLANS['quick' if args.quick else 'full'])
    if args.epochs is not None:
        plan['epochs'] = args.epochs
    if args.data_path is None:
        args.data_path = str(plan['data'])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)  # CPU sparse convs: 1 compute thread + 1 loader worker suits 2 cores
    start = time.time()
    log = lambda msg: print(f'[demo {time.time() - start:6.0f}s] {msg}', flush=True)
    ensure_data(args.data_path, plan['scenes'], plan['samples'], log)
    rows, notes = [], []
    jobs = [('teacher CP-Voxel (demo)', 'teacher'), ('student CP-Voxel-S alone', 'student')]
    ok = (ROOT_DIR / CONFIGS['rdd']).is_file()
    if ok:
        jobs.append(('student CP-Voxel-S + RDD', 'rdd'))
    else:
        notes.append(f'RDD row skipped: {CONFIGS["rdd"]} does not exist')
        log(notes[-1])
    teacher_ckpt = None
    if ok and schedule(CONFIGS['rdd'], plan) != schedule(CONFIGS['student'], plan):
        notes.append(f'{CONFIGS["rdd"]} trains with (epochs, LR) {schedule(CONFIGS["rdd"], plan)}, the student alone '
                     f'with {schedule(CONFIGS["student"], plan)}: the RDD and student rows are not a like-for-like '
                     f'comparison')
        log(notes[-1])
    log('Evaluating the untrained teacher (random init): the baseline a trained teacher must beat')
    ckpt = untrained_checkpoint(CONFIGS['teacher'], args.data_path, out / 'untrained_teacher.pth')
    result = run_test(CONFIGS['teacher'], ckpt, args, plan)
    rows.append({'model': 'teacher, untrained', 'config': CONFIGS['teacher'], 'epochs': 0, 'checkpoint': str(ckpt),
                 'mAP': result.get('mAP'), 'NDS': result.get('NDS'), 'params': None, 'macs': None,
                 'latency_ms': result.get('infer_time_ms')})
    for label, key in jobs:
        cfg = CONFIGS[key]
        kd_teacher = teacher_ckpt if key == 'rdd' else None
        epochs = schedule(cfg, plan)[0]
        log(f'Training {label} ({cfg}, {epochs} epochs)')
        ckpt = run_train(cfg, args, plan, epochs, kd_teacher)
        if key == 'teacher':
            teacher_ckpt = ckpt
        log(f'Evaluating {label}')
        result = run_test(cfg, ckpt, args, plan, kd_teacher)
        # the distilled model deploys as the plain student: same parameters and MACs
        params, macs = complexity(CONFIGS['student'] if key == 'rdd' else cfg, args.data_path)
        rows.append({'model': label, 'config': cfg, 'epochs': epochs, 'checkpoint': str(ckpt), 'mAP': result.get('mAP'),
                     'NDS': result.get('NDS'), 'params': params, 'macs': macs,
                     'latency_ms': result.get('infer_time_ms')})
    teacher_row = next((r for r in rows if r['config'] == CONFIGS['teacher'] and r['epochs']), None)
    if teacher_row is not None:  # the untrained row is the same network
        rows[0]['params'], rows[0]['macs'] = teacher_row['params'], teacher_row['macs']
    table = format_table(rows)
    print('\n' + table + '\n' + '\n'.join(notes), flush=True)
    summary = {'rows': rows, 'notes': notes, 'quick': args.quick, 'seeds': SEEDS,
               'data_path': str(args.data_path), 'wall_time_s': round(time.time() - start, 1), 'table': table}
    (out / 'results.json').write_text(json.dumps(summary, indent=2))
    log(f'Wrote {out / "results.json"}')
    return summary
