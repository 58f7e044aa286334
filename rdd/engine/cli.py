"""Command-line flags of ``tools/train.py`` and ``tools/test.py`` (OpenPCDet's, plus a few of ours) and config
loading. ``--set`` takes the rest of the command line, as in OpenPCDet."""
import argparse
import os
from pathlib import Path

from rdd.config import ROOT_DIR, cfg_from_list, cfg_from_yaml_file
from rdd.config_schema import validate_config
from rdd.distill import apply_teacher_ckpt
from rdd.engine.run_dir import exp_group_and_tag


def _common(parser):
    parser.add_argument('--cfg_file', '--cfg', dest='cfg_file', type=str, required=True,
                        help='config YAML (OpenPCDet schema)')
    parser.add_argument('--batch_size', type=int, default=None,
                        help='TOTAL batch size over all processes (default: BATCH_SIZE_PER_GPU x world size)')
    parser.add_argument('--workers', type=int, default=4, help='dataloader workers per process')
    parser.add_argument('--extra_tag', type=str, default='default', help='extra tag for this experiment')
    parser.add_argument('--ckpt', type=str, default=None, help='checkpoint to resume from / to evaluate')
    parser.add_argument('--pretrained_model', type=str, default=None, help='weights to start from')
    parser.add_argument('--launcher', choices=['none', 'pytorch'], default='none')
    parser.add_argument('--tcp_port', type=int, default=18888, help='ignored: torchrun sets MASTER_PORT')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=None,
                        help='ignored: LOCAL_RANK is read from the environment')
    parser.add_argument('--output_root', type=str, default=None,
                        help='root of run dirs (default: <repo>/output)')
    parser.add_argument('--max_waiting_mins', type=int, default=0, help='max minutes to wait for checkpoints')
    parser.add_argument('--start_epoch', type=int, default=0, help='first epoch to evaluate')
    parser.add_argument('--save_to_file', action='store_true', default=False, help='write per-sample predictions')
    parser.add_argument('--teacher_ckpt', type=str, default=None,
                        help='distillation configs only: sets MODEL.TEACHER_CKPT')
    return parser


def _epochs(text):
    """``--epochs``: an integer >= 1 (0 would train nothing and then evaluate random weights)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be >= 1, got {value} (to evaluate a checkpoint without training, '
                                         f'use tools/test.py --ckpt FILE)')
    return value


def train_parser():
    parser = _common(argparse.ArgumentParser(description='Train a detector or a distillation run'))
    parser.add_argument('--epochs', type=_epochs, default=None, help='number of epochs (default: NUM_EPOCHS)')
    parser.add_argument('--sync_bn', action='store_true', default=False, help='SyncBatchNorm (CUDA only)')
    parser.add_argument('--fix_random_seed', action='store_true', default=False, help='seed 666 (+ rank)')
    parser.add_argument('--seed', type=int, default=None,
                        help='seed (+ rank) instead of 666; implies --fix_random_seed (multi-seed experiments)')
    parser.add_argument('--ckpt_save_interval', type=int, default=1, help='epochs between checkpoints')
    parser.add_argument('--max_ckpt_save_num', type=int, default=30, help='epoch checkpoints to keep')
    parser.add_argument('--ckpt_save_time_interval', type=int, default=300, help='seconds between latest_model.pth')
    parser.add_argument('--logger_iter_interval', type=int, default=50, help='iterations between log lines')
    parser.add_argument('--eval_interval', type=int, default=0, help='evaluate every N epochs while training')
    parser.add_argument('--skip_eval', action='store_true', default=False, help='no evaluation after training')
    parser.add_argument('--use_amp', action='store_true', default=False, help='mixed precision (CUDA only)')
    parser.add_argument('--find_unused_parameters', action='store_true', default=False,
                        help='DDP find_unused_parameters (also OPTIMIZATION.FIND_UNUSED_PARAMETERS)')
    parser.add_argument('--use_tqdm_to_record', action='store_true', default=False, help='accepted for compatibility')
    parser.add_argument('--wo_gpu_stat', action='store_true', default=False, help='accepted for compatibility')
    parser.add_argument('--set', dest='set_cfgs', default=None, nargs=argparse.REMAINDER,
                        help='KEY VALUE pairs overriding the config; must come last')
    return parser


def test_parser():
    parser = _common(argparse.ArgumentParser(description='Evaluate checkpoints with the nuScenes devkit'))
    parser.add_argument('--eval_tag', type=str, default='default', help='eval tag for this experiment')
    parser.add_argument('--eval_all', action='store_true', default=False, help='evaluate every checkpoint')
    parser.add_argument('--ckpt_dir', type=str, default=None, help='checkpoint dir for --eval_all')
    parser.add_argument('--infer_time', action='store_true', default=False, help='report inference latency')
    parser.add_argument('--set', dest='set_cfgs', default=None, nargs=argparse.REMAINDER,
                        help='KEY VALUE pairs overriding the config; must come last')
    return parser


def load_config(cfg_file, set_cfgs=None, teacher_ckpt=None):
    """Load ``cfg_file`` (clear error when missing), apply and validate the ``--set`` overrides (errors name the
    key and ``--set``), resolve ``MODEL.TEACHER_CKPT`` / ``--teacher_ckpt`` (``rdd.distill.apply_teacher_ckpt``:
    a relative TEACHER_CKPT against ``cfg_file``'s directory, the flag against the CWD), fill ``ROOT_DIR``,
    ``EXP_GROUP_PATH`` and ``TAG``."""
    if not os.path.isfile(cfg_file):
        raise FileNotFoundError(f'config file not found: {cfg_file}')
    cfg = cfg_from_yaml_file(cfg_file)
    if set_cfgs:
        cfg_from_list(set_cfgs, cfg)
        validate_config(cfg, {key: '--set' for key in set_cfgs[0::2]}, Path(cfg_file).resolve())
    apply_teacher_ckpt(cfg, teacher_ckpt)
    if teacher_ckpt is not None and not os.path.isfile(cfg.MODEL.TEACHER_CKPT):
        raise FileNotFoundError(f'--teacher_ckpt not found: {teacher_ckpt}')
    root = Path(cfg.get('ROOT_DIR') or ROOT_DIR)
    cfg.ROOT_DIR = root
    cfg.EXP_GROUP_PATH, cfg.TAG = exp_group_and_tag(cfg_file, root)
    return cfg


def output_root(args, cfg):
    return Path(args.output_root) if args.output_root else Path(cfg.ROOT_DIR) / 'output'
