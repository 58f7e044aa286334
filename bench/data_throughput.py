"""Data-pipeline throughput: samples/s and per-stage ms of loading + 10-sweep merge + augmentation + voxelization.

Writes (or reuses, with ``--root``) a small synthetic nuScenes-format root (HDL-32E-like sweeps, ~30k points
each, so ~300k points per 10-sweep sample as in nuScenes), its infos and GT database, then measures the data
config of ``--cfg`` (default: the CP-Voxel 0.075 m teacher; CBGS off) in three modes: ``test``,
``train_no_gts`` (flip, rotation, scaling, translation) and ``train`` (the same plus gt-sampling):

* in this process (``__getitem__`` called directly) at each ``--threads`` torch thread count: samples/s and the
  per-stage ms (load + sweep merge, gt-sampling, world augmentations, feature encoding, range mask + shuffle,
  voxelization, the rest), measured by wrapping the dataset's stage objects;
* through the real ``DataLoader`` (``build_dataloader``, batch ``--batch_size``) at each ``--workers`` count;
* a digest of the first samples under a fixed seed (points, voxels, sums) to check that outputs match.

``--rdd_root DIR`` imports ``rdd`` from another checkout (e.g. a worktree at main's HEAD). ``--compare DIR``
runs this script alternately on ``DIR`` (before) and on this checkout (after), ``--reps`` times each, in fresh
processes on the same data, and reports per-metric medians and after/before ratios side by side.

    python bench/data_throughput.py [--iters 20] [--threads 1,2] [--workers 1,2] [--json out.json]
    python bench/data_throughput.py --compare /path/to/main_checkout --reps 3 --json compare.json
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODES = ('test', 'train_no_gts', 'train')
STAGES = ('load', 'gt_sampling', 'world_aug', 'encode', 'mask_shuffle', 'voxelize', 'other')


def _rdd_root_from_argv():
    for i, a in enumerate(sys.argv):
        if a == '--rdd_root' and i + 1 < len(sys.argv):
            return sys.argv[i + 1]
        if a.startswith('--rdd_root='):
            return a.split('=', 1)[1]
    return None


sys.path.insert(0, str(Path(_rdd_root_from_argv() or REPO).resolve()))

import numpy as np  # noqa: E402


def make_root(base, samples):
    """Synthetic v1.0-mini root under ``base`` (2 scenes x ``samples`` key frames); reused when complete."""
    root = Path(base) / 'v1.0-mini'
    if (root / 'nuscenes_dbinfos_10sweeps_withvelo.pkl').is_file():
        return root
    from rdd.datasets.gt_database import create_groundtruth_database
    from rdd.datasets.nuscenes_infos import create_nuscenes_infos
    from rdd.datasets.synthetic import clear_synthetic_root, write_synthetic_nuscenes
    clear_synthetic_root(str(root), 'v1.0-mini')
    r = write_synthetic_nuscenes(str(root), num_scenes=2, samples_per_scene=samples, version='v1.0-mini')
    create_nuscenes_infos(r.root, r.version)
    create_groundtruth_database(r.root)
    return root


class StageTimer:
    """Accumulates wall seconds per stage name."""

    def __init__(self):
        self.s = dict.fromkeys(STAGES, 0.0)

    def wrap(self, name, fn):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.s[name] += time.perf_counter() - t0
        return timed


class _TimedVoxelizer:
    def __init__(self, inner, timer):
        self._inner, self._call = inner, timer.wrap('voxelize', inner.__call__)

    def __call__(self, *args, **kwargs):
        return self._call(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._inner, name)


def instrument(ds):
    """Wrap the dataset's stage objects; returns the StageTimer (voxelize is counted inside mask_shuffle too)."""
    from rdd.datasets.augmentor import DataBaseSampler
    timer = StageTimer()
    ds.get_lidar_with_sweeps = timer.wrap('load', ds.get_lidar_with_sweeps)
    if ds.data_augmentor is not None:
        queue = ds.data_augmentor.data_augmentor_queue
        for i, aug in enumerate(queue):
            if isinstance(aug, DataBaseSampler):
                queue[i] = timer.wrap('gt_sampling', aug)
        ds.data_augmentor.forward = timer.wrap('world_aug', ds.data_augmentor.forward)
    ds.point_feature_encoder.forward = timer.wrap('encode', ds.point_feature_encoder.forward)
    ds.data_processor.forward = timer.wrap('mask_shuffle', ds.data_processor.forward)
    ds.data_processor.voxelizer = _TimedVoxelizer(ds.data_processor.voxelizer, timer)
    return timer


def data_cfg_for(cfg, mode):
    import copy
    d = copy.deepcopy(cfg.DATA_CONFIG)
    d.VERSION = 'v1.0-mini'
    d.BALANCED_RESAMPLING = False  # resampling only changes the sample list
    if mode == 'train_no_gts':
        d.DATA_AUGMENTOR.DISABLE_AUG_LIST = list(d.DATA_AUGMENTOR.get('DISABLE_AUG_LIST', [])) + ['gt_sampling']
    return d


def build(cfg, mode, base, workers=0, batch_size=1, seed=0):
    from rdd.datasets import build_dataloader
    np.random.seed(seed)
    return build_dataloader(data_cfg_for(cfg, mode), cfg.CLASS_NAMES, batch_size=batch_size, dist=False,
                            root_path=base, workers=workers, training=mode != 'test', seed=seed)


def in_process(cfg, mode, base, iters, threads):
    """``__getitem__`` in this process at ``threads`` torch threads: samples/s and per-stage ms."""
    import torch
    torch.set_num_threads(threads)
    ds, _, _ = build(cfg, mode, base)
    n = len(ds)
    for i in range(2):
        ds[i % n]  # warm-up (builds the voxel generator)
    timer = instrument(ds)
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(iters):
        ds[i % n]
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    st = {k: 1000 * v / iters for k, v in timer.s.items()}
    st['world_aug'] -= st['gt_sampling']  # the augmentor's forward includes the gt-sampling step
    st['mask_shuffle'] -= st['voxelize']  # the processor's forward includes voxelization
    st['other'] = 1000 * total / iters - sum(st[k] for k in STAGES if k != 'other')
    return {'samples_per_s': iters / total, 'ms_per_sample': 1000 * total / iters,
            'cpu_ms_per_sample': 1000 * cpu / iters, 'stage_ms': {k: round(v, 2) for k, v in st.items()}}


def through_loader(cfg, mode, base, iters, workers, batch_size):
    """Samples/s through the DataLoader with ``workers`` processes (worker start-up excluded)."""
    ds, dl, _ = build(cfg, mode, base, workers=workers, batch_size=batch_size)
    n_batches = max(1, iters // batch_size)
    ds.merge_all_iters_to_one_epoch(True, epochs=int(np.ceil((n_batches + workers + 1) * batch_size / len(ds))) + 1)
    it = iter(dl)
    for _ in range(max(1, workers)):
        next(it)  # every worker has started and built its voxel generator
    t0 = time.perf_counter()
    samples = 0
    for _ in range(n_batches):
        samples += next(it)['batch_size']
    total = time.perf_counter() - t0
    del it
    return {'samples_per_s': samples / total, 'batch_size': batch_size, 'samples': samples}


def digest(cfg, mode, base, count=4, seed=0):
    """Sizes and sums of the first ``count`` samples under ``np.random.seed(seed)`` (1 torch thread)."""
    import torch
    torch.set_num_threads(1)
    ds, _, _ = build(cfg, mode, base, seed=seed)
    out = []
    for i in range(min(count, len(ds))):
        d = ds[i]
        out.append({'points': int(len(d['points'])), 'voxels': int(len(d['voxels'])),
                    'points_sum': float(d['points'].astype(np.float64).sum()),
                    'voxels_sum': float(d['voxels'].astype(np.float64).sum()),
                    'coords_sum': int(d['voxel_coords'].astype(np.int64).sum()),
                    'boxes_sum': float(np.nansum(d['gt_boxes'].astype(np.float64)))})
    return out


def run_one(args):
    import rdd
    import torch
    from rdd.config import cfg_from_yaml_file
    cfg = cfg_from_yaml_file(args.cfg)
    base = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix='rdd_bench_data_'))
    make_root(base, args.samples)
    threads = [int(t) for t in args.threads.split(',')]
    workers = [int(w) for w in args.workers.split(',') if w != '']
    res = {'rdd': str(Path(rdd.__file__).resolve().parents[1]), 'modes': {}}
    for mode in args.modes.split(','):
        r = {'in_process': {str(t): in_process(cfg, mode, base, args.iters, t) for t in threads},
             'loader': {str(w): through_loader(cfg, mode, base, args.iters, w, args.batch_size) for w in workers},
             'digest': digest(cfg, mode, base)}
        res['modes'][mode] = r
        line = ', '.join(f"{t} thr {r['in_process'][str(t)]['samples_per_s']:.1f}/s" for t in threads)
        line += ''.join(f", {w} workers {r['loader'][str(w)]['samples_per_s']:.1f}/s" for w in workers)
        print(f'{mode:13s} {line}; stages (ms, {threads[0]} thr): {r["in_process"][str(threads[0])]["stage_ms"]}',
              flush=True)
    res['torch'] = torch.__version__
    return res


def _leaves(d, prefix=''):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _leaves(v, f'{prefix}{k}.')
        elif isinstance(v, (int, float)):
            yield f'{prefix}{k}', v


def compare(args):
    """Alternate fresh processes on ``--compare`` (before) and this checkout (after); medians and ratios."""
    base = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix='rdd_bench_data_'))
    sys.path.insert(0, str(REPO))
    make_root(base, args.samples)
    runs = {'before': [], 'after': []}
    common = ['--root', str(base), '--iters', str(args.iters), '--threads', args.threads, '--workers',
              args.workers, '--batch_size', str(args.batch_size), '--cfg', args.cfg, '--modes', args.modes]
    for rep in range(args.reps):
        for label, root in (('before', args.compare), ('after', str(REPO))):
            with tempfile.NamedTemporaryFile(suffix='.json') as f:
                cmd = [sys.executable, str(Path(__file__).resolve()), '--rdd_root', root, '--json', f.name, *common]
                print(f'[rep {rep + 1}/{args.reps}] {label}: {root}', flush=True)
                subprocess.run(cmd, check=True)
                runs[label].append(json.load(open(f.name)))
    med, best = {}, {}
    for label, rs in runs.items():
        vals = {}
        for r in rs:
            for k, v in _leaves(r['modes']):
                if '.digest.' not in k:
                    vals.setdefault(k, []).append(v)
        med[label] = {k: statistics.median(v) for k, v in vals.items()}
        best[label] = {k: max(v) for k, v in vals.items() if k.endswith('samples_per_s')}  # least disturbed run
    ratios = {k: med['after'][k] / med['before'][k] for k in med['after']
              if k.endswith('samples_per_s') and med['before'].get(k)}
    return {'before_root': args.compare, 'after_root': str(REPO), 'reps': args.reps, 'median': med, 'best': best,
            'ratio_after_over_before_samples_per_s': ratios,
            'ratio_of_best_samples_per_s': {k: best['after'][k] / best['before'][k] for k in best['after']},
            'digest': {label: rs[0]['modes'] for label, rs in runs.items()}, 'runs': runs}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--cfg', default=str(REPO / 'configs' / 'cp_voxel_0075.yaml'))
    ap.add_argument('--root', default=None, help='folder for the synthetic data (reused when complete)')
    ap.add_argument('--samples', type=int, default=4, help='key frames per scene (2 scenes)')
    ap.add_argument('--iters', type=int, default=20, help='samples timed per measurement')
    ap.add_argument('--threads', default='1,2', help='torch thread counts for the in-process measurement')
    ap.add_argument('--workers', default='1,2', help='DataLoader worker counts ("" for none)')
    ap.add_argument('--batch_size', type=int, default=2)
    ap.add_argument('--modes', default=','.join(MODES), help=f'subset of {MODES}')
    ap.add_argument('--rdd_root', default=None, help='import rdd from this checkout')
    ap.add_argument('--compare', default=None, help='checkout to compare against (before), run alternately')
    ap.add_argument('--reps', type=int, default=3, help='repetitions per side with --compare')
    ap.add_argument('--json', default=None, help='write the results to this JSON file')
    args = ap.parse_args()
    import torch
    results = {'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
               'machine': {'platform': platform.platform(), 'cpu_count': os.cpu_count(),
                           'default_torch_threads': torch.get_num_threads(), 'python': platform.python_version(),
                           'loadavg_at_start': os.getloadavg()},
               'command': ' '.join([Path(sys.executable).name] + sys.argv), 'cfg': str(args.cfg),
               'iters': args.iters}
    results.update(compare(args) if args.compare else run_one(args))
    if args.compare:
        for k, v in sorted(results['ratio_after_over_before_samples_per_s'].items()):
            print(f"{k:45s} before {results['median']['before'][k]:7.2f}  after {results['median']['after'][k]:7.2f}"
                  f"  x{v:.2f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=2)
        print(f'wrote {args.json}')


if __name__ == '__main__':
    main()
