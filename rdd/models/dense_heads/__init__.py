"""Dense heads (``MODEL.DENSE_HEAD.NAME``, registry :data:`rdd.models.registries.DENSE_HEADS`): the
OpenPCDet-compatible CenterPoint head, its target/decoding utilities and losses."""
from rdd.models.registries import DENSE_HEADS

from .center_head import CenterHead, SeparateHead

DENSE_HEADS.register(CenterHead, name='CenterHeadRDD')  # the name rdd.plugin registers into pcdet beside its own

__all__ = ['CenterHead', 'SeparateHead']
