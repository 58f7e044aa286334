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
    # optional (None: absent; the engine applies its defaults)
    weight_decay: Optional[float] = None            # decoupled for adam_onecycle
    momentum: Optional[float] = None                # sgd
    moms: Optional[Tuple[float, float]] = None      # adam_onecycle: beta1 from MOMS[0] to MOMS[1] and back
    pct_start: Optional[float] = None               # adam_onecycle: fraction of the steps spent warming up
    div_factor: Optional[float] = None              # adam_onecycle: start LR = LR / DIV_FACTOR
    decay_step_list: Optional[Tuple[int, ...]] = None  # adam / sgd: epochs at which the LR decays
    lr_decay: Optional[float] = None                # adam / sgd: factor per decay step
    lr_clip: Optional[float] = None                 # adam / sgd: LR floor
    lr_warmup: Optional[bool] = None                # adam / sgd: cosine warm-up over WARMUP_EPOCH epochs
    warmup_epoch: Optional[int] = None
    grad_norm_clip: Optional[float] = None          # max global gradient norm (default 10)
    max_nonfinite_steps: Optional[int] = None       # consecutive skipped steps before aborting (default 5)
    use_amp: Optional[bool] = None                  # mixed precision (CUDA only)
    find_unused_parameters: Optional[bool] = None   # DDP

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
