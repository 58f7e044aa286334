"""Augmentation invariants: every world transform keeps points in their boxes and boxes/velocities consistent."""
import numpy as np
import pytest

from rdd.datasets.augmentor import augmentor_utils as au
from rdd.datasets.augmentor.database_sampler import DataBaseSampler
from rdd.ops.points_in_boxes import points_in_boxes_mask

from test_dataset_helpers import CLASS_NAMES, PTS_PER_BOX, make_cfg, make_mini_root


def _scene(seed=0, n_boxes=6):
    rng = np.random.default_rng(seed)
    boxes = np.zeros((n_boxes, 9))
    boxes[:, 0] = np.linspace(-30, 30, n_boxes)
    boxes[:, 1] = rng.uniform(-20, 20, n_boxes)
    boxes[:, 2] = rng.uniform(-1, 0, n_boxes)
    boxes[:, 3:6] = rng.uniform(1, 4, (n_boxes, 3))
    boxes[:, 6] = rng.uniform(-np.pi, np.pi, n_boxes)
    speed = rng.uniform(1, 10, n_boxes)
    boxes[:, 7], boxes[:, 8] = speed * np.cos(boxes[:, 6]), speed * np.sin(boxes[:, 6])  # moving forward
    pts = []
    for b in boxes:
        local = rng.uniform(-0.45, 0.45, (50, 3)) * b[3:6]
        c, s = np.cos(b[6]), np.sin(b[6])
        pts.append(np.stack([local[:, 0] * c - local[:, 1] * s + b[0], local[:, 0] * s + local[:, 1] * c + b[1],
                             local[:, 2] + b[2], np.full(50, 7.0), np.zeros(50)], 1))
    return boxes, np.concatenate(pts).astype(np.float32)


def _check_consistent(boxes, points):
    """Each box holds exactly its 50 points, and velocity points along the heading."""
    mask = points_in_boxes_mask(points, boxes, margin=0.0)
    assert (mask.sum(0) == 50).all()
    assert (mask.sum(1) == 1).all()
    for k in range(len(boxes)):
        assert mask[k * 50:(k + 1) * 50, k].all()
    heading = np.arctan2(boxes[:, 8], boxes[:, 7])
    diff = np.angle(np.exp(1j * (heading - boxes[:, 6])))
    assert np.abs(diff).max() < 1e-5


def _move(boxes, points, matrix):
    au.transform_points(points, matrix)
    return boxes, points


@pytest.mark.parametrize('op', ['flip_x', 'flip_y', 'rot', 'scale', 'translate', 'all'])
def test_world_transforms_keep_points_boxes_velocity_consistent(op):
    boxes, points = _scene()
    v_before, speed_before = boxes[:, 7:9].copy(), np.hypot(boxes[:, 7], boxes[:, 8])
    if op in ('flip_x', 'all'):
        boxes, points = _move(boxes, points, au.flip_along_x(boxes))
        if op == 'flip_x':
            np.testing.assert_allclose(boxes[:, 8], -v_before[:, 1])
    if op in ('flip_y', 'all'):
        boxes, points = _move(boxes, points, au.flip_along_y(boxes))
        if op == 'flip_y':
            np.testing.assert_allclose(boxes[:, 7], -v_before[:, 0])
    if op in ('rot', 'all'):
        boxes, points = _move(boxes, points, au.global_rotation(boxes, np.pi / 2))
        if op == 'rot':  # (vx, vy) -> (-vy, vx)
            np.testing.assert_allclose(boxes[:, 7:9], np.stack([-v_before[:, 1], v_before[:, 0]], 1), atol=1e-9)
    if op in ('scale', 'all'):
        boxes, points = _move(boxes, points, au.global_scaling(boxes, 1.05))
        if op == 'scale':
            np.testing.assert_allclose(np.hypot(boxes[:, 7], boxes[:, 8]), 1.05 * speed_before)
    if op in ('translate', 'all'):
        before = boxes[:, 7:9].copy()
        boxes, points = _move(boxes, points, au.global_translation(boxes, [1.0, -2.0, 0.3]))
        np.testing.assert_allclose(boxes[:, 7:9], before)
    _check_consistent(boxes, points)


def test_transform_points_by_hand():
    """Rotation by 90 degrees, then scale 2, then shift (1, 2, 3), composed as the augmentor does."""
    points = np.array([[1.0, 0.0, 0.5, 7.0], [0.0, -2.0, 1.0, 8.0]], dtype=np.float32)
    boxes = np.zeros((1, 9))
    m = au.global_rotation(boxes, np.pi / 2)
    m = au.global_scaling(boxes, 2.0) @ m
    m = au.global_translation(boxes, [1.0, 2.0, 3.0]) @ m
    au.transform_points(points, m)
    # (1, 0, .5) -> rot (0, 1, .5) -> x2 (0, 2, 1) -> +t (1, 4, 4); (0, -2, 1) -> (2, 0, 1) -> (4, 0, 2) -> (5, 2, 5)
    np.testing.assert_allclose(points, [[1, 4, 4, 7], [5, 2, 5, 8]], atol=1e-6)


def test_random_draws_within_ranges():
    from rdd.datasets.augmentor import DataAugmentor
    from easydict import EasyDict
    aug = DataAugmentor(None, EasyDict({'AUG_CONFIG_LIST': [
        {'NAME': 'random_world_rotation', 'WORLD_ROT_ANGLE': [-0.3925, 0.3925]},
        {'NAME': 'random_world_scaling', 'WORLD_SCALE_RANGE': [0.95, 1.05]}]}), CLASS_NAMES)
    np.random.seed(0)
    angles, scales = [], []
    for _ in range(40):
        boxes, points = _scene()
        yaw0, dx0 = boxes[:, 6].copy(), boxes[:, 3].copy()
        out = aug.forward({'gt_boxes': boxes, 'points': points, 'gt_names': np.array(['car'] * len(boxes))})
        d = np.angle(np.exp(1j * (out['gt_boxes'][:, 6] - yaw0)))
        s = out['gt_boxes'][:, 3] / dx0
        assert np.allclose(d, d[0]) and abs(d[0]) <= 0.3925 + 1e-9
        assert np.allclose(s, s[0]) and 0.95 <= s[0] <= 1.05
        _check_consistent(out['gt_boxes'], out['points'])
        angles.append(d[0])
        scales.append(s[0])
    assert min(angles) < -0.2 and max(angles) > 0.2 and min(scales) < 0.97 and max(scales) > 1.03  # uniform draws
    assert np.all(au.limit_period(np.array([-np.pi - 0.1, np.pi + 0.1, 0.3])) < np.pi)


def _sampler(root, cfg, limit=True, groups=('car:6',)):
    aug = dict(cfg.DATA_AUGMENTOR.AUG_CONFIG_LIST[0])
    aug.update(LIMIT_WHOLE_SCENE=limit, SAMPLE_GROUPS=list(groups))
    from easydict import EasyDict
    return DataBaseSampler(root, EasyDict(aug), CLASS_NAMES)


def test_gt_sampling_collision_and_quota(tmp_path):
    data_path, _, _ = make_mini_root(tmp_path)
    cfg = make_cfg(data_path)
    np.random.seed(1)
    sampler = _sampler(data_path / 'v1.0-mini', cfg)
    assert len(sampler.db_infos['car']) == 18 and len(sampler.db_infos['pedestrian']) == 4
    existing = np.array([[0, 0, -1, 4, 2, 1.5, 0, 0, 0]], dtype=np.float64)
    for _ in range(5):
        d = {'gt_boxes': existing.copy(), 'gt_names': np.array(['car']), 'gt_boxes_mask': np.array([True]),
             'points': np.zeros((10, 5), dtype=np.float32)}
        out = sampler(d)
        n_new = len(out['gt_boxes']) - 1
        assert n_new <= 5  # quota 6 minus the car already there
        assert len(out['gt_names']) == len(out['gt_boxes']) == len(out['gt_boxes_mask'])
        iou = au.bev_iou(out['gt_boxes'], out['gt_boxes'])
        np.fill_diagonal(iou, 0)
        assert iou.max() == 0  # no overlap with the scene nor among samples
        if n_new:
            m = points_in_boxes_mask(out['points'], out['gt_boxes'][1:], margin=0.0)
            assert (m.sum(0) >= 5).all()  # every sampled box carries its database points
    # a scene box that covers every database box: nothing can be pasted
    blocker = np.array([[0, 0, -1, 200, 200, 10, 0, 0, 0]], dtype=np.float64)
    out = sampler({'gt_boxes': blocker, 'gt_names': np.array(['ignore']), 'gt_boxes_mask': np.array([False]),
                   'points': np.zeros((3, 5), dtype=np.float32)})
    assert len(out['gt_boxes']) == 1 and len(out['points']) == 3


def test_dataset_augmented_points_stay_in_boxes(tmp_path):
    from rdd.datasets.nuscenes_dataset import NuScenesDataset
    data_path, _, _ = make_mini_root(tmp_path)
    np.random.seed(3)
    for gt_sampling in (False, True):
        ds = NuScenesDataset(make_cfg(data_path, gt_sampling=gt_sampling), CLASS_NAMES, training=True)
        for i in range(len(ds)):
            d = ds[i]
            boxes, pts = d['gt_boxes'], d['points']
            assert boxes.shape[1] == 10 and np.isfinite(boxes).all()
            assert (np.abs(boxes[:, 6]) <= np.pi + 1e-6).all()
            counts = points_in_boxes_mask(pts, boxes, margin=0.0).sum(0)
            assert (counts >= 5).all(), counts
            n_scene = len(ds.infos[i]['gt_names']) - 1  # minus the zero-point 'ignore' box
            assert (counts[:n_scene] >= PTS_PER_BOX).all(), counts
            iou = au.bev_iou(boxes, boxes)
            np.fill_diagonal(iou, 0)
            assert iou.max() == 0


def test_unknown_augmentation_is_an_error(tmp_path):
    from rdd.datasets.augmentor import DataAugmentor
    from easydict import EasyDict
    with pytest.raises(ValueError, match='random_world_shear'):
        DataAugmentor(tmp_path, EasyDict({'DISABLE_AUG_LIST': [], 'AUG_CONFIG_LIST': [{'NAME': 'random_world_shear'}]}),
                      CLASS_NAMES)
