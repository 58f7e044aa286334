"""RDD: Representation Disparity-aware Distillation for LiDAR 3D detectors, OpenPCDet-compatible."""

__version__ = "0.1.0"
