"""Write a synthetic dataset in the nuScenes on-disk format (JSON tables + LiDAR .pcd.bin sweeps).

    python tools/make_synthetic_nuscenes.py --root data/nuscenes/v1.0-trainval --scenes 10 --seed 0

``--root`` is the devkit dataroot (OpenPCDet: ``DATA_PATH/VERSION``). Then build the infos with
``python tools/create_data.py nuscenes --root <root> --version <version>``.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rdd.datasets.cli import run_cli  # noqa: E402
from rdd.datasets.synthetic import LidarConfig, clear_synthetic_root, write_synthetic_nuscenes  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--root', required=True, help='dataroot to write (holds <version>/, samples/, sweeps/, maps/)')
    p.add_argument('--scenes', type=int, required=True, help='number of scenes')
    p.add_argument('--seed', type=int, default=0, help='random seed (same seed -> identical files)')
    p.add_argument('--samples-per-scene', '--samples_per_scene', type=int, default=10,
                   help='key frames per scene (2 Hz; each with 9 preceding 20 Hz sweeps)')
    p.add_argument('--version', default='v1.0-trainval',
                   help='table folder name; v1.0-mini / v1.0-trainval use the devkit split scene names')
    p.add_argument('--val-fraction', '--val_fraction', type=float, default=0.2, help='fraction of val scenes')
    p.add_argument('--azimuth-res', '--azimuth_res', type=float, default=LidarConfig.azimuth_res_deg,
                   help='LiDAR azimuth step in degrees (0.33: HDL-32E at 20 Hz, ~30k points per sweep)')
    p.add_argument('--workers', type=int, default=min(2, os.cpu_count() or 1), help='parallel processes')
    p.add_argument('--overwrite', action='store_true', help='replace an existing synthetic root')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    if args.overwrite:
        clear_synthetic_root(args.root, args.version)
    out = write_synthetic_nuscenes(args.root, args.scenes, seed=args.seed, samples_per_scene=args.samples_per_scene,
                                   version=args.version, val_fraction=args.val_fraction,
                                   lidar=LidarConfig(azimuth_res_deg=args.azimuth_res), workers=args.workers)
    print(f'wrote {len(out.train_scenes)} train + {len(out.val_scenes)} val scenes, {out.num_samples} samples, '
          f'{out.num_sweep_files} LiDAR files to {out.root} ({out.version}) in {time.time() - start:.1f} s; '
          f'split: {out.split_file}')
    return 0


if __name__ == '__main__':
    run_cli(main)
