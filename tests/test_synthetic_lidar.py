"""Unit tests of the synthetic LiDAR ray-caster and scenario (no files)."""
import numpy as np
import pytest

from rdd.datasets.synthetic.lidar import HDL32E_ELEVATIONS_DEG, LidarConfig, cast, points_in_box_count
from rdd.datasets.synthetic.scene import make_scenario

NOISELESS = LidarConfig(azimuth_res_deg=1.0, range_noise=1e-9, dropout=0.0, intensity_noise=0.0)


def test_hdl32e_beam_table():
    elev = np.asarray(HDL32E_ELEVATIONS_DEG)
    assert elev.shape == (32,)
    assert elev[0] == pytest.approx(-30.67) and elev[-1] == pytest.approx(10.67)
    np.testing.assert_allclose(np.diff(elev), 4.0 / 3.0, atol=1e-3)
    assert LidarConfig().num_columns == 1091  # 0.33 deg: HDL-32E at 20 Hz


def test_ground_only_points_lie_on_plane_within_range():
    cfg = NOISELESS
    res = cast(cfg, np.zeros((0, 7)), np.zeros(0), ground_z=-1.84, rng=np.random.default_rng(0), phase=0.0)
    pts = res.points
    np.testing.assert_allclose(pts[:, 2], -1.84, atol=1e-5)
    rng_xy = np.linalg.norm(pts[:, :3], axis=1)
    assert rng_xy.max() <= cfg.max_range + 1e-3 and rng_xy.min() >= cfg.min_range
    # rings that reach the ground within 70 m: elevation below -atan(1.84 / 70) = -1.5 deg -> 22 rings
    assert set(np.unique(pts[:, 4]).astype(int)) == set(range(22))
    assert len(pts) == 22 * cfg.num_columns
    # ground hits of one ring form a circle of radius h / tan(-elevation)
    ring0 = pts[pts[:, 4] == 0]
    np.testing.assert_allclose(np.hypot(ring0[:, 0], ring0[:, 1]), 1.84 / np.tan(np.deg2rad(30.67)), rtol=1e-4)


def test_box_face_hit_and_occlusion():
    cfg = NOISELESS
    # a 2 m cube whose near face is at y = 9 (sensor frame: y forward), and a cube hidden right behind it
    front = [0.0, 10.0, -0.84, 2.0, 2.0, 2.0, 0.0]
    hidden = [0.0, 13.0, -0.84, 1.0, 1.0, 1.0, 0.3]
    boxes = np.array([front, hidden])
    res = cast(cfg, boxes, np.array([50.0, 50.0]), ground_z=-1.84, rng=np.random.default_rng(0), phase=0.0)
    on_front = res.points[res.hit_id == 0]
    assert len(on_front) > 0
    np.testing.assert_allclose(on_front[:, 1], 9.0, atol=1e-4)  # straight-on: every hit on the near face
    assert np.all(np.abs(on_front[:, 0]) <= 1.0 + 1e-6)
    assert res.rays_first[1] == 0 and res.rays_total[1] > 0  # fully occluded but crossed by rays
    assert res.rays_first[0] == res.rays_total[0] == len(on_front)
    assert not np.any(res.hit_id == 1)
    # ground behind the box is shadowed
    shadow = (res.hit_id == -1) & (np.abs(res.points[:, 0]) < 0.5) & (res.points[:, 1] > 11.0) & (res.points[:, 1] < 20)
    assert not shadow.any()
    # intensity: 0..255 integers, head-on hits brighter than the ground
    assert np.all(res.points[:, 3] == np.floor(res.points[:, 3])) and res.points[:, 3].max() <= 255
    assert on_front[:, 3].mean() > res.points[res.hit_id == -1, 3].mean()


def test_sensor_inside_box_and_counting():
    cfg = NOISELESS
    around = np.array([[0.0, 0.0, 0.0, 30.0, 30.0, 20.0, 0.5]])  # the sensor sits inside a big box
    res = cast(cfg, around, np.array([20.0]), ground_z=-1.84, rng=np.random.default_rng(0), phase=0.0)
    assert len(res.points) == 32 * cfg.num_columns  # every ray returns: ground or the inner walls
    walls = res.points[res.hit_id == 0]
    assert len(walls) >= 10 * cfg.num_columns  # at least every ray at or above the horizon
    c, s = np.cos(0.5), np.sin(0.5)
    lx, ly = c * walls[:, 0] + s * walls[:, 1], -s * walls[:, 0] + c * walls[:, 1]
    on_wall = np.isclose(np.abs(lx), 15, atol=1e-3) | np.isclose(np.abs(ly), 15, atol=1e-3)
    assert np.all(on_wall | np.isclose(walls[:, 2], 10, atol=1e-3))
    pts = np.array([[0, 0, 0], [1.9, 0, 0], [2.1, 0, 0], [0, 0.9, 0.4], [0, 0, 0.6]], dtype=np.float32)
    assert points_in_box_count(pts, np.array([[0, 0, 0, 4.0, 2.0, 1.0, 0.0]])).tolist() == [3]
    assert points_in_box_count(pts, np.array([[0, 0, 0, 4.0, 2.0, 1.0, np.pi / 2]])).tolist() == [2]


def test_noise_dropout_and_determinism():
    cfg = LidarConfig(azimuth_res_deg=2.0)
    boxes = np.array([[5.0, 5.0, -0.9, 4.0, 2.0, 1.8, 0.3]])
    a = cast(cfg, boxes, np.array([30.0]), -1.84, np.random.default_rng(3))
    b = cast(cfg, boxes, np.array([30.0]), -1.84, np.random.default_rng(3))
    assert a.points.tobytes() == b.points.tobytes()
    ground = a.points[a.hit_id == -1]
    assert 0.005 < np.std(ground[:, 2] + 1.84) < 0.05  # ~2 cm range noise
    expected = 22 * cfg.num_columns * (1 - cfg.dropout)
    assert abs(len(ground) + np.count_nonzero(a.hit_id == 0) - expected) < 0.05 * expected


def test_scenario_objects_never_overlap_and_stay_on_ground():
    sc = make_scenario(np.random.default_rng(5), duration=5.0)
    o = sc.objects
    assert set(o.names[o.annotated]) <= {'car', 'truck', 'construction_vehicle', 'bus', 'trailer', 'barrier',
                                           'motorcycle', 'bicycle', 'pedestrian', 'traffic_cone'}
    assert np.all(o.body <= o.size + 1e-9)
    for t in (0.0, 2.5, 5.0):
        boxes = sc.boxes(t)
        np.testing.assert_allclose(boxes[:, 2], boxes[:, 5] / 2)  # bottom on the ground plane z = 0
        corners = _bev_corners(boxes)
        for i in range(len(boxes)):
            others = np.flatnonzero(np.hypot(*(boxes[:, :2] - boxes[i, :2]).T) < 30)
            for j in others[others > i]:
                assert not _sat_overlap(corners[i], corners[j]), (o.names[i], o.names[j], t)


def _bev_corners(boxes):
    c, s = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
    sx = np.array([1, 1, -1, -1])[None] * boxes[:, 3:4] / 2
    sy = np.array([1, -1, -1, 1])[None] * boxes[:, 4:5] / 2
    return np.stack([boxes[:, 0:1] + c[:, None] * sx - s[:, None] * sy,
                     boxes[:, 1:2] + s[:, None] * sx + c[:, None] * sy], -1)


def _sat_overlap(a, b):
    for poly in (a, b):
        for k in range(4):
            edge = poly[(k + 1) % 4] - poly[k]
            axis = np.array([-edge[1], edge[0]])
            pa, pb = a @ axis, b @ axis
            if pa.max() <= pb.min() or pb.max() <= pa.min():
                return False
    return True


def test_drop_conflicts_handles_crossing_paths():
    from rdd.datasets.synthetic.placement import drop_conflicts

    def obj(p0, vel, yaw=0.0):
        return dict(size=np.array([4.0, 2.0, 1.5]), yaw=yaw, p0=np.array(p0, float), vel=np.array(vel, float))
    east = obj([-20.0, 0.0], [10.0, 0.0])
    north_meets = obj([0.0, -20.0], [0.0, 10.0], np.pi / 2)  # both reach the origin at t = 2 s
    north_late = obj([0.0, -60.0], [0.0, 10.0], np.pi / 2)  # reaches it at t = 6 s, after the scene
    parked_ahead = obj([15.0, 0.3], [0.0, 0.0])  # in the east-mover's path at t = 3.5 s
    kept = drop_conflicts([east, north_meets, north_late, parked_ahead], duration=5.0)
    assert [o is k for o, k in zip([east, north_late], kept)] == [True, True] and len(kept) == 2
    assert len(drop_conflicts([east, parked_ahead], duration=3.0)) == 2  # the scene ends before they meet
