"""Synthetic nuScenes-format dataset: scenario + simulated HDL-32E LiDAR + nuScenes table writer."""
from .generate import SyntheticRoot, clear_synthetic_root, write_synthetic_nuscenes
from .lidar import LidarConfig
from .pointcloud import make_point_cloud

__all__ = ["write_synthetic_nuscenes", "clear_synthetic_root", "make_point_cloud", "LidarConfig", "SyntheticRoot"]
