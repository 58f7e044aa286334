"""Schema of ``OPTIMIZATION`` (OpenPCDet's keys as :mod:`rdd.engine.optimization` and the trainer read them)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional, Tuple

from rdd.errors import ConfigError

__all__ = ['OptimizationConfig']


@dataclass(frozen=True)
class OptimizationConfig:
    """``OPTIMIZATION``: batch, epochs, optimizer and schedule (``adam_onecycle``: ``LR``, ``MOMS``,
    ``DIV_FACTOR``, ``PCT_START``; ``adam`` / ``sgd``: step decay at ``DECAY_STEP_LIST`` epochs by ``LR_DECAY``,
    floored at ``LR_CLIP``, optional ``LR_WARMUP`` over ``WARMUP_EPOCH``), clipping and AMP."""
    batch_size_per_gpu: int
    num_epochs: int
    optimizer: Literal['adam_onecycle', 'adam', 'sgd']
    lr: float
    weight_decay: Optional[float] = None
    momentum: Optional[float] = None
    moms: Optional[Tuple[float, float]] = None
    pct_start: Optional[float] = None
    div_factor: Optional[float] = None
    decay_step_list: Optional[Tuple[int, ...]] = None
    lr_decay: Optional[float] = None
    lr_clip: Optional[float] = None
    lr_warmup: Optional[bool] = None
    warmup_epoch: Optional[int] = None
    grad_norm_clip: Optional[float] = None
    max_nonfinite_steps: Optional[int] = None
    use_amp: Optional[bool] = None
    find_unused_parameters: Optional[bool] = None

    def __post_init__(self):
        for key, value, low in (('BATCH_SIZE_PER_GPU', self.batch_size_per_gpu, 1),
                                ('NUM_EPOCHS', self.num_epochs, 0),
                                ('MAX_NONFINITE_STEPS', self.max_nonfinite_steps, 1)):
            if value is not None and value < low:
                raise ConfigError(f'must be >= {low}, got {value}', key=key)
        for key, value in (('LR', self.lr), ('DIV_FACTOR', self.div_factor), ('GRAD_NORM_CLIP', self.grad_norm_clip)):
            if value is not None and value <= 0:
                raise ConfigError(f'must be > 0, got {value}', key=key)
        if self.pct_start is not None and not 0 < self.pct_start < 1:
            raise ConfigError(f'must be in (0, 1), got {self.pct_start}', key='PCT_START')
