"""``make_point_cloud``: one nuScenes-size multi-sweep LiDAR cloud straight from the simulator (no files)."""
from __future__ import annotations

from typing import Optional

import numpy as np

from .lidar import LidarConfig, cast
from .scene import make_scenario
from .writer import SWEEP_PERIOD_US, _ground_fn, _sensor_pose, _to_sensor


def make_point_cloud(num_sweeps: int = 10, seed: int = 0, lidar: Optional[LidarConfig] = None) -> np.ndarray:
    """A ``num_sweeps``-sweep cloud as the dataset feeds it to a detector: (N, 5) float32
    ``[x, y, z, intensity, time_lag]`` in the last sweep's LiDAR frame (metres, 0..255, seconds).

    With the default sensor (HDL-32E, 20 Hz) 10 sweeps give ~250-300k points, like nuScenes. Deterministic.
    """
    if num_sweeps < 1:
        raise ValueError(f"num_sweeps must be >= 1, got {num_sweeps}")
    lidar = lidar or LidarConfig()
    rng = np.random.default_rng([seed, 7919])
    dt = SWEEP_PERIOD_US * 1e-6
    scenario = make_scenario(rng, duration=(num_sweeps - 1) * dt)
    t_ref = (num_sweeps - 1) * dt
    ref_pos, ref_yaw = _sensor_pose(*scenario.ego_pose(t_ref))
    clouds = []
    for i in range(num_sweeps):
        t = i * dt
        pos, yaw = _sensor_pose(*scenario.ego_pose(t))
        body = _to_sensor(scenario.boxes(t, body=True), pos, yaw)
        pts = cast(lidar, body, scenario.objects.reflect, ground_z=-pos[2], rng=rng,
                   ground_reflect=_ground_fn(scenario, pos, yaw, rng)).points.astype(np.float64)
        # sweep frame -> global -> reference frame (rotation about z only: flat ground)
        c, s = np.cos(yaw), np.sin(yaw)
        gx, gy = pos[0] + c * pts[:, 0] - s * pts[:, 1], pos[1] + s * pts[:, 0] + c * pts[:, 1]
        dx, dy = gx - ref_pos[0], gy - ref_pos[1]
        cr, sr = np.cos(ref_yaw), np.sin(ref_yaw)
        pts[:, 0], pts[:, 1] = cr * dx + sr * dy, -sr * dx + cr * dy
        pts[:, 2] += pos[2] - ref_pos[2]
        pts[:, 4] = t_ref - t
        clouds.append(pts)
    return np.concatenate(clouds[::-1], axis=0).astype(np.float32)
