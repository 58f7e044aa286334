"""What ``tools/train.py`` does, step by step; every check that can fail runs before the run dir is touched."""
import datetime
import sys

import torch

from rdd.engine import checkpoint_io, cli, dist
from rdd.engine.logging_utils import ScalarWriter, add_file_handler, create_logger
from rdd.engine.optimization import build_optimizer, build_scheduler
from rdd.engine.rng import set_random_seed
from rdd.engine.run_dir import RunDir, git_sha, save_resolved_config
from rdd.engine.trainer import Trainer, TrainerOptions

SEED = 666


def run_seed(args):
    """The seed of this run: ``--seed``, else 666 with ``--fix_random_seed``, else None (unseeded)."""
    if args.seed is not None:
        return int(args.seed)
    return SEED if args.fix_random_seed else None


def build_train_objects(cfg, args, dist_info, logger):
    """Dataset/loader/sampler, model (SyncBN/DDP as asked), optimizer, scheduler, epochs, per-process batch."""
    from rdd.datasets import build_dataloader
    from rdd.models import build_network
    if args.batch_size is None:
        per_proc = int(cfg.OPTIMIZATION.BATCH_SIZE_PER_GPU)
    else:
        per_proc = dist.per_process_batch_size(args.batch_size, dist_info.world_size)
    epochs = int(args.epochs if args.epochs is not None else cfg.OPTIMIZATION.NUM_EPOCHS)
    empty = ValueError(f"the training split {cfg.DATA_CONFIG.get('DATA_SPLIT', {}).get('train')!r} under "
                       f"{cfg.DATA_CONFIG.get('DATA_PATH')} has no samples (INFO_PATH: "
                       f"{cfg.DATA_CONFIG.get('INFO_PATH', {}).get('train')})")
    try:
        train_set, train_loader, train_sampler = build_dataloader(
            dataset_cfg=cfg.DATA_CONFIG, class_names=cfg.CLASS_NAMES, batch_size=per_proc,
            dist=dist_info.distributed, workers=args.workers, logger=logger, training=True,
            total_epochs=epochs, seed=run_seed(args))
    except ValueError as exc:  # torch's RandomSampler refuses an empty dataset with a cryptic message
        if 'num_samples' in str(exc):
            raise empty from exc
        raise
    if len(train_set) == 0 or len(train_loader) == 0:
        raise empty
    model = build_network(model_cfg=cfg.MODEL, num_class=len(cfg.CLASS_NAMES), dataset=train_set)
    if args.sync_bn:
        if dist_info.device.type == 'cuda':
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:
            logger.warning('--sync_bn ignored: SyncBatchNorm works only on CUDA')
    model.to(dist_info.device)
    optimizer = build_optimizer(model, cfg.OPTIMIZATION)
    scheduler = build_scheduler(optimizer, len(train_loader), epochs, cfg.OPTIMIZATION)
    return train_set, train_loader, train_sampler, model, optimizer, scheduler, epochs, per_proc


def wrap_ddp(model, dist_info, find_unused):
    if not dist_info.distributed:
        return model
    ids = [dist_info.device.index] if dist_info.device.type == 'cuda' else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused)


def trainer_options(cfg, args, epochs):
    opt = cfg.OPTIMIZATION
    return TrainerOptions(
        total_epochs=epochs, grad_norm_clip=float(opt.get('GRAD_NORM_CLIP', 10.0)),
        ckpt_save_interval=args.ckpt_save_interval, max_ckpt_save_num=args.max_ckpt_save_num,
        ckpt_save_time_interval=args.ckpt_save_time_interval,
        max_nonfinite_steps=int(opt.get('MAX_NONFINITE_STEPS', 5)), log_interval=args.logger_iter_interval,
        use_amp=bool(args.use_amp or opt.get('USE_AMP', False)), eval_interval=args.eval_interval)


def resume(trainer, args, run_dir, logger):
    """``--ckpt`` (resume from it), else the newest checkpoint in the run dir; ``--pretrained_model`` loads
    weights only (non-strict, as OpenPCDet) before that."""
    if args.pretrained_model is not None:
        from rdd.models.checkpoint import load_state_dict_strict, read_model_state
        load_state_dict_strict(trainer.core_model, read_model_state(args.pretrained_model), strict=False,
                               logger=logger)
        logger.info('Loaded pretrained weights from %s', args.pretrained_model)
    if args.ckpt is not None:
        trainer.resume_from(args.ckpt)
        return
    from rdd.models.checkpoint import CheckpointError
    for path in checkpoint_io.resume_candidates(run_dir.ckpt_dir):
        try:
            trainer.resume_from(path)
            return
        except CheckpointError as exc:
            if 'does not fit this model' in str(exc):
                raise
            logger.warning('Skipping unreadable checkpoint %s: %s', path, exc)


def build_evaluator(cfg, args, per_proc, dist_info, logger):
    from rdd.datasets import build_dataloader
    from rdd.engine.evaluator import Evaluator
    _, test_loader, _ = build_dataloader(
        dataset_cfg=cfg.DATA_CONFIG, class_names=cfg.CLASS_NAMES, batch_size=per_proc,
        dist=dist_info.distributed, workers=args.workers, logger=logger, training=False)
    return Evaluator(test_loader, cfg.CLASS_NAMES, dist_info.device, logger=logger)


def open_run_dir(run_dir, cfg, args, dist_info, per_proc, epochs, logger):
    """Create the run dir (rank 0), start the text log, save the resolved config and run info; returns the
    :class:`ScalarWriter` (TensorBoard + ``scalars.jsonl``, rank 0 only)."""
    if dist_info.is_main:
        run_dir.create()
    dist.barrier()
    stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
    add_file_handler(logger, run_dir.output_dir / f'log_train_{stamp}.txt', dist_info.rank)
    run_info = {'git_sha': git_sha(cli.REPO_ROOT), 'seed': run_seed(args),
                'world_size': dist_info.world_size, 'batch_size_per_process': per_proc,
                'effective_batch_size': per_proc * dist_info.world_size, 'epochs': epochs,
                'cfg_file': args.cfg_file, 'argv': ' '.join(sys.argv), 'started': stamp}
    if dist_info.is_main:
        save_resolved_config(cfg, run_dir.output_dir, run_info)
        for key, val in run_info.items():
            logger.info('%-22s %s', key, val)
    return ScalarWriter(run_dir.tb_dir, run_dir.output_dir / 'scalars.jsonl', enabled=dist_info.is_main)


def attach_evaluator(trainer, cfg, args, per_proc, dist_info, run_dir, logger):
    """Give ``trainer`` an ``evaluator(model, epoch)`` writing to ``eval/eval_with_train/epoch_N/<split>``."""
    evaluator = build_evaluator(cfg, args, per_proc, dist_info, logger)
    split = cfg.DATA_CONFIG.DATA_SPLIT['test']
    trainer.evaluator = lambda m, epoch: evaluator.evaluate(
        m, run_dir.eval_dir / 'eval_with_train' / f'epoch_{epoch}' / split)


def main(argv=None, hooks=()):
    """Run ``tools/train.py`` with ``argv``; ``hooks`` are per-iteration callables ``hook(trainer, record)``.
    Returns the :class:`Trainer`."""
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


def _train(cfg, args, dist_info, logger, hooks=()):
    if run_seed(args) is not None:
        set_random_seed(run_seed(args) + dist_info.rank)
    (train_set, train_loader, train_sampler, model, optimizer, scheduler, epochs,
     per_proc) = build_train_objects(cfg, args, dist_info, logger)
    run_dir = RunDir(cli.output_root(args, cfg), cfg.EXP_GROUP_PATH, cfg.TAG, args.extra_tag)
    options = trainer_options(cfg, args, epochs)
    find_unused = args.find_unused_parameters or bool(cfg.OPTIMIZATION.get('FIND_UNUSED_PARAMETERS', False))
    trainer = Trainer(model, optimizer, scheduler, train_loader, options, dist_info.device,
                      train_sampler=train_sampler, ckpt_dir=run_dir.ckpt_dir, logger=logger, hooks=hooks)
    resume(trainer, args, run_dir, logger)  # may raise: nothing has been written yet
    model.train()
    trainer.model = wrap_ddp(model, dist_info, find_unused)

    writer = open_run_dir(run_dir, cfg, args, dist_info, per_proc, epochs, logger)
    trainer.writer = writer
    logger.info('Model:\n%s', model)
    if args.eval_interval > 0 or not args.skip_eval:
        attach_evaluator(trainer, cfg, args, per_proc, dist_info, run_dir, logger)
    logger.info('**** Start training %s/%s(%s) ****', cfg.EXP_GROUP_PATH, cfg.TAG, args.extra_tag)
    trainer.train()
    logger.info('**** End training ****')
    if not args.skip_eval and trainer.evaluator is not None and epochs not in trainer.eval_results:
        metrics = trainer.evaluator(trainer.core_model, epochs)
        if dist_info.is_main and metrics:
            writer.add_scalars({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, epochs,
                               prefix='eval/')
    writer.close()
    return trainer

