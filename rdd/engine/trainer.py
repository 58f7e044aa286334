"""The training loop: one :class:`Trainer` object; checkpoints, evaluation and logging are hooks
(:mod:`rdd.engine.hooks`).

The model is any detector following the OpenPCDet contract: in train mode ``model(batch_dict)`` returns
``(ret_dict{'loss'}, tb_dict, disp_dict)``. A plain detector and a ``Distiller`` train the same way.
"""
import math
import time
from dataclasses import dataclass

import torch
from torch.nn.utils import clip_grad_norm_

from rdd.engine import checkpoint_io, dist
from rdd.engine.batch import load_data_to_device
from rdd.engine.logging_utils import is_scalar
from rdd.engine.rng import get_rng_state, set_rng_state
from rdd.errors import NonFiniteLossError


@dataclass
class TrainerOptions:
    """Knobs of :class:`Trainer` (CLI flags and ``OPTIMIZATION`` keys map onto these)."""
    total_epochs: int
    device: str = 'cpu'                   # where batches go ('cpu', 'cuda:0' or a torch.device)
    grad_norm_clip: float = 10.0
    max_nonfinite_steps: int = 5          # consecutive non-finite steps before aborting
    use_amp: bool = False


class Trainer:
    """Trains ``model`` with ``optimizer``/``scheduler`` over ``train_loader``; checkpoints, evaluation and logging
    are hooks (:mod:`rdd.engine.hooks`).

    Args:
        model: the detector, possibly wrapped in ``DistributedDataParallel``.
        optimizer, scheduler: from :mod:`rdd.engine.optimization` (the scheduler is stepped with the global
            iteration before every optimizer step).
        train_loader: yields collated numpy batch dicts; its sampler gets ``set_epoch`` when it has one.
        options: :class:`TrainerOptions`.
        hooks: :class:`rdd.engine.hooks.HookBase` objects, called in order.
        logger: a ``logging.Logger`` (None: no log lines).
    """

    def __init__(self, model, optimizer, scheduler, train_loader, options, hooks=(), logger=None):
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.train_loader, self.opts, self.hooks, self.logger = train_loader, options, list(hooks), logger
        self.device = torch.device(options.device)
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.iters_per_epoch = len(train_loader)
        if self.iters_per_epoch == 0:
            raise ValueError('the training dataloader is empty (no samples in the training split, or fewer '
                             'samples than the batch size with drop_last)')
        self.use_amp = options.use_amp and self.device.type == 'cuda'
        if options.use_amp and not self.use_amp:
            self.log('warning', 'AMP requested but training runs on %s; AMP disabled', self.device)
        self.scaler = torch.amp.GradScaler('cuda', enabled=self.use_amp)
        self.epoch, self.it, self.finished = 0, 0, False
        self.last_disp = {}              # the display dict of the last step (LoggingHook prints it)
        self._resume_rng = None          # {'current': ..., 'epoch_start': ...} from a checkpoint
        self._epoch_rng = None           # RNG snapshot taken when the current epoch's iterator was made
        self._nonfinite_in_row = 0

    # ------------------------------------------------------------------ utilities
    def log(self, level, msg, *args):
        """``logger.<level>(msg, *args)`` when there is a logger."""
        if self.logger is not None:
            getattr(self.logger, level)(msg, *args)

    @property
    def core_model(self):
        return checkpoint_io.unwrap_model(self.model)

    @property
    def total_iters(self):
        return self.opts.total_epochs * self.iters_per_epoch

    def hook(self, cls):
        """The first hook that is a ``cls`` (None if none)."""
        return next((h for h in self.hooks if isinstance(h, cls)), None)

    def flag_device(self):
        """Device of the small tensors ranks exchange (CUDA under NCCL, else CPU)."""
        return self.device if torch.distributed.is_initialized() and \
            torch.distributed.get_backend() == 'nccl' else torch.device('cpu')

    def _extra_generators(self):
        sampler = getattr(self.train_loader, 'sampler', None)
        gens = [getattr(self.train_loader, 'generator', None), getattr(sampler, 'generator', None)]
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
                self.log('warning', 'RNG states in %s are for another world size; not restored', path)
        self.log('info', 'Resumed from %s (epoch %d, iteration %d)', path, epoch, it)
        return epoch, it

    def _rng_snapshot(self):
        """Every rank's RNG states (gathered; needs all ranks)."""
        mine = {'current': get_rng_state(self._extra_generators()), 'epoch_start': self._epoch_rng}
        return {'per_rank': dist.all_gather_object(mine)}

    def save_checkpoint(self, path, epoch):
        """Collective: gather RNG states, then rank 0 writes the training state to ``path`` atomically; returns
        the path on rank 0, None elsewhere."""
        rng_state = self._rng_snapshot()
        if self.rank != 0:
            return None
        state = checkpoint_io.checkpoint_state(self.model, self.optimizer, epoch, self.it, self.scheduler,
                                               self.scaler, rng_state)
        return checkpoint_io.save_checkpoint(state, path)

    # ------------------------------------------------------------------ data
    def _epoch_iterator(self, epoch, start_it):
        """Iterator over this epoch's batches, positioned at ``start_it`` with the RNG of an unbroken run."""
        sampler = getattr(self.train_loader, 'sampler', None)
        if hasattr(sampler, 'set_epoch'):
            sampler.set_epoch(epoch)
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
        if not dist.any_across_ranks(not loss_ok, self.flag_device()):
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
                  'loss': dist.mean_across_ranks(float(loss.detach()), self.flag_device()),
                  'loss_rank0': float(loss.detach())}
        record.update({k: float(v) for k, v in tb_dict.items() if is_scalar(v)})
        self.it += 1
        return record, disp_dict

    def _on_nonfinite(self, what, value, tb_dict):
        self._nonfinite_in_row += 1
        self.optimizer.zero_grad(set_to_none=True)
        self.log('warning', 'Non-finite %s (%s) at iteration %d: step skipped (%d in a row). Loss terms: %s',
                 what, value, self.it, self._nonfinite_in_row,
                 {k: float(v) for k, v in tb_dict.items() if is_scalar(v)})
        if self._nonfinite_in_row >= self.opts.max_nonfinite_steps:
            raise NonFiniteLossError(
                f'non-finite {what} for {self._nonfinite_in_row} consecutive iterations (last at iteration '
                f'{self.it}); aborting. Lower OPTIMIZATION.LR, check the data, or raise '
                f'OPTIMIZATION.MAX_NONFINITE_STEPS.')

    # ------------------------------------------------------------------ loops
    def _call_hooks(self, stage, *args):
        for hook in self.hooks:
            getattr(hook, stage)(self, *args)

    def train_one_epoch(self, epoch):
        """The remaining iterations of ``epoch``; ``after_step`` hooks after each."""
        self.epoch = epoch
        start_it = self.it - epoch * self.iters_per_epoch
        if not 0 <= start_it < self.iters_per_epoch:
            start_it = 0
        iterator = self._epoch_iterator(epoch, start_it)
        tic = time.time()
        for _ in range(start_it, self.iters_per_epoch):
            batch = next(iterator)
            global_batch = int(batch.get('batch_size', 1)) * self.world_size
            record, self.last_disp = self.train_step(batch)
            now = time.time()
            record['samples_per_s'] = global_batch / max(now - tic, 1e-9)
            tic = now
            self._call_hooks('after_step', record)

    def train(self):
        """Train from the current epoch/iteration to ``total_epochs`` (hooks: ``before_train``, then per epoch
        the steps and ``after_epoch``, and ``after_train`` whatever happens); returns the final global iteration."""
        if self._resume_rng is not None and self.it % self.iters_per_epoch == 0:
            set_rng_state(self._resume_rng['current'], self._extra_generators())
            self._resume_rng = None
        try:
            self._call_hooks('before_train')
            for epoch in range(self.it // self.iters_per_epoch, self.opts.total_epochs):
                self.train_one_epoch(epoch)
                self._call_hooks('after_epoch', epoch + 1)
            self.epoch, self.finished = self.opts.total_epochs, True
        finally:
            self._call_hooks('after_train')
        return self.it
