"""Static nuScenes tables, sensor calibrations and token helpers for the synthetic writer."""
from __future__ import annotations

import hashlib

import numpy as np

from ..nuscenes_tables import DEVKIT_TABLES
from .classes import ATTRIBUTES, GENERAL_CATEGORIES, VISIBILITIES

# nuScenes LIDAR_TOP mounting (scene-0061): ~[0.94, 0, 1.84] m on the roof, rotated -90 deg about z,
# so the LiDAR frame is x right, y forward, z up.
LIDAR_TRANSLATION = (0.943713, 0.0, 1.84023)
LIDAR_YAW = -np.pi / 2
# nuScenes CAM_FRONT mounting (z forward, x right, y down) and intrinsics of the 1600x900 image; the
# synthetic camera image is a tiny 32x18 stand-in, so the intrinsics are scaled by 32/1600.
CAM_TRANSLATION = (1.70079118954, 0.0159456324149, 1.51095763913)
CAM_ROTATION = (0.4998015430569128, -0.5030316162024876, 0.4997798114386805, -0.49730230592019284)
CAM_IMAGE_SIZE = (32, 18)
_CAM_SCALE = CAM_IMAGE_SIZE[0] / 1600.0
CAM_INTRINSIC = ((1266.417203046554 * _CAM_SCALE, 0.0, 816.2670197447984 * _CAM_SCALE),
                 (0.0, 1266.417203046554 * _CAM_SCALE, 491.50706579294757 * _CAM_SCALE),
                 (0.0, 0.0, 1.0))

LOCATIONS = ("boston-seaport", "singapore-onenorth", "singapore-queenstown", "singapore-hollandvillage")
TABLE_NAMES = DEVKIT_TABLES  # every table the devkit loads


def token(*parts) -> str:
    """Deterministic 32-hex-digit token from its parts."""
    return hashlib.md5("|".join(str(p) for p in parts).encode()).hexdigest()


def yaw_quaternion(yaw: float) -> list:
    """Quaternion [w, x, y, z] of a rotation by ``yaw`` about +z."""
    return [float(np.cos(yaw / 2)), 0.0, 0.0, float(np.sin(yaw / 2))]


def static_tables(seed: int) -> dict:
    """category, attribute, visibility and sensor tables (identical for every scene)."""
    category = [dict(token=token(seed, "category", name), name=name, description=desc, index=i)
                for i, (name, desc) in enumerate(GENERAL_CATEGORIES)]
    attribute = [dict(token=token(seed, "attribute", name), name=name, description=desc)
                 for name, desc in ATTRIBUTES]
    visibility = [dict(token=tok, level=level, description=desc) for tok, level, desc in VISIBILITIES]
    sensor = [dict(token=token(seed, "sensor", "LIDAR_TOP"), channel="LIDAR_TOP", modality="lidar"),
              dict(token=token(seed, "sensor", "CAM_FRONT"), channel="CAM_FRONT", modality="camera")]
    return dict(category=category, attribute=attribute, visibility=visibility, sensor=sensor)


def tiny_jpeg() -> bytes:
    """A valid 32x18 grey JPEG (the CAM_FRONT stand-in)."""
    import cv2
    ok, buf = cv2.imencode(".jpg", np.full((CAM_IMAGE_SIZE[1], CAM_IMAGE_SIZE[0], 3), 128, np.uint8))
    assert ok
    return buf.tobytes()


def tiny_map_png() -> bytes:
    """A valid 20x20 all-drivable map mask PNG (the devkit's MapMask needs the file to exist)."""
    import cv2
    ok, buf = cv2.imencode(".png", np.full((20, 20), 255, np.uint8))
    assert ok
    return buf.tobytes()
