"""Knowledge distillation: the ``Distiller`` detector (registered as ``'Distiller'``), the KD loss registry and
the baselines. ``rdd.models.build_network`` imports this package lazily for ``MODEL.NAME: Distiller``."""
from .distiller import Distiller, student_state_from_distiller
from .registry import KD_LOSSES, KDConfigError, KDContext, build_kd_loss, known_kd_losses, register_kd_loss
from .teacher import TeacherCheckpointError, apply_teacher_ckpt

__all__ = ['Distiller', 'student_state_from_distiller', 'KD_LOSSES', 'KDConfigError', 'KDContext',
           'build_kd_loss', 'known_kd_losses', 'register_kd_loss', 'TeacherCheckpointError', 'apply_teacher_ckpt']
