"""Text logging, TensorBoard and a JSON-lines scalar log; all of them write on rank 0 only."""
import json
import logging
import math
import os
import sys

import torch


def create_logger(name='rdd', rank=0, log_file=None, level=logging.INFO):
    """Logger printing to stdout on rank 0 (warnings only elsewhere), optionally also to ``log_file``."""
    logger = logging.getLogger(name)
    logger.setLevel(level if rank == 0 else logging.WARNING)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    fmt = logging.Formatter('%(asctime)s  %(levelname)5s  %(message)s')
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(fmt)
    logger.addHandler(console)
    if log_file is not None:
        add_file_handler(logger, log_file, rank)
    return logger


def add_file_handler(logger, log_file, rank=0):
    """Also write ``logger``'s records to ``log_file`` (rank 0 only)."""
    if rank != 0:
        return
    os.makedirs(os.path.dirname(os.fspath(log_file)) or '.', exist_ok=True)
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter('%(asctime)s  %(levelname)5s  %(message)s'))
    logger.addHandler(handler)


class ScalarWriter:
    """TensorBoard ``SummaryWriter`` plus an append-only ``scalars.jsonl``; a no-op on ranks other than 0.

    The files are opened on the first write, so a writer can be made before its run directory exists.
    """

    def __init__(self, tb_dir=None, jsonl_path=None, enabled=True):
        self.enabled = enabled
        self.tb_dir, self.jsonl_path = tb_dir, jsonl_path
        self.tb = None
        self._jsonl = None
        self._opened = False

    def _open(self):
        if self._opened or not self.enabled:
            return
        self._opened = True
        if self.tb_dir is not None:
            from torch.utils.tensorboard import SummaryWriter  # tensorboard is heavy: only when writing
            self.tb = SummaryWriter(log_dir=os.fspath(self.tb_dir))
        if self.jsonl_path is not None:
            self._jsonl = open(self.jsonl_path, 'a', encoding='utf-8')

    def add_scalars(self, scalars, step, prefix=''):
        """Write every finite-or-not number in ``scalars`` as ``prefix + key`` at ``step``."""
        if not self.enabled:
            return
        self._open()
        if self.tb is not None:
            for key, val in scalars.items():
                self.tb.add_scalar(prefix + key, float(val), step)

    def add_histogram(self, tag, values, step):
        """Write a TensorBoard histogram of ``values`` (a tensor or array; empty: nothing written)."""
        if not self.enabled or len(values) == 0:
            return
        self._open()
        if self.tb is None:
            return
        if hasattr(values, 'detach'):
            values = values.detach().float().cpu().numpy()
        self.tb.add_histogram(tag, values, step)

    def add_record(self, record):
        """Append one JSON object (numbers made plain floats; NaN/inf written as strings)."""
        if not self.enabled:
            return
        self._open()
        if self._jsonl is None:
            return
        clean = {k: (v if isinstance(v, (int, str)) or v is None else _num(v)) for k, v in record.items()}
        self._jsonl.write(json.dumps(clean) + '\n')
        self._jsonl.flush()

    def flush(self):
        if self.tb is not None:
            self.tb.flush()

    def close(self):
        if self.tb is not None:
            self.tb.close()
            self.tb = None
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None


def is_scalar(value):
    """A plain number (not a bool) or a one-element tensor."""
    if torch.is_tensor(value):
        return value.numel() == 1
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _num(value):
    value = float(value)
    return value if math.isfinite(value) else str(value)


def read_scalar_log(path):
    """``{it: record}`` from a ``scalars.jsonl``; when an iteration was logged twice (a run killed after it and
    resumed from an earlier checkpoint) the later record wins."""
    out = {}
    with open(path, encoding='utf-8') as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                if 'it' in rec:
                    out[rec['it']] = rec
    return out
