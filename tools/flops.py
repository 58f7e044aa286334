"""Parameters, MACs (sparse convs counted from their real index pairs) and CPU latency of detector configs.

    python tools/flops.py --cfg configs/cp_voxel_0075.yaml --cfg configs/cp_voxel_s_0075.yaml [--json out.json]
                          [--points FILE] [--runs N] [--set KEY VALUE ...]

Input: one LiDAR cloud, by default a nuScenes-size synthetic 10-sweep cloud
(``rdd.datasets.synthetic.make_point_cloud(num_sweeps=10, seed=0)``), or ``--points`` (``.npy`` (N, C) or a
nuScenes ``.bin``/``.pcd.bin`` float32 file with ``--point_dims`` values per point, default 5). It is voxelized
with each config's voxel parameters. Latency is the median eval-mode forward time over ``--runs`` runs (after one
warm-up), voxelization excluded, at the current torch thread count. What is counted: ``rdd.models.complexity``.
JSON: ``{"models": [{"cfg", "params", "macs", "latency_ms", "modules": {name: {"params", "macs"}}, ...}]}``.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402


def load_points(path, point_dims=5):
    """(N, C) float32 points from ``.npy`` or a raw float32 ``.bin`` file (``point_dims`` values per point)."""
    if path.endswith('.npy'):
        return np.load(path).astype(np.float32)
    raw = np.fromfile(path, dtype=np.float32)
    if raw.size % point_dims:
        raise ValueError(f'{path}: {raw.size} floats is not a multiple of --point_dims {point_dims}')
    return raw.reshape(-1, point_dims)


def format_table(results):
    """Plain-text table: one row per config, then per-module params / GMACs."""
    lines = [f"{'config':<32} {'params (M)':>11} {'GMACs':>9} {'latency (ms)':>13} {'voxels':>8}"]
    for r in results:
        lat = f"{r['latency_ms']:.0f}" if r['latency_ms'] is not None else '-'
        lines.append(f"{os.path.basename(r['cfg']):<32} {r['params'] / 1e6:>11.3f} {r['macs'] / 1e9:>9.2f} "
                     f"{lat:>13} {r['num_voxels']:>8}")
        for name, m in r['modules'].items():
            lines.append(f"  {name:<30} {m['params'] / 1e6:>11.3f} {m['macs'] / 1e9:>9.2f}")
    if len(results) > 1:
        base = results[0]
        for r in results[1:]:
            lines.append(f"{os.path.basename(r['cfg'])} / {os.path.basename(base['cfg'])}: "
                         f"MACs {100 * r['macs'] / base['macs']:.1f} %, params {100 * r['params'] / base['params']:.1f} %")
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--cfg', '--cfg_file', dest='cfgs', action='append', required=True,
                        help='config YAML (repeat for several models; ratios are relative to the first)')
    parser.add_argument('--json', default=None, help='write the results to this JSON file')
    parser.add_argument('--points', default=None, help='point cloud file (.npy or float32 .bin)')
    parser.add_argument('--point_dims', type=int, default=5, help='floats per point in a .bin file')
    parser.add_argument('--runs', type=int, default=3, help='timed forward runs (0: skip latency)')
    parser.add_argument('--threads', type=int, default=None, help='torch threads (default: torch default)')
    parser.add_argument('--set', dest='set_cfgs', nargs=argparse.REMAINDER, default=None,
                        help='config overrides applied to every config: KEY VALUE ...')
    args = parser.parse_args(argv)

    import torch
    from rdd.config import cfg_from_list, cfg_from_yaml_file
    from rdd.engine.profiling import profile_model
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.points:
        points = load_points(args.points, args.point_dims)
        source = args.points
    else:
        from rdd.datasets.synthetic import make_point_cloud
        points = make_point_cloud(num_sweeps=10, seed=0)
        source = 'rdd.datasets.synthetic.make_point_cloud(num_sweeps=10, seed=0)'
    results = []
    for path in args.cfgs:
        cfg = cfg_from_yaml_file(path)
        if args.set_cfgs:
            cfg_from_list(args.set_cfgs, cfg)
        results.append(profile_model(cfg, points, runs=args.runs, cfg_name=path))
    print(f'input: {source}, {len(points)} points; threads {torch.get_num_threads()}')
    print(format_table(results))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'input': source, 'num_points': int(len(points)), 'models': results}, f, indent=2)
        print(f'wrote {args.json}')
    return results


if __name__ == '__main__':
    main()
