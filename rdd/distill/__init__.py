"""Knowledge distillation: the ``Distiller`` detector, the KD loss registry ``KD_LOSSES`` with its typed build
context, the RDD loss and the baselines.

Importing this package registers the KD losses and ``Distiller.from_config`` as ``'Distiller'`` in
:data:`rdd.models.registries.DETECTORS`, so that ``build_network`` builds ``MODEL.NAME: Distiller`` (the engine,
the tools and :mod:`rdd.plugin` import it; :mod:`rdd.models` never does)."""
from rdd.models.registries import DETECTORS

from . import baselines, rdd  # noqa: F401  (registers the KD losses)
from .context import HeadLayout, KDContext, ModelFacts
from .distiller import Distiller, student_state_from_distiller
from .registry import KD_LOSSES, build_kd_loss
from .teacher import apply_teacher_ckpt

DETECTORS.register(Distiller.from_config, name='Distiller')  # OpenPCDet's build_network calls it

__all__ = ['Distiller', 'student_state_from_distiller', 'KD_LOSSES', 'KDContext', 'ModelFacts', 'HeadLayout',
           'build_kd_loss', 'apply_teacher_ckpt']
