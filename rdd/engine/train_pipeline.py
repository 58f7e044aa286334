"""What ``tools/train.py`` does, step by step; every check that can fail runs before the run dir is touched."""
import datetime
import sys
from dataclasses import dataclass
from typing import Any

import torch

from rdd.config import ROOT_DIR
from rdd.datasets import build_dataloader
from rdd.engine import checkpoint_io, cli, dist
from rdd.engine.evaluator import Evaluator
from rdd.engine.hooks import CheckpointHook, EvalHook, KDHistogramHook, LoggingHook
from rdd.engine.logging_utils import ScalarWriter, add_file_handler, create_logger
from rdd.engine.optimization import build_optimizer, build_scheduler
from rdd.engine.rng import set_random_seed
from rdd.engine.run_dir import RunDir, check_config_drift, git_sha, save_resolved_config
from rdd.engine.run_lock import RunDirLock
from rdd.engine.trainer import Trainer, TrainerOptions
from rdd.errors import CheckpointError, NonFiniteCheckpointError
from rdd.models import build_network
from rdd.models.checkpoint import load_state_dict_strict, read_model_state

SEED = 666


def run_seed(args):
    """The seed of this run: ``--seed``, else 666 with ``--fix_random_seed``, else None (unseeded)."""
    if getattr(args, 'seed', None) is not None:
        return int(args.seed)
    return SEED if args.fix_random_seed else None


@dataclass
class TrainObjects:
    """What a training run is built from (:func:`build_train_objects`)."""
    dataset: Any                 # the training dataset
    loader: Any                  # its DataLoader (its sampler is DistributedSampler under torchrun)
    model: torch.nn.Module       # on the run's device, SyncBN when asked; not yet DDP-wrapped
    optimizer: Any
    scheduler: Any
    epochs: int                  # total epochs (--epochs or OPTIMIZATION.NUM_EPOCHS)
    batch_per_process: int


def _train_loader(cfg, args, dist_info, logger, batch_per_process, epochs):
    """``(dataset, loader)`` of the training split; a clear ValueError when it is empty."""
    empty = ValueError(f"the training split {cfg.DATA_CONFIG.get('DATA_SPLIT', {}).get('train')!r} under "
                       f"{cfg.DATA_CONFIG.get('DATA_PATH')} has no samples (INFO_PATH: "
                       f"{cfg.DATA_CONFIG.get('INFO_PATH', {}).get('train')})")
    try:
        dataset, loader, _ = build_dataloader(
            dataset_cfg=cfg.DATA_CONFIG, class_names=cfg.CLASS_NAMES, batch_size=batch_per_process,
            dist=dist_info.distributed, workers=args.workers, logger=logger, training=True,
            total_epochs=epochs, seed=run_seed(args))
    except ValueError as exc:  # torch's RandomSampler refuses an empty dataset with a cryptic message
        if 'num_samples' in str(exc):
            raise empty from exc
        raise
    if len(dataset) == 0 or len(loader) == 0:
        raise empty
    return dataset, loader


def build_train_objects(cfg, args, dist_info, logger):
    """The :class:`TrainObjects` of a run: data, model (SyncBN as asked), optimizer, schedule, epochs, batch."""
    if args.batch_size is None:
        per_proc = int(cfg.OPTIMIZATION.BATCH_SIZE_PER_GPU)
    else:
        per_proc = dist.per_process_batch_size(args.batch_size, dist_info.world_size)
    epochs = int(args.epochs if args.epochs is not None else cfg.OPTIMIZATION.NUM_EPOCHS)
    dataset, loader = _train_loader(cfg, args, dist_info, logger, per_proc, epochs)
    model = build_network(model_cfg=cfg.MODEL, num_class=len(cfg.CLASS_NAMES), dataset=dataset)
    if args.sync_bn:
        if dist_info.device.type == 'cuda':
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:
            logger.warning('--sync_bn ignored: SyncBatchNorm works only on CUDA')
    model.to(dist_info.device)
    optimizer = build_optimizer(model, cfg.OPTIMIZATION)
    scheduler = build_scheduler(optimizer, len(loader), epochs, cfg.OPTIMIZATION)
    return TrainObjects(dataset, loader, model, optimizer, scheduler, epochs, per_proc)


def wrap_ddp(model, dist_info, find_unused):
    if not dist_info.distributed:
        return model
    ids = [dist_info.device.index] if dist_info.device.type == 'cuda' else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused)


def trainer_options(cfg, args, epochs, device):
    opt = cfg.OPTIMIZATION
    return TrainerOptions(total_epochs=epochs, device=device, grad_norm_clip=float(opt.get('GRAD_NORM_CLIP', 10.0)),
                          max_nonfinite_steps=int(opt.get('MAX_NONFINITE_STEPS', 5)),
                          use_amp=bool(args.use_amp or opt.get('USE_AMP', False)))


def resume(trainer, args, run_dir, logger):
    """``--ckpt`` (resume from it), else the newest checkpoint in the run dir; ``--pretrained_model`` loads
    weights only (non-strict, as OpenPCDet) before that. An unreadable checkpoint is skipped with a warning (the
    next newest is tried); one that does not fit the model, or holds NaN / Inf tensors, stops the run."""
    if args.pretrained_model is not None:
        load_state_dict_strict(trainer.core_model, read_model_state(args.pretrained_model), strict=False,
                               logger=logger)
        logger.info('Loaded pretrained weights from %s', args.pretrained_model)
    if args.ckpt is not None:
        trainer.resume_from(args.ckpt)
        return
    for path in checkpoint_io.resume_candidates(run_dir.ckpt_dir):
        try:
            trainer.resume_from(path)
            return
        except CheckpointError as exc:
            if isinstance(exc, NonFiniteCheckpointError) or 'does not fit this model' in str(exc):
                raise
            logger.warning('Skipping unreadable checkpoint %s: %s', path, exc)


def eval_hook(cfg, args, batch_per_process, dist_info, run_dir, writer, logger):
    """The :class:`EvalHook` of a run (every ``--eval_interval`` epochs, and after the last unless
    ``--skip_eval``), evaluating into ``eval/eval_with_train/epoch_N/<split>``; None when no evaluation runs.
    The evaluation inputs (devkit tables, infos covering the split) are checked now, as ``tools/test.py`` does
    before inference, so that a run cannot train for hours and then fail in scoring."""
    if args.eval_interval <= 0 and args.skip_eval:
        return None
    test_set, test_loader, _ = build_dataloader(
        dataset_cfg=cfg.DATA_CONFIG, class_names=cfg.CLASS_NAMES, batch_size=batch_per_process,
        dist=dist_info.distributed, workers=args.workers, logger=logger, training=False)
    if hasattr(test_set, 'check_evaluation_inputs'):
        dist.on_main_rank(test_set.check_evaluation_inputs)
    evaluator = Evaluator(test_loader, cfg.CLASS_NAMES, dist_info.device, logger=logger)
    split = cfg.DATA_CONFIG.DATA_SPLIT['test']

    def evaluate(model, epoch):
        return evaluator.evaluate(model, run_dir.eval_dir / 'eval_with_train' / f'epoch_{epoch}' / split)
    return EvalHook(evaluate, interval=args.eval_interval, final=not args.skip_eval, writer=writer)


def train_hooks(cfg, args, objs, dist_info, run_dir, logger, user_hooks=()):
    """``(hooks, writer)``: logging (scalars, KD histograms), the user's hooks, checkpoints, evaluation -- in that order (a step is
    logged before a user hook sees it and before it is checkpointed)."""
    writer = ScalarWriter(run_dir.tb_dir, run_dir.output_dir / 'scalars.jsonl', enabled=dist_info.is_main)
    hooks = [LoggingHook(writer, log_interval=args.logger_iter_interval), KDHistogramHook(writer), *user_hooks,
             CheckpointHook(run_dir.ckpt_dir, save_interval=args.ckpt_save_interval,
                            max_keep=args.max_ckpt_save_num, time_interval=args.ckpt_save_time_interval)]
    evaluation = eval_hook(cfg, args, objs.batch_per_process, dist_info, run_dir, writer, logger)
    return hooks + ([evaluation] if evaluation is not None else []), writer


def run_info_of(args, dist_info, objs):
    """What ``run_info.json`` and the header of ``config_resolved.yaml`` record about a run."""
    return {'git_sha': git_sha(ROOT_DIR), 'seed': run_seed(args),
            'world_size': dist_info.world_size, 'batch_size_per_process': objs.batch_per_process,
            'effective_batch_size': objs.batch_per_process * dist_info.world_size, 'epochs': objs.epochs,
            'cfg_file': args.cfg_file, 'argv': ' '.join(sys.argv),
            'started': datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}


def lock_run_dir(run_dir, logger):
    """Collective: rank 0 takes the run dir's lock (:class:`RunDirLock`; RunDirLockedError on every rank when a
    live run holds it) and removes the temp files of a killed checkpoint save; returns the lock (None on other
    ranks)."""
    def claim():
        lock = RunDirLock(run_dir.output_dir, logger).acquire()
        try:
            checkpoint_io.remove_stale_temp_files(run_dir.ckpt_dir, logger)
        except BaseException:
            lock.release()
            raise
        return lock
    return dist.on_main_rank(claim)


def open_run_dir(run_dir, cfg, run_info, dist_info, logger):
    """Create the run dir (rank 0), start the text log, save the resolved config and run info."""
    if dist_info.is_main:
        run_dir.create()
    dist.barrier()
    add_file_handler(logger, run_dir.output_dir / f'log_train_{run_info["started"]}.txt', dist_info.rank)
    if dist_info.is_main:
        save_resolved_config(cfg, run_dir.output_dir, run_info)
        for key, val in run_info.items():
            logger.info('%-22s %s', key, val)


def main(argv=None, hooks=()):
    """Run ``tools/train.py`` with ``argv``; ``hooks``: extra :class:`rdd.engine.hooks.HookBase` objects (run
    after logging, before checkpointing). Returns the :class:`Trainer`."""
    args = cli.train_parser().parse_args(argv)
    cfg = cli.load_config(args.cfg_file, args.set_cfgs, args.teacher_ckpt)
    dist_info = dist.init_distributed(args.launcher)
    logger = create_logger('rdd.train', rank=dist_info.rank)
    try:
        return _train(cfg, args, dist_info, logger, hooks)
    finally:
        for h in list(logger.handlers):
            h.flush()
        dist.cleanup()


def _train(cfg, args, dist_info, logger, user_hooks=()):
    if run_seed(args) is not None:
        set_random_seed(run_seed(args) + dist_info.rank)
    objs = build_train_objects(cfg, args, dist_info, logger)
    run_dir = RunDir(cli.output_root(args, cfg), cfg.EXP_GROUP_PATH, cfg.TAG, args.extra_tag)
    run_info = run_info_of(args, dist_info, objs)
    dist.on_main_rank(lambda: check_config_drift(cfg, run_dir.output_dir, run_info))  # before reading the dir
    hooks, writer = train_hooks(cfg, args, objs, dist_info, run_dir, logger, user_hooks)
    objs.model.train()
    find_unused = args.find_unused_parameters or bool(cfg.OPTIMIZATION.get('FIND_UNUSED_PARAMETERS', False))
    trainer = Trainer(wrap_ddp(objs.model, dist_info, find_unused), objs.optimizer, objs.scheduler, objs.loader,
                      trainer_options(cfg, args, objs.epochs, dist_info.device), hooks=hooks, logger=logger)
    lock = None
    try:
        resume(trainer, args, run_dir, logger)  # may raise: nothing has been written yet
        lock = lock_run_dir(run_dir, logger)
        open_run_dir(run_dir, cfg, run_info, dist_info, logger)
        logger.info('Model:\n%s', objs.model)
        logger.info('**** Start training %s/%s(%s) ****', cfg.EXP_GROUP_PATH, cfg.TAG, args.extra_tag)
        trainer.train()
        logger.info('**** End training ****')
    finally:
        writer.close()
        if lock is not None:
            lock.release()
    return trainer
