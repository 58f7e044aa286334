"""Write one synthetic scene: LiDAR sweeps, camera stand-ins and its nuScenes table records.

Timing as nuScenes: LiDAR at 20 Hz, key frames (samples) at 2 Hz (every 10th sweep), timestamps in
microseconds. Each scene starts 9 sweeps before its first key frame, so every key frame has 9 past sweeps.
Sweeps belong (``sample_token``) to the next key frame, as the devkit's box interpolation expects.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .classes import CLASS_SPECS, attribute_for, visibility_token
from .lidar import LidarConfig, cast, points_in_box_count
from .scene import Scenario, ground_reflectivity, make_scenario
from .tables import (CAM_INTRINSIC, CAM_IMAGE_SIZE, CAM_ROTATION, CAM_TRANSLATION, LIDAR_TRANSLATION,
                     LIDAR_YAW, token, yaw_quaternion)

SWEEP_PERIOD_US = 50_000
SWEEPS_PER_SAMPLE = 10
BASE_TIMESTAMP_US = 1_533_151_600_000_000
_RADAR_RATE = {"car": 4.0, "truck": 6.0, "bus": 6.0, "trailer": 5.0, "construction_vehicle": 5.0,
               "motorcycle": 1.5, "bicycle": 0.8, "pedestrian": 0.3, "barrier": 0.5, "traffic_cone": 0.2}


@dataclass(frozen=True)
class SceneSpec:
    """What to write for one scene (picklable, for worker processes)."""
    root: str
    seed: int
    index: int
    name: str
    location: str
    samples: int
    lidar: LidarConfig
    jpeg: bytes


def _sensor_pose(ego_xyz: np.ndarray, ego_yaw: float):
    c, s = np.cos(ego_yaw), np.sin(ego_yaw)
    tx, ty, tz = LIDAR_TRANSLATION
    return ego_xyz + np.array([c * tx - s * ty, s * tx + c * ty, tz]), ego_yaw + LIDAR_YAW


def _to_sensor(boxes: np.ndarray, pos: np.ndarray, yaw: float) -> np.ndarray:
    """Global boxes (N, 7) -> sensor frame at sensor pose (pos (3,), yaw)."""
    out = boxes.copy()
    d = boxes[:, :2] - pos[:2]
    c, s = np.cos(yaw), np.sin(yaw)
    out[:, 0], out[:, 1] = c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]
    out[:, 2] = boxes[:, 2] - pos[2]
    out[:, 6] = (boxes[:, 6] - yaw + np.pi) % (2 * np.pi) - np.pi
    return out


def _ground_fn(scenario: Scenario, pos, yaw, rng):
    c, s = np.cos(yaw), np.sin(yaw)

    def fn(xyz):
        gxy = np.stack([pos[0] + c * xyz[:, 0] - s * xyz[:, 1], pos[1] + s * xyz[:, 0] + c * xyz[:, 1]], -1)
        return ground_reflectivity(scenario.to_local_xy(gxy), rng)
    return fn


def _write_bin(path: str, points: np.ndarray) -> None:
    with open(path, "wb") as f:
        f.write(np.ascontiguousarray(points, dtype=np.float32).tobytes())


def write_scene(spec: SceneSpec) -> dict:
    """Simulate and write one scene's files; return its table records {table name: [records]}."""
    return _SceneWriter(spec).write()


@dataclass(frozen=True)
class _Sweep:
    """One LiDAR sweep: index ``i``, timestamp ``ts`` (us), time ``t`` (s) from the first sweep, the ego pose
    (``ego_xyz``, ``ego_yaw``), the sensor pose (``s_pos``, ``s_yaw``) and the ray-cast result ``res``."""
    i: int
    ts: int
    t: float
    ego_xyz: np.ndarray
    ego_yaw: float
    s_pos: np.ndarray
    s_yaw: float
    res: object


class _SceneWriter:
    """Writes one scene (:func:`write_scene`): its static records, every sweep, every key frame's camera record
    and annotations, then the instances."""

    def __init__(self, spec: SceneSpec):
        self.spec, self.rng = spec, np.random.default_rng([spec.seed, spec.index])
        self.num_sweeps = SWEEPS_PER_SAMPLE * spec.samples  # 9 sweeps, key frame, 9 sweeps, key frame, ...
        self.scenario = make_scenario(self.rng, duration=(self.num_sweeps - 1) * SWEEP_PERIOD_US * 1e-6)
        self.ann_idx = np.flatnonzero(self.scenario.objects.annotated)
        self.t0_us = BASE_TIMESTAMP_US + spec.index * 3_600_000_000 + spec.seed * 86_400_000_000 % 10 ** 13
        self.log_name = f"n000-synth-{spec.seed:04d}-{spec.index:04d}"
        self.sid = (spec.seed, spec.index)
        self.tab = {k: [] for k in ("log", "scene", "calibrated_sensor", "ego_pose", "sample", "sample_data",
                                    "sample_annotation", "instance")}
        self.sample_toks = [token(*self.sid, "sample", k) for k in range(spec.samples)]
        self.lidar_toks = [token(*self.sid, "sd_lidar", i) for i in range(self.num_sweeps)]
        self.cam_toks = [token(*self.sid, "sd_cam", k) for k in range(spec.samples)]
        self.lidar_cs, self.cam_cs = token(*self.sid, "cs", "LIDAR_TOP"), token(*self.sid, "cs", "CAM_FRONT")
        self.tracks: dict = {}  # object index -> list of annotation records

    def write(self) -> dict:
        spec, sid = self.spec, self.sid
        self.tab["log"].append(dict(token=token(*sid, "log"), logfile=self.log_name, vehicle="n000",
                                    date_captured="2018-08-01", location=spec.location))
        self.tab["calibrated_sensor"] += [
            dict(token=self.lidar_cs, sensor_token=token(spec.seed, "sensor", "LIDAR_TOP"),
                 translation=list(LIDAR_TRANSLATION), rotation=yaw_quaternion(LIDAR_YAW), camera_intrinsic=[]),
            dict(token=self.cam_cs, sensor_token=token(spec.seed, "sensor", "CAM_FRONT"),
                 translation=list(CAM_TRANSLATION), rotation=list(CAM_ROTATION),
                 camera_intrinsic=[list(r) for r in CAM_INTRINSIC])]
        for i in range(self.num_sweeps):
            sweep = self._sweep(i)
            if (i + 1) % SWEEPS_PER_SAMPLE == 0:
                self._key_frame(sweep, (i + 1) // SWEEPS_PER_SAMPLE - 1)
        _link_tracks(spec, self.scenario.objects, self.tracks, self.tab)
        self.tab["scene"].append(dict(token=token(*sid, "scene"), log_token=token(*sid, "log"),
                                      nbr_samples=spec.samples, first_sample_token=self.sample_toks[0],
                                      last_sample_token=self.sample_toks[-1], name=spec.name,
                                      description=f"synthetic street scene, seed {spec.seed}"))
        return self.tab

    def _sweep(self, i) -> _Sweep:
        """Ray-cast and write sweep ``i`` with its ego pose and sample_data records."""
        ts = self.t0_us + i * SWEEP_PERIOD_US
        t = (ts - self.t0_us) * 1e-6
        key = (i + 1) % SWEEPS_PER_SAMPLE == 0
        k = (i + 1) // SWEEPS_PER_SAMPLE - (1 if key else 0)  # this key frame, or the next one for a sweep
        ego_xyz, ego_yaw = self.scenario.ego_pose(t)
        pose_tok = token(*self.sid, "pose_lidar", i)
        self.tab["ego_pose"].append(dict(token=pose_tok, timestamp=ts, rotation=yaw_quaternion(ego_yaw),
                                         translation=[float(v) for v in ego_xyz]))
        s_pos, s_yaw = _sensor_pose(ego_xyz, ego_yaw)
        body = _to_sensor(self.scenario.boxes(t, body=True), s_pos, s_yaw)
        res = cast(self.spec.lidar, body, self.scenario.objects.reflect, ground_z=-s_pos[2], rng=self.rng,
                   ground_reflect=_ground_fn(self.scenario, s_pos, s_yaw, self.rng))
        fname = f"{'samples' if key else 'sweeps'}/LIDAR_TOP/{self.log_name}__LIDAR_TOP__{ts}.pcd.bin"
        _write_bin(os.path.join(self.spec.root, fname), res.points)
        toks = self.lidar_toks
        self.tab["sample_data"].append(dict(
            token=toks[i], sample_token=self.sample_toks[k], ego_pose_token=pose_tok,
            calibrated_sensor_token=self.lidar_cs, timestamp=ts, fileformat="pcd", is_key_frame=key, height=0,
            width=0, filename=fname, prev=toks[i - 1] if i > 0 else "",
            next=toks[i + 1] if i + 1 < self.num_sweeps else ""))
        return _Sweep(i, ts, t, ego_xyz, ego_yaw, s_pos, s_yaw, res)

    def _key_frame(self, sweep: _Sweep, k):
        """Sample ``k`` at ``sweep``: its sample, camera ego pose / image / sample_data, and annotations."""
        spec, ts, samples = self.spec, sweep.ts, self.sample_toks
        samples_after = lambda toks: toks[k + 1] if k + 1 < spec.samples else ""
        self.tab["sample"].append(dict(token=samples[k], timestamp=ts, prev=samples[k - 1] if k > 0 else "",
                                       next=samples_after(samples), scene_token=token(*self.sid, "scene")))
        cam_pose = token(*self.sid, "pose_cam", k)
        self.tab["ego_pose"].append(dict(token=cam_pose, timestamp=ts, rotation=yaw_quaternion(sweep.ego_yaw),
                                         translation=[float(v) for v in sweep.ego_xyz]))
        cam_file = f"samples/CAM_FRONT/{self.log_name}__CAM_FRONT__{ts}.jpg"
        with open(os.path.join(spec.root, cam_file), "wb") as f:
            f.write(spec.jpeg)
        self.tab["sample_data"].append(dict(
            token=self.cam_toks[k], sample_token=samples[k], ego_pose_token=cam_pose,
            calibrated_sensor_token=self.cam_cs, timestamp=ts, fileformat="jpg", is_key_frame=True,
            height=CAM_IMAGE_SIZE[1], width=CAM_IMAGE_SIZE[0], filename=cam_file,
            prev=self.cam_toks[k - 1] if k > 0 else "", next=samples_after(self.cam_toks)))
        self._annotate(sweep, samples[k])

    def _annotate(self, sweep: _Sweep, sample_tok):
        """Annotation records of the objects within LiDAR range at ``sweep`` (points, radar, visibility)."""
        spec, objects, rng, res = self.spec, self.scenario.objects, self.rng, sweep.res
        boxes = self.scenario.boxes(sweep.t)[self.ann_idx]
        dist = np.hypot(boxes[:, 0] - sweep.ego_xyz[0], boxes[:, 1] - sweep.ego_xyz[1])
        inside = dist <= spec.lidar.max_range
        idx, boxes, dist = self.ann_idx[inside], boxes[inside], dist[inside]
        num_pts = points_in_box_count(res.points, _to_sensor(boxes, sweep.s_pos, sweep.s_yaw))
        speeds = np.hypot(objects.vel[idx, 0], objects.vel[idx, 1])
        for j, m in enumerate(idx):
            name = str(objects.names[m])
            seen = num_pts[j] > 0 or rng.random() < 0.3
            lam = _RADAR_RATE[name] * max(0.2, 1.0 - dist[j] / 80.0)
            radar = int(rng.poisson(lam)) if (dist[j] < 60.0 and seen) else 0
            total = res.rays_total[m]
            vis = visibility_token(res.rays_first[m] / total if total > 0 else 0.0)
            attr = attribute_for(name, float(speeds[j]), bool(objects.stopped[m]))
            l, w, h = boxes[j, 3:6]
            self.tracks.setdefault(int(m), []).append(dict(
                sample_token=sample_tok, visibility_token=vis,
                attribute_tokens=[token(spec.seed, "attribute", attr)] if attr else [],
                translation=[float(v) for v in boxes[j, :3]], size=[float(w), float(l), float(h)],
                rotation=yaw_quaternion(float(boxes[j, 6])), num_lidar_pts=int(num_pts[j]), num_radar_pts=radar))


def _link_tracks(spec, objects, tracks, tab):
    for m in sorted(tracks):
        anns = tracks[m]
        inst_tok = token(spec.seed, spec.index, "instance", m)
        toks = [token(spec.seed, spec.index, "ann", m, n) for n in range(len(anns))]
        for n, ann in enumerate(anns):
            rec = dict(token=toks[n], instance_token=inst_tok, **ann,
                       prev=toks[n - 1] if n > 0 else "", next=toks[n + 1] if n + 1 < len(anns) else "")
            tab["sample_annotation"].append(rec)
        category = str(objects.categories[m])
        tab["instance"].append(dict(token=inst_tok, category_token=token(spec.seed, "category", category),
                                    nbr_annotations=len(anns), first_annotation_token=toks[0],
                                    last_annotation_token=toks[-1]))
    assert all(str(objects.names[m]) in CLASS_SPECS for m in tracks)
