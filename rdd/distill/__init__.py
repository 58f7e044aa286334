"""Knowledge distillation: the ``Distiller`` detector (registered as ``'Distiller'``), the KD loss registry
``KD_LOSSES`` with its typed build context, the RDD loss and the baselines (importing this package registers
them all). ``rdd.models.build_network`` imports this package lazily for ``MODEL.NAME: Distiller``."""
from . import baselines, rdd  # noqa: F401  (registers the KD losses)
from .context import HeadLayout, KDContext, ModelFacts
from .distiller import Distiller, student_state_from_distiller
from .registry import KD_LOSSES, build_kd_loss
from .teacher import apply_teacher_ckpt

__all__ = ['Distiller', 'student_state_from_distiller', 'KD_LOSSES', 'KDContext', 'ModelFacts', 'HeadLayout',
           'build_kd_loss', 'apply_teacher_ckpt']
