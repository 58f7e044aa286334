"""Placing objects in a scene's local frame: lines of objects, background structures, overlap removal.

Objects are dicts ``name, category, size (l, w, h), body, yaw, p0 (xy at t = 0), vel (xy), reflect, stopped``
(see :class:`rdd.datasets.synthetic.scene.SceneObjects`). Every random draw comes from the ``rng`` passed in.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np

from .classes import CLASS_SPECS

SIZE_JITTER = 0.06  # relative std of per-object size jitter (clipped at 2.5 sigma)


def choose(rng, probs: dict) -> str:
    names = list(probs)
    p = np.array([probs[n] for n in names], dtype=np.float64)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def make_object(rng, name, centre, yaw, vel, stopped) -> dict:
    """One object of detection class ``name`` with nuScenes mean size (jittered) and a sub-category."""
    category, mean, scale, refl = CLASS_SPECS[name]
    jitter = np.clip(rng.normal(0.0, SIZE_JITTER, 3), -2.5 * SIZE_JITTER, 2.5 * SIZE_JITTER)
    size = np.asarray(mean) * (1.0 + jitter)
    if name == "pedestrian":
        r = rng.random()
        if r < 0.1:
            category, size = "human.pedestrian.child", size * 0.75
        elif r < 0.16:
            category = "human.pedestrian.construction_worker"
    elif name == "bus" and rng.random() < 0.15:
        category, size = "vehicle.bus.bendy", size * np.array([1.5, 1.0, 1.0])
    return dict(name=name, category=category, size=size, body=size * np.asarray(scale), yaw=float(yaw),
                p0=np.asarray(centre, dtype=np.float64), vel=np.asarray(vel, dtype=np.float64),
                reflect=refl * rng.uniform(0.6, 1.6), stopped=bool(stopped))


@dataclass(frozen=True)
class Line:
    """The segment ``start + s * axis``, s in [0, ``span``] metres (local frame), whose objects head ``heading``
    (rad) and move at ``speed`` (m/s) along it."""
    start: Tuple[float, float]
    axis: Tuple[float, float]
    span: float
    heading: float
    speed: float = 0.0


@dataclass(frozen=True)
class LineStyle:
    """How objects fill a :class:`Line`: ``gaps`` (min, max) free metres between them; ``long_gap``
    (probability, (min, max)) of an empty stretch instead; ``stopped`` (halted in a lane); yaw jitter (rad) and
    lateral jitter (m); ``random_yaw`` (uniform heading); ``across`` (+ pi/2: parked across); ``flip`` (+ pi at
    random: nose in / out)."""
    gaps: Tuple[float, float] = (1.0, 5.0)
    long_gap: Tuple[float, Tuple[float, float]] = (0.0, (0, 0))
    stopped: bool = False
    yaw_jitter: float = 0.0
    lateral_jitter: float = 0.1
    random_yaw: bool = False
    across: bool = False
    flip: bool = False


def _line_yaw(rng, line: Line, style: LineStyle) -> float:
    if style.random_yaw:
        return rng.uniform(-np.pi, np.pi)
    yaw = line.heading + (np.pi / 2 if style.across else 0.0) + rng.uniform(-style.yaw_jitter, style.yaw_jitter)
    if style.flip and rng.random() < 0.5:
        yaw += np.pi
    return yaw


def fill_line(rng, out, probs, line: Line, style: LineStyle = LineStyle()):
    """Append objects of classes drawn from ``probs`` (``{name: weight}``) spaced along ``line`` (see
    :class:`Line`, :class:`LineStyle`)."""
    axis = np.asarray(line.axis, dtype=np.float64)
    normal = np.array([-axis[1], axis[0]])
    vel = line.speed * np.array([np.cos(line.heading), np.sin(line.heading)])
    s = rng.uniform(0.0, style.gaps[1])
    while True:
        name = choose(rng, probs)
        length = CLASS_SPECS[name][1][1 if style.across else 0] * (1.5 if name == "bus" else 1.0) * 1.15
        if s + length > line.span:
            break
        yaw = _line_yaw(rng, line, style)
        centre = np.asarray(line.start) + axis * (s + length / 2) + \
            normal * rng.uniform(-style.lateral_jitter, style.lateral_jitter)
        out.append(make_object(rng, name, centre, yaw, vel, style.stopped))
        gap = style.long_gap
        s += length + (rng.uniform(*gap[1]) if rng.random() < gap[0] else rng.uniform(*style.gaps))


def _free(x0, x1, excluded) -> bool:
    return all(x1 <= a or x0 >= b for a, b in excluded)


def add_background(rng, out, x_lo, x_hi, side, excluded=()):
    """Unannotated buildings (beyond |y| = 17 m) and poles (|y| = 15.8 m) along one side of the road, leaving
    the x intervals in ``excluded`` (cross streets, parking lots) open."""
    x = x_lo
    while x < x_hi:
        length, depth, height = rng.uniform(8, 40), rng.uniform(8, 20), rng.uniform(4, 25)
        inner = 17.0 + rng.uniform(0.0, 3.0)
        size = np.array([length, depth, height])
        if _free(x, x + length, excluded):
            out.append(dict(name="building", category="", size=size, body=size, yaw=0.0,
                            p0=np.array([x + length / 2, side * (inner + depth / 2)]), vel=np.zeros(2),
                            reflect=rng.uniform(10, 40), stopped=False))
        x += length + (rng.uniform(15, 40) if rng.random() < 0.3 else rng.uniform(0, 12))
    x = x_lo + rng.uniform(0, 20)
    while x < x_hi:  # poles / tree trunks
        size = np.array([0.3, 0.3, rng.uniform(4, 8)])
        if _free(x - 1.0, x + 1.0, excluded):
            out.append(dict(name="pole", category="", size=size, body=size, yaw=0.0,
                            p0=np.array([x, side * 15.8]), vel=np.zeros(2), reflect=30.0, stopped=False))
        x += rng.uniform(12, 35)


def _overlap_interval(d0, v, h, duration):
    """Times in [0, duration] where |d0 + v t| < h, as (start, end) arrays (start > end: never)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (-h - d0) / v, (h - d0) / v
    moving = v != 0
    inside = np.abs(d0) < h
    lo = np.where(moving, np.minimum(t1, t2), np.where(inside, 0.0, np.inf))
    hi = np.where(moving, np.maximum(t1, t2), np.where(inside, duration, -np.inf))
    return np.maximum(lo, 0.0), np.minimum(hi, duration)


def drop_conflicts(objs: list, duration: float, margin: float = 0.05) -> list:
    """Greedily drop objects whose axis-aligned footprint (local frame, plus ``margin``) meets an earlier
    object's at some time in [0, duration]; motion is linear, so each axis overlaps on one time interval."""
    size = np.array([o["size"] for o in objs])
    yaw = np.array([o["yaw"] for o in objs])
    p0 = np.array([o["p0"] for o in objs])
    vel = np.array([o["vel"] for o in objs])
    c, s = np.abs(np.cos(yaw)), np.abs(np.sin(yaw))
    half = np.stack([size[:, 0] / 2 * c + size[:, 1] / 2 * s, size[:, 0] / 2 * s + size[:, 1] / 2 * c], 1) + margin
    lo, hi = np.zeros((len(objs), len(objs))), np.full((len(objs), len(objs)), float(duration))
    for ax in range(2):
        a, b = _overlap_interval(p0[:, None, ax] - p0[None, :, ax], vel[:, None, ax] - vel[None, :, ax],
                                 half[:, None, ax] + half[None, :, ax], duration)
        lo, hi = np.maximum(lo, a), np.minimum(hi, b)
    conflict = lo <= hi
    keep = np.zeros(len(objs), dtype=bool)
    for i in range(len(objs)):
        keep[i] = not np.any(conflict[i, :i] & keep[:i])
    return [o for o, k in zip(objs, keep) if k]
