"""Simulated 32-beam spinning LiDAR (nuScenes' Velodyne HDL-32E geometry), ray-cast in numpy.

Everything here lives in the sensor frame of one sweep (nuScenes LIDAR_TOP: x right, y forward, z up;
metres). The scene is a horizontal ground plane at ``z = ground_z`` plus solid oriented boxes (objects,
buildings, poles). Each ray takes its nearest hit (occlusion), gets Gaussian range noise, a random dropout,
and an intensity from the surface's reflectivity and the incidence angle.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

# HDL-32E: 32 lasers from -30.67 deg to +10.67 deg in 4/3 deg steps.
HDL32E_ELEVATIONS_DEG = tuple(float(v) for v in np.round(-30.67 + np.arange(32) * (41.34 / 31), 4))


@dataclass(frozen=True)
class LidarConfig:
    """Sensor model. The default azimuth step 0.33 deg is the HDL-32E's at 20 Hz (1084 firings per turn);
    it gives ~30k points per sweep in the synthetic street scenes."""
    elevations_deg: tuple = HDL32E_ELEVATIONS_DEG
    azimuth_res_deg: float = 0.33
    max_range: float = 70.0
    min_range: float = 1.0
    range_noise: float = 0.02  # m, std (clipped at 2.5 sigma)
    dropout: float = 0.05  # probability that a return is lost
    intensity_noise: float = 0.15  # log-normal std of the intensity

    @property
    def num_columns(self) -> int:
        return int(round(360.0 / self.azimuth_res_deg))


@dataclass
class CastResult:
    """points (K, 5) float32 [x, y, z, intensity 0..255, ring index 0..31]; hit_id (K,) int64 index of the box
    hit (-1 ground); rays_first (M,) rays whose nearest hit is box m; rays_total (M,) rays meeting box m within
    range whatever is in front (rays_first / rays_total = the visible fraction)."""
    points: np.ndarray
    hit_id: np.ndarray
    rays_first: np.ndarray
    rays_total: np.ndarray


def ray_directions(cfg: LidarConfig, phase: float) -> np.ndarray:
    """Unit ray directions (B, A, 3) for B beams and A azimuth columns; azimuth = phase + k * resolution."""
    elev = np.deg2rad(np.asarray(cfg.elevations_deg, dtype=np.float64))
    az = phase + np.arange(cfg.num_columns) * np.deg2rad(cfg.azimuth_res_deg)
    ce = np.cos(elev)[:, None]
    return np.stack([ce * np.cos(az)[None], ce * np.sin(az)[None],
                     np.repeat(np.sin(elev)[:, None], cfg.num_columns, axis=1)], axis=-1)


def _box_columns(cfg: LidarConfig, phase: float, boxes: np.ndarray) -> list:
    """[(m, azimuth column indices whose rays may meet box m)] for the boxes within range (vectorised cull)."""
    a = cfg.num_columns
    cx, cy, l, w, yaw = boxes[:, 0], boxes[:, 1], boxes[:, 3], boxes[:, 4], boxes[:, 6]
    near = np.hypot(cx, cy) - 0.5 * np.hypot(l, w) <= cfg.max_range
    c, s = np.cos(yaw), np.sin(yaw)
    lx, ly = c * -cx + s * -cy, -s * -cx + c * -cy  # sensor origin in each box frame
    around = (np.abs(lx) <= l / 2) & (np.abs(ly) <= w / 2)
    sx = np.array([1, 1, -1, -1])[None] * (l / 2)[:, None]
    sy = np.array([1, -1, 1, -1])[None] * (w / 2)[:, None]
    px = cx[:, None] + c[:, None] * sx - s[:, None] * sy
    py = cy[:, None] + s[:, None] * sx + c[:, None] * sy
    centre = np.arctan2(cy, cx)
    delta = (np.arctan2(py, px) - centre[:, None] + np.pi) % (2 * np.pi) - np.pi
    res = np.deg2rad(cfg.azimuth_res_deg)
    k0 = np.ceil((centre + delta.min(1) - phase) / res).astype(np.int64)
    k1 = np.minimum(np.floor((centre + delta.max(1) - phase) / res).astype(np.int64), k0 + a - 1)
    out = []
    for m in np.flatnonzero(near & ((k1 >= k0) | around)):
        out.append((int(m), np.arange(a) if around[m] else np.arange(k0[m], k1[m] + 1) % a))
    return out


def cast(cfg: LidarConfig, boxes: np.ndarray, reflect: np.ndarray, ground_z: float,
         rng: np.random.Generator, ground_reflect: Optional[Callable[[np.ndarray], np.ndarray]] = None,
         phase: Optional[float] = None) -> CastResult:
    """Ray-cast one sweep.

    Args:
        boxes: (M, 7) solids [x, y, z_centre, l, w, h, yaw] in the sensor frame (metres, rad).
        reflect: (M,) reflectivity of each box's surface (intensity units at normal incidence).
        ground_z: height of the ground plane in the sensor frame (negative: the sensor is above it).
        ground_reflect: maps ground hit points (K, 3) to reflectivity (K,); default constant 8.
        phase: azimuth of the first column (rad); drawn from ``rng`` when None.
    """
    if phase is None:
        phase = float(rng.uniform(0.0, np.deg2rad(cfg.azimuth_res_deg)))
    dirs = ray_directions(cfg, phase)
    with np.errstate(divide="ignore"):
        t_best = np.where(dirs[..., 2] < 0, ground_z / dirs[..., 2], np.inf)
    t_best[t_best > cfg.max_range] = np.inf
    hits = _Hits(t=t_best, box=np.where(np.isfinite(t_best), -1, -2), cosine=np.abs(dirs[..., 2]).copy())
    rays_total = np.zeros(len(boxes), dtype=np.int64)
    for m, cols in _box_columns(cfg, phase, boxes):
        rays_total[m] = _intersect_box(cfg, dirs[:, cols], boxes[m], m, hits, cols)
    rays_first = np.bincount(hits.box[hits.box >= 0], minlength=len(boxes)).astype(np.int64)
    points, hit_id = _returns(cfg, dirs, hits, reflect, rng, ground_reflect)
    return CastResult(points=points, hit_id=hit_id, rays_first=rays_first, rays_total=rays_total)


@dataclass
class _Hits:
    """Per ray (beams x columns): the nearest hit distance ``t`` (inf: none), what it hit ``box`` (index; -1
    ground, -2 nothing) and the cosine of incidence."""
    t: np.ndarray
    box: np.ndarray
    cosine: np.ndarray


def _intersect_box(cfg, d, box, m, hits: _Hits, cols) -> int:
    """Slab-test the rays ``d`` (B, C, 3) of columns ``cols`` against box ``m``; record where it is the nearest
    hit; returns how many rays hit it at all."""
    cx, cy, cz, l, w, h, yaw = box
    c, s = np.cos(yaw), np.sin(yaw)
    dl = (c * d[..., 0] + s * d[..., 1], -s * d[..., 0] + c * d[..., 1], d[..., 2])
    origin = (c * -cx + s * -cy, -s * -cx + c * -cy, -cz)
    t_near, t_far = [], []
    with np.errstate(divide="ignore", invalid="ignore"):
        for ax, half in enumerate((l / 2, w / 2, h / 2)):
            inv = 1.0 / dl[ax]
            t1, t2 = (-half - origin[ax]) * inv, (half - origin[ax]) * inv
            t_near.append(np.fmin(t1, t2))
            t_far.append(np.fmax(t1, t2))
    t_enter = np.fmax(np.fmax(t_near[0], t_near[1]), t_near[2])
    t_exit = np.fmin(np.fmin(t_far[0], t_far[1]), t_far[2])
    outside = t_enter > 0  # else the sensor is inside the box and sees its inner walls at t_exit
    t_hit = np.where(outside, t_enter, t_exit)
    hit = (t_exit >= t_enter) & (t_exit > 0) & (t_hit < cfg.max_range)
    closer = hit & (t_hit < hits.t[:, cols])
    if closer.any():
        t_face = (t_near if outside.all() else [np.where(outside, a, b) for a, b in zip(t_near, t_far)])
        cosine = np.abs(np.where(t_hit == t_face[0], dl[0], np.where(t_hit == t_face[1], dl[1], dl[2])))
        sub_t, sub_id, sub_cos = hits.t[:, cols], hits.box[:, cols], hits.cosine[:, cols]
        sub_t[closer], sub_id[closer], sub_cos[closer] = t_hit[closer], m, cosine[closer]
        hits.t[:, cols], hits.box[:, cols], hits.cosine[:, cols] = sub_t, sub_id, sub_cos
    return int(np.count_nonzero(hit))


def _returns(cfg, dirs, hits: _Hits, reflect, rng, ground_reflect):
    """The sweep's points (N, 5) [x, y, z, intensity, ring] in firing order (azimuth-major, then beam) after
    dropout and range noise, and what each hit (N,) int64."""
    t_best, best_id, best_cos = hits.t.T, hits.box.T, hits.cosine.T
    ring = np.broadcast_to(np.arange(dirs.shape[0]), t_best.shape)
    dirs = dirs.transpose(1, 0, 2)
    keep = np.isfinite(t_best) & (t_best >= cfg.min_range) & (rng.random(t_best.shape) >= cfg.dropout)
    t, hit_id, cosine, ring, d = t_best[keep], best_id[keep], best_cos[keep], ring[keep], dirs[keep]
    noise = np.clip(rng.normal(0.0, cfg.range_noise, t.shape), -2.5 * cfg.range_noise, 2.5 * cfg.range_noise)
    r = t + noise
    xyz = d * r[:, None]
    refl = np.empty(len(t))
    on_ground = hit_id < 0
    refl[on_ground] = ground_reflect(xyz[on_ground]) if ground_reflect is not None else 8.0
    refl[~on_ground] = np.asarray(reflect, dtype=np.float64)[hit_id[~on_ground]]
    intensity = refl * (0.3 + 0.7 * cosine) * (1.0 - 0.3 * r / cfg.max_range)
    intensity *= np.exp(rng.normal(0.0, cfg.intensity_noise, len(t)))
    intensity = np.floor(np.clip(intensity, 0.0, 255.0))
    points = np.concatenate([xyz, intensity[:, None], ring[:, None]], axis=1).astype(np.float32)
    return points, hit_id.astype(np.int64)


def points_in_box_count(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Number of points (K, 3+) inside each box (M, 7) [x, y, z_centre, l, w, h, yaw]; (M,) int64."""
    counts = np.zeros(len(boxes), dtype=np.int64)
    xyz = points[:, :3].astype(np.float64)
    for m, (cx, cy, cz, l, w, h, yaw) in enumerate(boxes):
        near = (np.abs(xyz[:, 0] - cx) <= 0.5 * (l + w)) & (np.abs(xyz[:, 1] - cy) <= 0.5 * (l + w))
        p = xyz[near] - np.array([cx, cy, cz])
        c, s = np.cos(yaw), np.sin(yaw)
        lx, ly = c * p[:, 0] + s * p[:, 1], -s * p[:, 0] + c * p[:, 1]
        counts[m] = int(np.count_nonzero((np.abs(lx) <= l / 2) & (np.abs(ly) <= w / 2) & (np.abs(p[:, 2]) <= h / 2)))
    return counts
