"""Create OpenPCDet-schema info files (and the GT-sampling database) for a nuScenes-format dataroot.

    python tools/create_data.py nuscenes --root data/nuscenes/v1.0-trainval --version v1.0-trainval

``--root`` is the devkit dataroot holding ``<version>/`` (OpenPCDet: ``DATA_PATH/VERSION``); the outputs are
written there: ``nuscenes_infos_10sweeps_{train,val}.pkl``, ``gt_database_10sweeps_withvelo/`` and
``nuscenes_dbinfos_10sweeps_withvelo.pkl`` (the database is built on the CPU).

Scene split (logged): the devkit's official split for an official version name, as OpenPCDet's create_data.py
(a ``splits.json`` in the version folder is ignored); a custom split file for any other version name, or when
given with ``--split_file`` (name its splits with ``--train_split`` / ``--val_split``):

    python tools/create_data.py nuscenes --root /data/other/v1.0-custom --version v1.0-custom \
        --train_split train_detect --val_split holdout
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
                     help='custom split file in the devkit\'s format {"split name": [scene names], ...}. Default: '
                          "the devkit's official split for v1.0-trainval / v1.0-mini / v1.0-test (a splits.json in "
                          'the version folder is ignored, as OpenPCDet does); <root>/<version>/splits.json for any '
                          'other version name')
    nus.add_argument('--train-split', '--train_split', default=None,
                     help="the custom split file's train split (default: 'train')")
    nus.add_argument('--val-split', '--val_split', default=None,
                     help="the custom split file's val split (default: 'val')")
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
    paths = create_nuscenes_infos(args.root, args.version, split_file=args.split_file, max_sweeps=args.max_sweeps,
                                  train_split=args.train_split, val_split=args.val_split)
    for split, path in paths.items():
        print(f'{split} infos: {path}')
    if not args.no_gt_database and 'train' in paths:
        db = create_groundtruth_database(args.root, paths['train'], max_sweeps=args.max_sweeps)
        print(f'gt database: {db}')
    print(f'done in {time.time() - start:.1f} s')
    return 0


if __name__ == '__main__':
    run_cli(main)
