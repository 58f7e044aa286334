"""Data-pipeline throughput: samples/s of loading + 10-sweep merge + augmentation + voxelization.

Writes a small synthetic nuScenes-format root (HDL-32E-like sweeps, ~27k points each, so ~270k points per
10-sweep sample as in nuScenes), its infos and GT database, then times ``NuScenesDataset.__getitem__`` in
training mode (gt_sampling, flip, rotation, scaling, translation; CBGS off) and in test mode with the data
config of ``--cfg`` (default: the CP-Voxel teacher, 0.075 m voxels), in one process.

    python bench/data_throughput.py [--iters 30] [--samples 4] [--json out.json] [--workers 0]
"""
import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_root(root, samples):
    from rdd.datasets.gt_database import create_groundtruth_database
    from rdd.datasets.nuscenes_infos import create_nuscenes_infos
    from rdd.datasets.synthetic import clear_synthetic_root, write_synthetic_nuscenes
    clear_synthetic_root(str(root), 'v1.0-mini')
    r = write_synthetic_nuscenes(str(root), num_scenes=2, samples_per_scene=samples, version='v1.0-mini')
    create_nuscenes_infos(r.root, r.version)
    create_groundtruth_database(r.root)
    return r


def time_mode(cfg, class_names, data_path, training, iters, workers, seed):
    import torch
    from rdd.datasets import build_dataloader
    np.random.seed(seed)
    ds, dl, _ = build_dataloader(cfg, class_names, batch_size=1, dist=False, root_path=data_path,
                                 workers=workers, training=training, seed=seed)
    n = len(ds)
    # stage timings in this process: load + sweep merge, then the full sample
    t0 = time.perf_counter()
    raw = [ds.get_lidar_with_sweeps(i % n, max_sweeps=cfg.MAX_SWEEPS) for i in range(min(iters, 2 * n))]
    t_load = (time.perf_counter() - t0) / len(raw)
    for i in range(2):  # warm-up: builds the voxel generator
        ds[i % n]
    voxels, points = [], []
    if workers == 0:
        t0 = time.perf_counter()
        for i in range(iters):
            d = ds[i % n]
            voxels.append(len(d['voxels']))
            points.append(len(d['points']))
        total = time.perf_counter() - t0
    else:
        ds.merge_all_iters_to_one_epoch(True, epochs=int(np.ceil(iters / n)) + 1)
        it = iter(dl)
        next(it)
        t0 = time.perf_counter()
        for _ in range(iters):
            b = next(it)
            voxels.append(len(b['voxels']))
            points.append(len(b['points']))
        total = time.perf_counter() - t0
    vox = ds.data_processor.voxelizer
    pts = torch.from_numpy(raw[0])
    t0 = time.perf_counter()
    for _ in range(5):
        vox(pts)
    t_vox = (time.perf_counter() - t0) / 5
    return {'samples_per_s': iters / total, 'ms_per_sample': 1000 * total / iters,
            'ms_load_and_merge': 1000 * t_load, 'ms_voxelize_only': 1000 * t_vox,
            'raw_points_per_sample': float(np.mean([len(r) for r in raw])),
            'raw_points_per_sweep': float(np.mean([len(r) for r in raw]) / cfg.MAX_SWEEPS),
            'points_after_processing': float(np.mean(points)), 'voxels_per_sample': float(np.mean(voxels)),
            'dropped_points_max_voxels': int(vox.num_dropped_points)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--cfg', default=str(REPO / 'configs' / 'cp_voxel_0075.yaml'))
    ap.add_argument('--root', default=None, help='folder for the synthetic data (default: a temp dir)')
    ap.add_argument('--samples', type=int, default=4, help='key frames per scene (2 scenes)')
    ap.add_argument('--iters', type=int, default=30)
    ap.add_argument('--workers', type=int, default=0, help='DataLoader workers (0: time __getitem__ directly)')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--json', default=None, help='write the results to this JSON file')
    args = ap.parse_args()

    import torch
    from rdd.config import cfg_from_yaml_file
    cfg = cfg_from_yaml_file(args.cfg)
    dcfg = cfg.DATA_CONFIG
    base = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix='rdd_bench_data_'))
    t0 = time.perf_counter()
    make_root(base / 'v1.0-mini', args.samples)
    t_make = time.perf_counter() - t0
    dcfg.VERSION = 'v1.0-mini'
    dcfg.BALANCED_RESAMPLING = False  # resampling only changes the sample list
    results = {
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'machine': {'platform': platform.platform(), 'processor': platform.processor() or platform.machine(),
                    'cpu_count': os.cpu_count(), 'torch_threads': torch.get_num_threads(),
                    'torch': torch.__version__, 'python': platform.python_version(),
                    'loadavg_at_start': os.getloadavg()},
        'command': ' '.join([Path(sys.executable).name] + sys.argv),
        'cfg': str(args.cfg), 'workers': args.workers, 'iters': args.iters, 'data_write_s': round(t_make, 1),
        'train': time_mode(dcfg, cfg.CLASS_NAMES, base, True, args.iters, args.workers, args.seed),
        'test': time_mode(dcfg, cfg.CLASS_NAMES, base, False, args.iters, args.workers, args.seed),
    }
    for mode in ('train', 'test'):
        r = results[mode]
        print(f"{mode:5s}: {r['samples_per_s']:.2f} samples/s ({r['ms_per_sample']:.0f} ms/sample; load+merge "
              f"{r['ms_load_and_merge']:.0f} ms, voxelize {r['ms_voxelize_only']:.0f} ms); "
              f"{r['raw_points_per_sample']:.0f} raw points ({r['raw_points_per_sweep']:.0f}/sweep), "
              f"{r['voxels_per_sample']:.0f} voxels")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=2)
        print(f'wrote {args.json}')


if __name__ == '__main__':
    main()
