"""Baseline KD losses (each a pure loss + config, registered in :mod:`rdd.distill.registry`):
``LogitKDLoss`` (SparseKD-style logit KD), ``FitNetLoss``, ``RoIMimicLoss`` and ``LabelKDLoss``."""
from .fitnet import FitNetLoss
from .label_kd import LabelKDLoss
from .logit_kd import LogitKDLoss
from .roi_mimic import RoIMimicLoss

__all__ = ['FitNetLoss', 'LabelKDLoss', 'LogitKDLoss', 'RoIMimicLoss']
