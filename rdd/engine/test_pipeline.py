"""What ``tools/test.py`` does: evaluate one checkpoint, or every checkpoint of a run (``--eval_all``)."""
import os
import re
import time
from pathlib import Path

from rdd.datasets import build_dataloader
from rdd.engine import checkpoint_io, cli, dist
from rdd.engine.evaluator import Evaluator
from rdd.engine.logging_utils import add_file_handler, create_logger
from rdd.engine.run_dir import RunDir
from rdd.errors import CheckpointError
from rdd.models import build_network
from rdd.models.checkpoint import load_state_dict_strict, read_model_state


def epoch_id_of(path):
    m = re.search(r'checkpoint_epoch_(\d+)', os.path.basename(os.fspath(path)))
    return m.group(1) if m else 'no_number'


def load_weights(model, ckpt_path, logger):
    """Strictly load the model state of ``ckpt_path`` (clear error listing the keys that do not fit)."""
    try:
        load_state_dict_strict(model, read_model_state(ckpt_path), strict=True, logger=logger)
    except CheckpointError as exc:
        raise CheckpointError(f'checkpoint {ckpt_path} does not fit the model of this config:\n{exc}') from exc


def build_eval_objects(cfg, args, dist_info, logger):
    per_proc = int(cfg.OPTIMIZATION.get('BATCH_SIZE_PER_GPU', 1)) if args.batch_size is None else \
        dist.per_process_batch_size(args.batch_size, dist_info.world_size)
    test_set, test_loader, _ = build_dataloader(
        dataset_cfg=cfg.DATA_CONFIG, class_names=cfg.CLASS_NAMES, batch_size=per_proc,
        dist=dist_info.distributed, workers=args.workers, logger=logger, training=False)
    if len(test_set) == 0:
        raise ValueError(f"the test split {cfg.DATA_CONFIG.get('DATA_SPLIT', {}).get('test')!r} under "
                         f"{cfg.DATA_CONFIG.get('DATA_PATH')} has no samples")
    if dist_info.is_main and hasattr(test_set, 'check_evaluation_inputs'):
        test_set.check_evaluation_inputs()  # bad devkit tables, partial infos: fail now, not after inference
    model = build_network(model_cfg=cfg.MODEL, num_class=len(cfg.CLASS_NAMES), dataset=test_set)
    model.to(dist_info.device)
    return model, Evaluator(test_loader, cfg.CLASS_NAMES, dist_info.device, logger=logger)


def eval_one(model, evaluator, ckpt, out_dir, args, logger):
    logger.info('Evaluating %s', ckpt)
    load_weights(model, ckpt, logger)
    return evaluator.evaluate(model, out_dir, save_to_file=args.save_to_file, infer_time=args.infer_time)


def eval_all(model, evaluator, ckpt_dir, out_root, split, args, logger):
    """Evaluate every ``checkpoint_epoch_N.pth`` (N >= ``--start_epoch``) once, waiting up to
    ``--max_waiting_mins`` for new ones; records finished epochs in ``eval_list_<split>.txt``."""
    record = out_root / f'eval_list_{split}.txt'
    done = set(record.read_text().split()) if record.exists() else set()
    results, waited = {}, 0.0
    while True:
        todo = [(e, p) for e, p in checkpoint_io.list_epoch_checkpoints(ckpt_dir)
                if e >= args.start_epoch and str(e) not in done]
        todo = dist.all_gather_object(todo)[0]  # rank 0 decides, so every rank evaluates the same checkpoint
        if not todo:
            if waited >= args.max_waiting_mins * 60:
                break
            time.sleep(30)
            waited += 30
            continue
        epoch, path = todo[0]
        results[epoch] = eval_one(model, evaluator, path, out_root / f'epoch_{epoch}' / split, args, logger)
        done.add(str(epoch))
        if dist.get_rank() == 0:
            with open(record, 'a') as f:
                f.write(f'{epoch}\n')
    if not results:
        logger.warning('No checkpoint to evaluate in %s', ckpt_dir)
    return results


def main(argv=None):
    args = cli.test_parser().parse_args(argv)
    cfg = cli.load_config(args.cfg_file, args.set_cfgs, args.teacher_ckpt)
    if not args.eval_all and args.ckpt is None:
        raise SystemExit('tools/test.py needs --ckpt <file> or --eval_all')
    if args.ckpt is not None and not os.path.isfile(args.ckpt):
        raise FileNotFoundError(f'checkpoint not found: {args.ckpt}')
    dist_info = dist.init_distributed(args.launcher)
    logger = create_logger('rdd.test', rank=dist_info.rank)
    try:
        model, evaluator = build_eval_objects(cfg, args, dist_info, logger)
        run_dir = RunDir(cli.output_root(args, cfg), cfg.EXP_GROUP_PATH, cfg.TAG, args.extra_tag)
        split = cfg.DATA_CONFIG.DATA_SPLIT['test']
        if args.eval_all:
            ckpt_dir = Path(args.ckpt_dir) if args.ckpt_dir else run_dir.ckpt_dir
            out_root = run_dir.eval_dir / f'eval_all_{args.eval_tag}'
            if dist_info.is_main:
                out_root.mkdir(parents=True, exist_ok=True)
                add_file_handler(logger, out_root / f'log_eval_{time.strftime("%Y%m%d-%H%M%S")}.txt')
            return eval_all(model, evaluator, ckpt_dir, out_root, split, args, logger)
        out_dir = run_dir.eval_dir / f'epoch_{epoch_id_of(args.ckpt)}' / split / args.eval_tag
        if dist_info.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
            add_file_handler(logger, out_dir / f'log_eval_{time.strftime("%Y%m%d-%H%M%S")}.txt')
        return eval_one(model, evaluator, args.ckpt, out_dir, args, logger)
    finally:
        dist.cleanup()
