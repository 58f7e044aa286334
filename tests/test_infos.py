"""OpenPCDet-schema info creation through the devkit (on the synthetic root)."""
import pickle

import numpy as np
import pytest

from rdd.datasets.nuscenes_infos import MAP_NAME_FROM_GENERAL_TO_DETECTION
from rdd.ops.points_in_boxes import points_in_boxes_mask

# OpenPCDet's nuscenes_utils.fill_trainval_infos, field by field: (type, dtype kind, shape; None = any length)
INFO_SCHEMA = {
    'lidar_path': (str, None, None), 'cam_front_path': (str, None, None), 'token': (str, None, None),
    'cam_intrinsic': (np.ndarray, 'f8', (3, 3)), 'ref_from_car': (np.ndarray, 'f8', (4, 4)),
    'car_from_global': (np.ndarray, 'f8', (4, 4)), 'timestamp': (float, None, None), 'sweeps': (list, None, None),
    'gt_boxes': (np.ndarray, 'f8', (None, 9)), 'gt_boxes_velocity': (np.ndarray, 'f8', (None, 3)),
    'gt_names': (np.ndarray, 'U', (None,)), 'gt_boxes_token': (np.ndarray, 'U', (None,)),
    'num_lidar_pts': (np.ndarray, 'i8', (None,)), 'num_radar_pts': (np.ndarray, 'i8', (None,)),
}
SWEEP_KEYS = {'lidar_path', 'sample_data_token', 'transform_matrix', 'global_from_car', 'car_from_current',
              'time_lag'}


def _infos(path):
    with open(path, 'rb') as f:
        return pickle.load(f)


def _read(root, rel):
    return np.fromfile(f'{root}/{rel}', dtype=np.float32).reshape(-1, 5)


def test_info_schema_matches_openpcdet(synth_nusc):
    train, val = _infos(synth_nusc.train_info_path), _infos(synth_nusc.val_info_path)
    assert len(train) == 8 and len(val) == 4
    assert synth_nusc.train_info_path.endswith('nuscenes_infos_10sweeps_train.pkl')
    for info in train + val:
        assert set(info) == set(INFO_SCHEMA)
        n = len(info['gt_boxes'])
        for key, (typ, kind, shape) in INFO_SCHEMA.items():
            value = info[key]
            assert isinstance(value, typ), key
            if kind is not None:
                assert value.dtype.kind + (str(value.dtype.itemsize) if kind != 'U' else '') == kind, key
                assert value.shape == tuple(n if s is None else s for s in shape), key
        assert info['lidar_path'].startswith('samples/LIDAR_TOP/') and info['lidar_path'].endswith('.pcd.bin')
        assert info['cam_front_path'].startswith('samples/CAM_FRONT/')
        assert info['gt_boxes_token'].dtype.itemsize == 32 * 4  # '<U32' tokens
        assert set(info['gt_names']) <= set(MAP_NAME_FROM_GENERAL_TO_DETECTION.values())
        assert np.all(info['num_lidar_pts'] + info['num_radar_pts'] > 0)  # OpenPCDet's filter
        np.testing.assert_array_equal(info['gt_boxes'][:, 7:9], info['gt_boxes_velocity'][:, :2])
        assert len(info['sweeps']) == 9
        for k, sweep in enumerate(info['sweeps']):
            assert set(sweep) == SWEEP_KEYS
            assert sweep['lidar_path'].startswith('sweeps/LIDAR_TOP/')
            assert sweep['transform_matrix'].shape == (4, 4) and sweep['transform_matrix'].dtype == np.float64
            np.testing.assert_allclose(sweep['transform_matrix'], info['ref_from_car'] @ info['car_from_global']
                                       @ sweep['global_from_car'] @ sweep['car_from_current'])
            assert sweep['time_lag'] == pytest.approx(0.05 * (k + 1), abs=1e-5)


def test_gt_boxes_are_in_keyframe_lidar_frame(synth_nusc):
    """Recounting key-frame points in gt_boxes gives the annotations' num_lidar_pts exactly; moving objects
    head where they move; the ego drives along LiDAR +y."""
    infos = _infos(synth_nusc.train_info_path)
    moving = 0
    for info in infos:
        pts = _read(synth_nusc.root, info['lidar_path'])
        boxes = info['gt_boxes']
        counts = points_in_boxes_mask(pts[:, :3], boxes[:, :7].astype(np.float32), margin=0.0).sum(0)
        np.testing.assert_array_equal(counts, info['num_lidar_pts'])
        speed = np.hypot(boxes[:, 7], boxes[:, 8])
        sel = (speed > 1.0) & np.isin(info['gt_names'], ['car', 'truck', 'bus', 'motorcycle', 'bicycle'])
        dev = np.angle(np.exp(1j * (np.arctan2(boxes[sel, 8], boxes[sel, 7]) - boxes[sel, 6])))
        assert np.all(np.abs(dev) < 1e-3)  # vehicles drive straight, heading = direction of motion
        moving += sel.sum()
    assert moving > 10
    for cur, nxt in zip(infos[:3], infos[1:4]):  # consecutive samples of the first train scene
        ego_next = np.linalg.inv(nxt['car_from_global'])[:, 3]
        step = cur['ref_from_car'] @ cur['car_from_global'] @ ego_next - cur['ref_from_car'] @ [0, 0, 0, 1]
        assert abs(step[0]) < 1e-6 and abs(step[2]) < 1e-6 and step[1] >= 0
        assert nxt['timestamp'] - cur['timestamp'] == pytest.approx(0.5)


def test_sweeps_align_with_the_key_frame(synth_nusc):
    """Points of parked objects from past sweeps, moved with transform_matrix, land in the key-frame box."""
    ratios = []
    for info in _infos(synth_nusc.train_info_path)[::2]:
        boxes = info['gt_boxes']
        static = (np.hypot(boxes[:, 7], boxes[:, 8]) < 1e-6) & (info['num_lidar_pts'] >= 20)
        ref = info['num_lidar_pts'][static].sum()
        for sweep in info['sweeps']:
            pts = _read(synth_nusc.root, sweep['lidar_path'])[:, :3].astype(np.float64)
            pts = (sweep['transform_matrix'] @ np.vstack([pts.T, np.ones(len(pts))]))[:3].T
            ratios.append(points_in_boxes_mask(pts, boxes[static, :7], margin=0.0).sum() / ref)
    assert 0.85 < np.median(ratios) < 1.15


def test_gt_database(synth_nusc):
    with open(synth_nusc.dbinfos_path, 'rb') as f:
        db = pickle.load(f)
    infos = _infos(synth_nusc.train_info_path)
    assert set(db) == set(synth_nusc.class_names)
    total = sum(len(i['gt_boxes']) for i in infos)
    assert sum(len(v) for v in db.values()) == total
    for name, entries in db.items():
        for e in entries:
            assert set(e) == {'name', 'path', 'image_idx', 'gt_idx', 'box3d_lidar', 'num_points_in_gt'}
            assert e['name'] == name and e['path'].startswith('gt_database_10sweeps_withvelo/')
            assert e['path'].endswith(f"/{e['image_idx']}_{name}_{e['gt_idx']}.bin")
            box = infos[e['image_idx']]['gt_boxes'][e['gt_idx']]
            np.testing.assert_array_equal(e['box3d_lidar'], box)
            pts = _read(synth_nusc.root, e['path'])
            assert len(pts) == e['num_points_in_gt'] >= infos[e['image_idx']]['num_lidar_pts'][e['gt_idx']] * 0.5
            if len(pts):  # relative to the box centre, inside the box
                c, s = np.cos(box[6]), np.sin(box[6])
                assert np.all(np.abs(c * pts[:, 0] + s * pts[:, 1]) <= box[3] / 2 + 1e-4)
                assert np.all(np.abs(pts[:, 2]) <= box[5] / 2 + 1e-4)
                lags = np.unique(pts[:, 4])
                assert np.allclose(lags, np.round(lags / 0.05) * 0.05, atol=1e-5) and lags.max() < 0.451


def test_box_index_of_points_matches_ops_on_overlapping_boxes():
    from rdd.datasets.gt_database import box_index_of_points
    from rdd.ops.points_in_boxes import points_in_boxes_index
    rng = np.random.default_rng(0)
    points = rng.uniform(-10, 10, (20000, 5)).astype(np.float32)
    points[:, 2] *= 0.2
    boxes = np.concatenate([rng.uniform(-8, 8, (30, 3)), rng.uniform(0.5, 4, (30, 3)),
                            rng.uniform(-3, 3, (30, 1))], axis=1).astype(np.float32)
    boxes[15:, :2] = boxes[:15, :2] + 0.5  # overlapping pairs: the first box wins
    expected = points_in_boxes_index(points[:, :3], boxes, margin=0.0)
    got = box_index_of_points(points, boxes)
    assert (expected >= 0).sum() > 1000 and np.array_equal(got, expected)
    assert np.all(box_index_of_points(points[:0], boxes) == -1)
    assert np.all(box_index_of_points(points, boxes[:0]) == -1)
