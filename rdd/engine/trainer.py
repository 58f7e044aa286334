"""The training loop: one :class:`Trainer` object, one small method per concern.

The model is any detector following the OpenPCDet contract: in train mode ``model(batch_dict)`` returns
``(ret_dict{'loss'}, tb_dict, disp_dict)``. A plain detector and a ``Distiller`` train the same way.
"""
import math
import os
import time
from dataclasses import dataclass

import torch
import tqdm
from torch.nn.utils import clip_grad_norm_

from rdd.engine import checkpoint_io, dist
from rdd.engine.batch import load_data_to_device
from rdd.engine.rng import get_rng_state, set_rng_state
from rdd.errors import NonFiniteLossError


@dataclass
class TrainerOptions:
    """Knobs of :class:`Trainer` (CLI flags and ``OPTIMIZATION`` keys map onto these)."""
    total_epochs: int
    grad_norm_clip: float = 10.0
    ckpt_save_interval: int = 1           # epochs between checkpoint_epoch_N.pth
    max_ckpt_save_num: int = 30
    ckpt_save_time_interval: float = 300  # seconds between latest_model.pth saves
    max_nonfinite_steps: int = 5          # consecutive non-finite steps before aborting
    log_interval: int = 50                # iterations between text-log lines
    use_amp: bool = False
    eval_interval: int = 0                # epochs between evaluations during training (0: none)
    show_progress: bool = True


class Trainer:
    """Trains ``model`` with ``optimizer``/``scheduler`` over ``train_loader``.

    Args:
        model: the detector, possibly wrapped in ``DistributedDataParallel``.
        optimizer, scheduler: from :mod:`rdd.engine.optimization` (the scheduler is stepped with the global
            iteration before every optimizer step).
        train_loader: yields collated numpy batch dicts; ``train_sampler`` (or None) gets ``set_epoch``.
        options: :class:`TrainerOptions`.
        device: where batches go. ``ckpt_dir``: where checkpoints go (None: no checkpoints).
        logger, writer: a ``logging.Logger`` and a :class:`~rdd.engine.logging_utils.ScalarWriter`.
        evaluator: optional callable ``evaluator(model, epoch) -> dict`` of metrics.
        hooks: callables ``hook(trainer, record)`` run after every iteration (tests use them).
    """

    def __init__(self, model, optimizer, scheduler, train_loader, options, device, train_sampler=None,
                 ckpt_dir=None, logger=None, writer=None, evaluator=None, hooks=()):
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.train_loader, self.train_sampler = train_loader, train_sampler
        self.opts, self.device = options, torch.device(device)
        self.ckpt_dir, self.logger, self.writer = ckpt_dir, logger, writer
        self.evaluator, self.hooks = evaluator, list(hooks)
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.iters_per_epoch = len(train_loader)
        if self.iters_per_epoch == 0:
            raise ValueError('the training dataloader is empty (no samples in the training split, or fewer '
                             'samples than the batch size with drop_last)')
        use_amp = options.use_amp and self.device.type == 'cuda'
        if options.use_amp and not use_amp:
            self._log('warning', 'AMP requested but training runs on %s; AMP disabled', self.device)
        self.use_amp = use_amp
        self.scaler = torch.amp.GradScaler('cuda', enabled=use_amp)
        self.epoch, self.it = 0, 0
        self._resume_rng = None          # {'current': ..., 'epoch_start': ...} from a checkpoint
        self._epoch_rng = None           # RNG snapshot taken when the current epoch's iterator was made
        self._nonfinite_in_row = 0
        self._last_latest_save = time.time()
        self.eval_results = {}

    # ------------------------------------------------------------------ utilities
    def _log(self, level, msg, *args):
        if self.logger is not None:
            getattr(self.logger, level)(msg, *args)

    @property
    def core_model(self):
        return checkpoint_io.unwrap_model(self.model)

    def _extra_generators(self):
        gens = [getattr(self.train_loader, 'generator', None), getattr(self.train_sampler, 'generator', None),
                getattr(getattr(self.train_loader, 'sampler', None), 'generator', None)]
        out = []
        for g in gens:
            if isinstance(g, torch.Generator) and all(g is not o for o in out):
                out.append(g)
        return out

    # ------------------------------------------------------------------ checkpoints
    def resume_from(self, path):
        """Restore model, optimizer, scheduler, scaler, counters and RNG states from ``path``."""
        epoch, it, rng_state = checkpoint_io.load_training_state(
            path, self.model, self.optimizer, self.scheduler, self.scaler, logger=self.logger)
        self.epoch, self.it = epoch, it
        if rng_state is not None:
            per_rank = rng_state.get('per_rank')
            if per_rank is not None and len(per_rank) == self.world_size:
                self._resume_rng = per_rank[self.rank]
            else:
                self._log('warning', 'RNG states in %s are for another world size; not restored', path)
        self._log('info', 'Resumed from %s (epoch %d, iteration %d)', path, epoch, it)
        return epoch, it

    def _rng_snapshot(self):
        """Every rank's RNG states (gathered; needs all ranks)."""
        mine = {'current': get_rng_state(self._extra_generators()), 'epoch_start': self._epoch_rng}
        return {'per_rank': dist.all_gather_object(mine)}

    def save_checkpoint(self, filename, epoch):
        """Collective: gather RNG states, then rank 0 writes ``ckpt_dir/filename`` atomically."""
        if self.ckpt_dir is None:
            return None
        rng_state = self._rng_snapshot()
        path = None
        if self.rank == 0:
            state = checkpoint_io.checkpoint_state(self.model, self.optimizer, epoch, self.it, self.scheduler,
                                                   self.scaler, rng_state)
            path = checkpoint_io.save_checkpoint(state, os.path.join(self.ckpt_dir, filename))
        return path

    def _save_epoch_checkpoint(self, trained_epoch):
        if trained_epoch % self.opts.ckpt_save_interval != 0 or self.ckpt_dir is None:
            return
        path = self.save_checkpoint(f'checkpoint_epoch_{trained_epoch}.pth', trained_epoch)
        if self.rank == 0:
            checkpoint_io.rotate_checkpoints(self.ckpt_dir, self.opts.max_ckpt_save_num)
            self._log('info', 'Saved %s', path)

    def _maybe_save_latest(self):
        due = self.rank == 0 and time.time() - self._last_latest_save >= self.opts.ckpt_save_time_interval
        if self.ckpt_dir is not None and dist.any_across_ranks(due, self._flag_device()):
            self.save_checkpoint(checkpoint_io.LATEST_NAME, self.epoch)
            self._last_latest_save = time.time()

    def _flag_device(self):
        return self.device if torch.distributed.is_initialized() and \
            torch.distributed.get_backend() == 'nccl' else torch.device('cpu')

    # ------------------------------------------------------------------ data
    def _epoch_iterator(self, epoch, start_it):
        """Iterator over this epoch's batches, positioned at ``start_it`` with the RNG of an unbroken run."""
        if self.train_sampler is not None and hasattr(self.train_sampler, 'set_epoch'):
            self.train_sampler.set_epoch(epoch)
        resume = self._resume_rng
        self._resume_rng = None
        if resume is not None and start_it > 0 and resume.get('epoch_start') is not None:
            set_rng_state(resume['epoch_start'], self._extra_generators())
        self._epoch_rng = get_rng_state(self._extra_generators())
        iterator = iter(self.train_loader)
        for _ in range(start_it):  # replay the data order (and worker RNG) up to the resume point
            next(iterator)
        if resume is not None:
            set_rng_state(resume['current'], self._extra_generators())
        return iterator

    # ------------------------------------------------------------------ one step
    def train_step(self, batch):
        """Forward, backward, clip, step for one batch; returns a record of the iteration's scalars."""
        lr = self.scheduler.step(self.it)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        load_data_to_device(batch, self.device)
        with torch.autocast(device_type=self.device.type, enabled=self.use_amp):
            ret_dict, tb_dict, disp_dict = self.model(batch)
        loss = ret_dict['loss'].mean()
        self.scaler.scale(loss).backward()
        loss_ok = bool(torch.isfinite(loss.detach()))
        grad_norm = float('nan')
        if not dist.any_across_ranks(not loss_ok, self._flag_device()):
            if self.use_amp:
                self.scaler.unscale_(self.optimizer)
            grad_norm = float(clip_grad_norm_(self.core_model.parameters(), self.opts.grad_norm_clip))
            if math.isfinite(grad_norm) or self.use_amp:  # AMP: the scaler skips inf steps itself
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self._nonfinite_in_row = 0
            else:
                self._on_nonfinite('gradient norm', grad_norm, tb_dict)
        else:
            self._on_nonfinite('loss', float(loss.detach()), tb_dict)
        if hasattr(self.core_model, 'update_global_step'):
            self.core_model.update_global_step()
        record = {'it': self.it, 'epoch': self.epoch, 'lr': lr, 'grad_norm': grad_norm,
                  'loss': dist.mean_across_ranks(float(loss.detach()), self._flag_device()),
                  'loss_rank0': float(loss.detach())}
        record.update({k: float(v) for k, v in tb_dict.items() if _is_number(v)})
        self.it += 1
        return record, disp_dict

    def _on_nonfinite(self, what, value, tb_dict):
        self._nonfinite_in_row += 1
        self.optimizer.zero_grad(set_to_none=True)
        self._log('warning', 'Non-finite %s (%s) at iteration %d: step skipped (%d in a row). Loss terms: %s',
                  what, value, self.it, self._nonfinite_in_row,
                  {k: float(v) for k, v in tb_dict.items() if _is_number(v)})
        if self._nonfinite_in_row >= self.opts.max_nonfinite_steps:
            raise NonFiniteLossError(
                f'non-finite {what} for {self._nonfinite_in_row} consecutive iterations (last at iteration '
                f'{self.it}); aborting. Lower OPTIMIZATION.LR, check the data, or raise '
                f'OPTIMIZATION.MAX_NONFINITE_STEPS.')

    # ------------------------------------------------------------------ loops
    def train_one_epoch(self, epoch, progress=None):
        self.epoch = epoch
        start_it = self.it - epoch * self.iters_per_epoch
        if not 0 <= start_it < self.iters_per_epoch:
            start_it = 0
        iterator = self._epoch_iterator(epoch, start_it)
        global_batch = None
        tic = time.time()
        for cur_it in range(start_it, self.iters_per_epoch):
            batch = next(iterator)
            global_batch = int(batch.get('batch_size', 1)) * self.world_size
            record, disp_dict = self.train_step(batch)
            now = time.time()
            record['samples_per_s'] = global_batch / max(now - tic, 1e-9)
            tic = now
            self._log_iteration(record, disp_dict, cur_it, progress)
            for hook in self.hooks:
                hook(self, record)
            self._maybe_save_latest()

    def _log_iteration(self, record, disp_dict, cur_it, progress):
        if self.rank != 0:
            return
        if self.writer is not None:
            step = record['it'] + 1
            self.writer.add_scalars({k: v for k, v in record.items() if k not in ('it', 'epoch', 'lr',
                                     'grad_norm', 'samples_per_s')}, step, prefix='train/')
            self.writer.add_scalars({'learning_rate': record['lr'], 'grad_norm': record['grad_norm'],
                                     'samples_per_s': record['samples_per_s']}, step, prefix='meta_data/')
            self.writer.add_record(record)
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}", epoch=self.epoch)
        if (record['it'] + 1) % self.opts.log_interval == 0 or cur_it + 1 == self.iters_per_epoch:
            extra = ', '.join(f'{k}={v}' for k, v in disp_dict.items())
            self._log('info', 'epoch %d/%d iter %d/%d (total %d): loss=%.4f lr=%.3e grad_norm=%.3f %.1f samples/s %s',
                      self.epoch + 1, self.opts.total_epochs, cur_it + 1, self.iters_per_epoch, record['it'] + 1,
                      record['loss'], record['lr'], record['grad_norm'], record['samples_per_s'], extra)

    def train(self):
        """Train from the current epoch/iteration to ``total_epochs``; returns the final global iteration."""
        total_iters = self.opts.total_epochs * self.iters_per_epoch
        if self._resume_rng is not None and self.it % self.iters_per_epoch == 0:
            set_rng_state(self._resume_rng['current'], self._extra_generators())
            self._resume_rng = None
        progress = None
        if self.rank == 0 and self.opts.show_progress and self.it < total_iters:
            progress = tqdm.tqdm(total=total_iters, initial=self.it, desc='train', dynamic_ncols=True)
        try:
            for epoch in range(self.it // self.iters_per_epoch, self.opts.total_epochs):
                self.train_one_epoch(epoch, progress)
                self._save_epoch_checkpoint(epoch + 1)
                self._maybe_evaluate(epoch + 1)
        finally:
            if progress is not None:
                progress.close()
        self.epoch = self.opts.total_epochs
        return self.it

    def _maybe_evaluate(self, trained_epoch):
        every = self.opts.eval_interval
        if self.evaluator is None or every <= 0 or trained_epoch % every != 0:
            return
        metrics = self.evaluator(self.core_model, trained_epoch)
        self.eval_results[trained_epoch] = metrics
        if self.writer is not None and self.rank == 0 and metrics:
            self.writer.add_scalars({k: v for k, v in metrics.items() if _is_number(v)}, trained_epoch,
                                    prefix='eval/')


def _is_number(value):
    if torch.is_tensor(value):
        return value.numel() == 1
    return isinstance(value, (int, float)) and not isinstance(value, bool)
