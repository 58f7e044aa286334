"""Baseline KD losses of the RDD paper's comparisons (each a loss + its config dataclass, registered in
:mod:`rdd.distill.registry`): ``LogitKDLoss`` (SparseKD's PP logit KD), ``FitNetLoss`` (Hint), ``FGLoss``,
``GIDFeatureLoss`` (GID-F), ``GIDLogitLoss`` (GID-L), ``LADLoss``, ``RoIMimicLoss`` and ``LabelKDLoss``.
docs/method.md ("Baselines") gives each one's paper, equation and CenterPoint adaptation."""
from .fg import FGLoss
from .fitnet import FitNetLoss
from .gid_feature import GIDFeatureLoss
from .gid_logit import GIDLogitLoss
from .label_kd import LabelKDLoss
from .lad import LADLoss
from .logit_kd import LogitKDLoss
from .roi_mimic import RoIMimicLoss

__all__ = ['FGLoss', 'FitNetLoss', 'GIDFeatureLoss', 'GIDLogitLoss', 'LabelKDLoss', 'LADLoss', 'LogitKDLoss',
           'RoIMimicLoss']
