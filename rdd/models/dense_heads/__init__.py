"""Dense heads: OpenPCDet-compatible CenterPoint head, its target/decoding utilities and losses."""
from .center_head import CenterHead, SeparateHead

__all__ = {
    'CenterHead': CenterHead,
    'CenterHeadRDD': CenterHead,  # the name rdd.plugin registers into pcdet (beside pcdet's own CenterHead)
}
