"""Dense heads (``MODEL.DENSE_HEAD.NAME``, registry :data:`rdd.models.registries.DENSE_HEADS`): the
OpenPCDet-compatible CenterPoint head, its target/decoding utilities and losses."""
from .center_head import CenterHead, SeparateHead

__all__ = ['CenterHead', 'SeparateHead']
