"""Dense heads: OpenPCDet-compatible CenterPoint head, its target/decoding utilities and losses."""
from .center_head import CenterHead, SeparateHead

__all__ = {
    'CenterHead': CenterHead,
}
