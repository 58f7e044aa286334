"""Create OpenPCDet-schema info files (and the GT-sampling database) for a nuScenes-format dataroot.

    python tools/create_data.py nuscenes --root data/nuscenes/v1.0-trainval --version v1.0-trainval

``--root`` is the devkit dataroot holding ``<version>/`` (OpenPCDet: ``DATA_PATH/VERSION``); the outputs are
written there: ``nuscenes_infos_10sweeps_{train,val}.pkl``, ``gt_database_10sweeps_withvelo/`` and
``nuscenes_dbinfos_10sweeps_withvelo.pkl`` (the database is built on the CPU).
"""
import argparse
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rdd.datasets.cli import run_cli  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest='dataset', required=True)
    nus = sub.add_parser('nuscenes', help='nuScenes-format dataroot (real or synthetic)')
    nus.add_argument('--root', required=True, help='devkit dataroot (holds <version>/ with the JSON tables)')
    nus.add_argument('--version', default='v1.0-trainval', help='v1.0-trainval, v1.0-mini, v1.0-test, ...')
    nus.add_argument('--split-file', '--split_file', default=None,
                     help='JSON {"train": [scene names], "val": [...]}; default <root>/<version>/splits.json '
                          "if present, else the devkit's official split")
    nus.add_argument('--max-sweeps', '--max_sweeps', type=int, default=10)
    nus.add_argument('--no-gt-database', '--no_gt_database', action='store_true',
                     help='skip the GT-sampling database')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    from rdd.datasets.gt_database import create_groundtruth_database
    from rdd.datasets.nuscenes_infos import create_nuscenes_infos
    start = time.time()
    paths = create_nuscenes_infos(args.root, args.version, split_file=args.split_file, max_sweeps=args.max_sweeps)
    for split, path in paths.items():
        print(f'{split} infos: {path}')
    if not args.no_gt_database and 'train' in paths:
        db = create_groundtruth_database(args.root, paths['train'], max_sweeps=args.max_sweeps)
        print(f'gt database: {db}')
    print(f'done in {time.time() - start:.1f} s')
    return 0


if __name__ == '__main__':
    run_cli(main)
