"""Scenario of one synthetic scene: a straight urban road, the ego vehicle driving on it, and objects.

The road runs along the scene's local +x axis (local frame: x along the road, y to the left, z up, ground at
z = 0). Cross-section (local y, metres): driving lanes at -5.25, -1.75 (+x direction, the ego drives at -1.75)
and +1.75, +5.25 (-x); barrier/cone rows at ±7.25; parking at ±9.1; bike lanes at ±11.3; parked bicycles at
±12.2; walking pedestrians at ±13.0 / ±14.0; standing pedestrians at ±14.9; poles at ±15.8; buildings beyond
±17. Some scenes add a cross street (queues waiting at the main road, traffic leaving it) and parking lots
(rows of cars parked across the road, nose in or out) where the buildings leave room. All objects in one line
share its speed; objects whose footprints could meet at any time of the scene are dropped, so no two boxes
overlap.
Motion is straight at constant velocity; the local frame is placed in the global frame by a random rotation
and offset. Every random draw comes from the ``rng`` passed in (deterministic for a seed).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .placement import Line, LineStyle, add_background, drop_conflicts, fill_line

VIEW_MARGIN = 80.0  # objects are generated this far (m) around the ego's path

_DRIVING = {"car": 0.74, "truck": 0.12, "bus": 0.06, "motorcycle": 0.05, "construction_vehicle": 0.03}
_PARKING = {"car": 0.62, "truck": 0.12, "trailer": 0.10, "construction_vehicle": 0.08, "bus": 0.03,
            "motorcycle": 0.05}
_BIKE_LANE = {"bicycle": 0.75, "motorcycle": 0.25}
_BIKE_PARKED = {"bicycle": 0.8, "motorcycle": 0.2}
_ROADWORK = {"barrier": 0.55, "traffic_cone": 0.45}
_PED = {"pedestrian": 1.0}
_PARKING_LOT = {"car": 0.85, "truck": 0.1, "motorcycle": 0.05}


@dataclass
class SceneObjects:
    """All physical objects of a scene, in the scene's local frame. N objects.

    names (N,) detection class name, or 'building' / 'pole' for unannotated background;
    categories (N,) nuScenes general category ('' for background); size (N, 3) annotated (l, w, h) m;
    body (N, 3) ray-cast solid (l, w, h) m; yaw (N,) rad; p0 (N, 2) local xy at t = 0; vel (N, 2) m/s;
    reflect (N,) surface reflectivity (intensity units); stopped (N,) bool, halted in a driving/bike lane.
    """
    names: np.ndarray
    categories: np.ndarray
    size: np.ndarray
    body: np.ndarray
    yaw: np.ndarray
    p0: np.ndarray
    vel: np.ndarray
    reflect: np.ndarray
    stopped: np.ndarray

    @property
    def annotated(self) -> np.ndarray:
        return self.categories != ""


@dataclass
class Scenario:
    """One scene: ego trajectory and objects. Times ``t`` are seconds from the scene's first LiDAR sweep."""
    origin: np.ndarray  # (2,) global xy of the local origin
    road_yaw: float  # rad, global heading of the local +x axis
    ego_x0: float
    ego_y: float
    ego_speed: float
    objects: SceneObjects

    def _to_global_xy(self, xy: np.ndarray) -> np.ndarray:
        c, s = np.cos(self.road_yaw), np.sin(self.road_yaw)
        return np.stack([c * xy[..., 0] - s * xy[..., 1], s * xy[..., 0] + c * xy[..., 1]], -1) + self.origin

    def to_local_xy(self, xy_global: np.ndarray) -> np.ndarray:
        """(..., 2) global xy -> (..., 2) local xy."""
        d = xy_global - self.origin
        c, s = np.cos(self.road_yaw), np.sin(self.road_yaw)
        return np.stack([c * d[..., 0] + s * d[..., 1], -s * d[..., 0] + c * d[..., 1]], -1)

    def ego_pose(self, t: float) -> tuple[np.ndarray, float]:
        """Global ego pose at time t: translation (3,) (z = 0, on the ground) and yaw (rad)."""
        xy = self._to_global_xy(np.array([self.ego_x0 + self.ego_speed * t, self.ego_y]))
        return np.array([xy[0], xy[1], 0.0]), float(self.road_yaw)

    def boxes(self, t: float, body: bool = False) -> np.ndarray:
        """Global boxes at time t, (N, 7) [x, y, z_centre, l, w, h, yaw]; ``body`` gives the ray-cast solids."""
        o = self.objects
        dims = o.body if body else o.size
        xy = self._to_global_xy(o.p0 + o.vel * t)
        z = dims[:, 2:3] / 2.0
        yaw = _wrap(o.yaw + self.road_yaw)
        return np.concatenate([xy, z, dims, yaw[:, None]], axis=1)

    def velocities(self) -> np.ndarray:
        """(N, 2) global velocities (m/s)."""
        c, s = np.cos(self.road_yaw), np.sin(self.road_yaw)
        v = self.objects.vel
        return np.stack([c * v[:, 0] - s * v[:, 1], s * v[:, 0] + c * v[:, 1]], -1)


def _wrap(a):
    return (a + np.pi) % (2 * np.pi) - np.pi


def make_scenario(rng: np.random.Generator, duration: float) -> Scenario:
    """Draw one scene lasting ``duration`` seconds (ego speed, traffic in every lane, background)."""
    ego_speed = 0.0 if rng.random() < 0.15 else float(rng.uniform(4.0, 12.0))
    street = _Street(rng, duration, ego_speed)
    street.add_lanes()
    street.add_cross_street()
    for side in (-1, 1):
        street.add_roadside(side)
    for side in (-1, 1):
        add_background(rng, street.objs, street.lo - 40.0, street.hi + 40.0, side, street.excluded)
    ego = dict(size=np.array([4.1, 1.8, 1.6]), yaw=0.0, p0=np.array([street.ego_x0 + 1.2, street.ego_y]),
               vel=np.array([ego_speed, 0.0]))
    objects = _scene_objects(drop_conflicts([ego] + street.objs, duration)[1:])
    origin = rng.uniform(300.0, 2000.0, 2)
    return Scenario(origin=origin, road_yaw=float(rng.uniform(-np.pi, np.pi)), ego_x0=street.ego_x0,
                    ego_y=street.ego_y, ego_speed=ego_speed, objects=objects)


class _Street:
    """The objects of one scene as they are drawn (see the module docstring for the cross-section): ``objs``
    (object dicts), ``excluded`` (x intervals kept free of buildings), ``lo`` / ``hi`` (x extent around the
    ego's path)."""

    def __init__(self, rng, duration, ego_speed):
        self.rng, self.duration, self.ego_speed = rng, duration, ego_speed
        self.ego_x0, self.ego_y = 0.0, -1.75
        self.travel = ego_speed * duration
        self.lo, self.hi = self.ego_x0 - VIEW_MARGIN, self.ego_x0 + self.travel + VIEW_MARGIN
        self.objs, self.excluded = [], []

    def lane_span(self, v):
        """x range at t = 0 that keeps a lane moving at ``v`` populated around the ego for the whole scene."""
        return self.lo - max(v, 0.0) * self.duration, self.hi - min(v, 0.0) * self.duration

    def along_x(self, probs, y, x_range, direction, speed=0.0, **style):
        heading = 0.0 if direction > 0 else np.pi
        line = Line((x_range[0], y), (1.0, 0.0), x_range[1] - x_range[0], heading, speed)
        fill_line(self.rng, self.objs, probs, line, LineStyle(**style))

    def add_lanes(self):
        """Traffic in the four driving lanes (the ego's lane at its speed, its own spot kept free)."""
        rng = self.rng
        for y, direction in ((-5.25, 1), (-1.75, 1), (1.75, -1), (5.25, -1)):
            speed = self.ego_speed if y == self.ego_y else \
                (0.0 if rng.random() < 0.2 else float(rng.uniform(3.0, 14.0)))
            a, b = self.lane_span(speed * direction)
            lane: list = []
            style = LineStyle(gaps=(2.0, 6.0) if speed == 0.0 else (8.0, 35.0), long_gap=(0.25, (20, 60)),
                              stopped=speed == 0.0)
            fill_line(rng, lane, _DRIVING, Line((a, y), (1.0, 0.0), b - a, 0.0 if direction > 0 else np.pi, speed),
                      style)
            if y == self.ego_y:  # keep the ego's own spot free (ego body spans about x in [-1, 3.3])
                lane = [o for o in lane if abs(o["p0"][0] - self.ego_x0 - 1.2) > o["size"][0] / 2 + 6.0]
            self.objs += lane

    def add_cross_street(self):
        """Half the scenes: a cross street with queues waiting to enter and traffic leaving (headings +-90 deg)."""
        rng = self.rng
        if rng.random() >= 0.5:
            return
        xc = float(rng.uniform(self.ego_x0 + 15.0, self.ego_x0 + self.travel + 45.0))
        self.excluded.append((xc - 7.0, xc + 7.0))
        for side in (-1, 1):
            fill_line(rng, self.objs, _DRIVING, Line((xc - side * 1.75, side * 12.5), (0.0, side), 50.0,
                                                     -side * np.pi / 2), LineStyle(gaps=(2.0, 6.0), stopped=True))
            leaving = Line((xc + side * 1.75, side * 12.5), (0.0, side), 60.0, side * np.pi / 2,
                           float(rng.uniform(3.0, 10.0)))
            fill_line(rng, self.objs, _DRIVING, leaving, LineStyle(gaps=(8.0, 30.0)))

    def add_roadside(self, side):
        """Roadwork, parking, bike lane, parked bikes, pedestrians and maybe a parking lot on one side."""
        rng, lo, hi = self.rng, self.lo, self.hi
        direction = 1 if side < 0 else -1
        self.along_x(_ROADWORK, side * 7.25, (lo, hi), direction, gaps=(0.4, 3.0), long_gap=(0.15, (30, 100)),
                     lateral_jitter=0.05, across=True)
        self.along_x(_PARKING, side * 9.1, (lo, hi), direction, gaps=(0.8, 8.0), long_gap=(0.2, (10, 40)),
                     yaw_jitter=0.05, lateral_jitter=0.05)
        bike_speed = 0.0 if rng.random() < 0.1 else float(rng.uniform(3.0, 7.0))
        self.along_x(_BIKE_LANE, side * 11.3, self.lane_span(bike_speed * direction), direction, bike_speed,
                     gaps=(15.0, 60.0), stopped=bike_speed == 0.0)
        self.along_x(_BIKE_PARKED, side * 12.2, (lo, hi), direction, gaps=(0.3, 2.0), long_gap=(0.3, (20, 80)),
                     yaw_jitter=0.1, lateral_jitter=0.02)
        for y, walk_dir in ((13.0, 1), (14.0, -1)):
            v = float(rng.uniform(0.9, 1.6))
            self.along_x(_PED, side * y, self.lane_span(v * walk_dir), walk_dir, v, gaps=(3.0, 25.0),
                         yaw_jitter=0.1)
        self.along_x(_PED, side * 14.9, (lo, hi), 1, gaps=(5.0, 40.0), random_yaw=True)
        if rng.random() < 0.4:  # a parking lot: two rows of nose-in / nose-out cars across the road
            a = float(rng.uniform(lo, hi - 40.0))
            b = a + float(rng.uniform(25.0, 60.0))
            self.excluded.append((a - 2.0, b + 2.0))
            for y in (19.5, 26.0):
                self.along_x(_PARKING_LOT, side * y, (a, b), 1, gaps=(0.5, 1.5), long_gap=(0.1, (3, 10)),
                             yaw_jitter=0.08, lateral_jitter=0.2, across=True, flip=True)


def _scene_objects(objs) -> SceneObjects:
    def col(key, dtype=None):
        return np.array([o[key] for o in objs], dtype=dtype)
    return SceneObjects(names=col("name"), categories=col("category"), size=col("size", np.float64),
                        body=col("body", np.float64), yaw=_wrap(col("yaw", np.float64)), p0=col("p0", np.float64),
                        vel=col("vel", np.float64), reflect=col("reflect", np.float64), stopped=col("stopped", bool))


def ground_reflectivity(local_xy: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Reflectivity (K,) of ground points at local xy (K, 2): asphalt, painted lane markings, sidewalk."""
    x, y = local_xy[:, 0], local_xy[:, 1]
    ay = np.abs(y)
    refl = rng.uniform(5.0, 11.0, len(x))
    refl[ay > 10.6] = rng.uniform(14.0, 24.0, int(np.count_nonzero(ay > 10.6)))  # sidewalk, kerb, verge
    solid = (ay < 0.2) | (np.abs(ay - 7.0) < 0.08)  # centre line and road edge lines
    dashed = (np.abs(ay - 3.5) < 0.08) & (np.mod(x, 9.0) < 3.0)  # lane dividers, 3 m paint / 6 m gap
    refl[solid | dashed] = 60.0
    return refl
