"""The trainer's extension points: hook objects (detectron2's shape) called by :class:`rdd.engine.trainer.Trainer`.

A hook overrides any of ``before_train(trainer)``, ``after_step(trainer, record)`` (``record``: the iteration's
scalars, ``it`` 0-based global iteration, ``epoch``, ``lr``, ``grad_norm``, ``loss``, the model's ``tb_dict``,
``samples_per_s``), ``after_epoch(trainer, epoch)`` (``epoch``: epochs trained so far, 1-based) and
``after_train(trainer)`` (always called, also when training stops on an exception; check
``trainer.finished``). Hooks run in list order. A user adds one by passing it in ``hooks``; nothing in
``trainer.py`` changes. The built-in hooks:

* :class:`LoggingHook`: scalars to TensorBoard and ``scalars.jsonl``, the progress bar, the text log;
* :class:`CheckpointHook`: ``latest_model.pth`` every ``time_interval`` seconds, ``checkpoint_epoch_N.pth`` every
  ``save_interval`` epochs (the newest ``max_keep`` kept);
* :class:`EvalHook`: evaluation every ``interval`` epochs and/or after the last one.
"""
import os
import time

import tqdm

from rdd.engine import checkpoint_io, dist
from rdd.engine.logging_utils import is_scalar

__all__ = ['HookBase', 'LoggingHook', 'CheckpointHook', 'EvalHook']


class HookBase:
    """No-op hook; subclass and override what you need."""

    def before_train(self, trainer):
        pass

    def after_step(self, trainer, record):
        pass

    def after_epoch(self, trainer, epoch):
        pass

    def after_train(self, trainer):
        pass


class LoggingHook(HookBase):
    """Rank 0 only: every iteration's scalars to ``writer`` (a :class:`~rdd.engine.logging_utils.ScalarWriter`:
    ``train/<loss terms>``, ``meta_data/{learning_rate, grad_norm, samples_per_s}`` and the JSON-lines record), a
    tqdm bar (``show_progress``) and a text-log line every ``log_interval`` iterations and at each epoch's end."""

    def __init__(self, writer=None, log_interval=50, show_progress=True):
        self.writer, self.log_interval, self.show_progress = writer, log_interval, show_progress
        self.progress = None

    def before_train(self, trainer):
        total = trainer.total_iters
        if trainer.rank == 0 and self.show_progress and trainer.it < total:
            self.progress = tqdm.tqdm(total=total, initial=trainer.it, desc='train', dynamic_ncols=True)

    def after_step(self, trainer, record):
        if trainer.rank != 0:
            return
        if self.writer is not None:
            step = record['it'] + 1
            meta = ('it', 'epoch', 'lr', 'grad_norm', 'samples_per_s')
            self.writer.add_scalars({k: v for k, v in record.items() if k not in meta}, step, prefix='train/')
            self.writer.add_scalars({'learning_rate': record['lr'], 'grad_norm': record['grad_norm'],
                                     'samples_per_s': record['samples_per_s']}, step, prefix='meta_data/')
            self.writer.add_record(record)
        if self.progress is not None:
            self.progress.update(1)
            self.progress.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}", epoch=record['epoch'])
        cur_it = record['it'] - record['epoch'] * trainer.iters_per_epoch
        if (record['it'] + 1) % self.log_interval == 0 or cur_it + 1 == trainer.iters_per_epoch:
            extra = ', '.join(f'{k}={v}' for k, v in trainer.last_disp.items())
            trainer.log('info', 'epoch %d/%d iter %d/%d (total %d): loss=%.4f lr=%.3e grad_norm=%.3f '
                        '%.1f samples/s %s', record['epoch'] + 1, trainer.opts.total_epochs, cur_it + 1,
                        trainer.iters_per_epoch, record['it'] + 1, record['loss'], record['lr'], record['grad_norm'],
                        record['samples_per_s'], extra)

    def after_train(self, trainer):
        if self.progress is not None:
            self.progress.close()
            self.progress = None


class CheckpointHook(HookBase):
    """Checkpoints into ``ckpt_dir`` (collective: every rank calls it, rank 0 writes; see
    :meth:`Trainer.save_checkpoint`)."""

    def __init__(self, ckpt_dir, save_interval=1, max_keep=30, time_interval=300):
        self.ckpt_dir, self.save_interval = ckpt_dir, save_interval
        self.max_keep, self.time_interval = max_keep, time_interval
        self._last_save = time.time()

    def before_train(self, trainer):
        self._last_save = time.time()

    def save_latest(self, trainer):
        """``latest_model.pth`` with the current state (resumes mid-epoch)."""
        trainer.save_checkpoint(os.path.join(self.ckpt_dir, checkpoint_io.LATEST_NAME), trainer.epoch)
        self._last_save = time.time()

    def after_step(self, trainer, record):
        due = trainer.rank == 0 and time.time() - self._last_save >= self.time_interval
        if dist.any_across_ranks(due, trainer.flag_device()):
            self.save_latest(trainer)

    def after_epoch(self, trainer, epoch):
        if epoch % self.save_interval != 0:
            return
        path = trainer.save_checkpoint(os.path.join(self.ckpt_dir, f'checkpoint_epoch_{epoch}.pth'), epoch)
        if trainer.rank == 0:
            checkpoint_io.rotate_checkpoints(self.ckpt_dir, self.max_keep)
            trainer.log('info', 'Saved %s', path)


class EvalHook(HookBase):
    """``evaluate(model, epoch) -> metrics`` every ``interval`` epochs (0: never) and, with ``final``, after the
    last epoch unless already done; numeric metrics go to ``writer`` under ``eval/``. ``results``: ``{epoch:
    metrics}``."""

    def __init__(self, evaluate, interval=0, final=True, writer=None):
        self.evaluate, self.interval, self.final, self.writer = evaluate, interval, final, writer
        self.results = {}

    def _run(self, trainer, epoch):
        metrics = self.evaluate(trainer.core_model, epoch)
        self.results[epoch] = metrics
        if self.writer is not None and trainer.rank == 0 and metrics:
            self.writer.add_scalars({k: v for k, v in metrics.items() if is_scalar(v)}, epoch, prefix='eval/')

    def after_epoch(self, trainer, epoch):
        if self.interval > 0 and epoch % self.interval == 0:
            self._run(trainer, epoch)

    def after_train(self, trainer):
        epochs = trainer.opts.total_epochs
        if self.final and trainer.finished and epochs not in self.results:
            self._run(trainer, epochs)


class KDHistogramHook(HookBase):
    """Rank 0 only: TensorBoard histograms of the KD losses, ``train/kd/<key>/<name>`` at iteration ``it + 1``.

    Contract (small on purpose): a KD loss that has histograms exposes ``histograms`` (``{name: 1-D tensor}``, the
    values of its last training forward, e.g. RDDLoss's ``rdd_disparity``) and ``hist_interval`` (iterations
    between histograms, 0 = never); written when ``(it + 1) % hist_interval == 0``.
    """

    def __init__(self, writer):
        self.writer = writer

    def after_step(self, trainer, record):
        losses = getattr(trainer.core_model, 'kd_losses', None)
        if self.writer is None or trainer.rank != 0 or not losses:
            return
        step = int(record['it']) + 1
        for key, loss in losses.items():
            every = int(getattr(loss, 'hist_interval', 0) or 0)
            if every > 0 and step % every == 0:
                for name, values in getattr(loss, 'histograms', {}).items():
                    self.writer.add_histogram(f'train/kd/{key}/{name}', values, step)
