"""Helpers for the data tests: a tiny hand-made OpenPCDet-format info set (no devkit tables) and a config.

The scene content is chosen so invariants can be checked exactly: sweep ``j`` stores intensity ``100 + j`` and
``time_lag`` ``0.05 (j + 1)``; its points are stored in the sweep's own frame and moved into the key frame by
``transform_matrix``; each sweep also holds points within 1 m of the sensor, which loading must drop.
"""
import pickle
from pathlib import Path

import numpy as np
from easydict import EasyDict

CLASS_NAMES = ['car', 'truck', 'construction_vehicle', 'bus', 'trailer', 'barrier', 'motorcycle', 'bicycle',
               'pedestrian', 'traffic_cone']
VERSION = 'v1.0-mini'
NUM_SWEEPS = 9
PTS_PER_BOX = 60


def sweep_transform(j):
    """4x4 transform of sweep ``j`` into the key frame (a rotation about z and a shift)."""
    a = 0.01 * (j + 1)
    t = np.eye(4)
    t[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    t[:3, 3] = [-0.6 * (j + 1), 0.1 * j, 0.0]
    return t


def _box_points(rng, box, n):
    local = rng.uniform(-0.45, 0.45, (n, 3)) * box[3:6]
    c, s = np.cos(box[6]), np.sin(box[6])
    xy = np.stack([local[:, 0] * c - local[:, 1] * s, local[:, 0] * s + local[:, 1] * c], 1) + box[:2]
    return np.concatenate([xy, local[:, 2:3] + box[2]], 1)


def _scene_boxes(rng, i):
    """Boxes (M, 9) and names of sample i: cars everywhere, pedestrians in 2 samples, a bus in 1, an ignored box."""
    specs = [('car', (4.5, 1.9, 1.6))] * 3
    if i in (1, 2):
        specs += [('pedestrian', (0.7, 0.7, 1.8))] * 2
    if i == 3:
        specs += [('bus', (11.0, 2.9, 3.4))]
    specs += [('ignore', (1.0, 1.0, 1.0))]
    boxes, names = [], []
    for k, (name, size) in enumerate(specs):
        x = -40 + 80 * (k + 0.5) / len(specs) + rng.uniform(-1, 1)
        y = rng.uniform(-30, 30)
        boxes.append([x, y, -1.8 + size[2] / 2, *size, rng.uniform(-np.pi, np.pi), rng.uniform(-3, 3),
                      rng.uniform(-3, 3)])
        names.append(name)
    boxes = np.array(boxes)
    if i == 0:
        boxes[0, 7:9] = np.nan  # an annotation without velocity (first frame of a track)
    return boxes, np.array(names)


def make_mini_root(tmp_path, num_samples=6, seed=0, num_background=3000):
    """Write the mini root under ``tmp_path``; returns (data_path, train_info, db_info) paths."""
    rng = np.random.default_rng(seed)
    root = Path(tmp_path) / VERSION
    lidar_dir = root / 'samples' / 'LIDAR_TOP'
    sweep_dir = root / 'sweeps' / 'LIDAR_TOP'
    db_dir = root / 'gt_database_10sweeps_withvelo'
    for d in (lidar_dir, sweep_dir, db_dir):
        d.mkdir(parents=True, exist_ok=True)
    infos, db_infos = [], {}
    for i in range(num_samples):
        boxes, names = _scene_boxes(rng, i)
        bg = np.concatenate([rng.uniform(-60, 60, (num_background, 2)), np.full((num_background, 1), -1.85)], 1)
        obj = [_box_points(rng, b, PTS_PER_BOX) for b in boxes]
        near = np.concatenate([rng.uniform(-0.9, 0.9, (20, 2)), np.zeros((20, 1))], 1)
        xyz = np.concatenate([bg] + obj + [near], 0)
        key = np.concatenate([xyz, rng.uniform(0, 50, (len(xyz), 1)), np.zeros((len(xyz), 1))], 1)
        lidar_rel = f'samples/LIDAR_TOP/sample_{i}.pcd.bin'
        key.astype(np.float32).tofile(root / lidar_rel)
        sweeps = []
        for j in range(NUM_SWEEPS):
            rel = f'sweeps/LIDAR_TOP/sample_{i}_sweep_{j}.pcd.bin'
            if i == num_samples - 1 and j > 0:  # scene start: OpenPCDet pads with the first sweep
                sweeps.append(sweeps[-1])
                continue
            pts_key = np.concatenate([bg[:500] + [0.01 * j, 0, 0], obj[0][:10]], 0)
            tm = sweep_transform(j)
            local = (np.linalg.inv(tm) @ np.concatenate([pts_key.T, np.ones((1, len(pts_key)))]))[:3].T
            local = np.concatenate([local, near], 0)  # near-sensor points, dropped on load
            arr = np.concatenate([local, np.full((len(local), 1), 100.0 + j), np.zeros((len(local), 1))], 1)
            arr.astype(np.float32).tofile(root / rel)
            sweeps.append({'lidar_path': rel, 'sample_data_token': f'sd_{i}_{j}', 'transform_matrix': tm,
                           'time_lag': 0.05 * (j + 1)})
        infos.append({'lidar_path': lidar_rel, 'token': f'sample_{i}', 'sweeps': sweeps,
                      'ref_from_car': np.eye(4), 'car_from_global': np.eye(4), 'timestamp': 1.0 + i,
                      'gt_boxes': boxes, 'gt_names': names, 'gt_boxes_velocity': np.zeros((len(boxes), 3)),
                      'num_lidar_pts': np.array([PTS_PER_BOX] * (len(boxes) - 1) + [0]),
                      'num_radar_pts': np.zeros(len(boxes), dtype=int), 'gt_boxes_token': names.copy()})
        for k, (b, n) in enumerate(zip(boxes, names)):
            pts = np.concatenate([obj[k] - b[:3], rng.uniform(0, 50, (len(obj[k]), 1)),
                                  rng.choice([0.0, 0.05], (len(obj[k]), 1))], 1).astype(np.float32)
            rel = f'gt_database_10sweeps_withvelo/{i}_{n}_{k}.bin'
            pts.tofile(root / rel)
            db_infos.setdefault(n, []).append({'name': n, 'path': rel, 'image_idx': i, 'gt_idx': k,
                                               'box3d_lidar': b.astype(np.float32), 'num_points_in_gt': len(pts)})
    with open(root / 'infos_train.pkl', 'wb') as f:
        pickle.dump(infos, f)
    with open(root / 'dbinfos.pkl', 'wb') as f:
        pickle.dump(db_infos, f)
    return Path(tmp_path), root / 'infos_train.pkl', root / 'dbinfos.pkl'


def make_cfg(data_path, info_name='infos_train.pkl', db_name='dbinfos.pkl', augment=True, gt_sampling=True,
             max_voxels=60000, version=VERSION):
    """OpenPCDet nuscenes_dataset.yaml-shaped config over the mini root."""
    augs = []
    if gt_sampling:
        augs.append({'NAME': 'gt_sampling', 'DB_INFO_PATH': [db_name],
                     'PREPARE': {'filter_by_min_points': ['car:5', 'pedestrian:5', 'bus:5']},
                     'SAMPLE_GROUPS': ['car:6', 'pedestrian:4', 'bus:2'], 'NUM_POINT_FEATURES': 5,
                     'DATABASE_WITH_FAKELIDAR': False, 'REMOVE_EXTRA_WIDTH': [0.0, 0.0, 0.0],
                     'LIMIT_WHOLE_SCENE': True})
    augs += [{'NAME': 'random_world_flip', 'ALONG_AXIS_LIST': ['x', 'y']},
             {'NAME': 'random_world_rotation', 'WORLD_ROT_ANGLE': [-0.3925, 0.3925]},
             {'NAME': 'random_world_scaling', 'WORLD_SCALE_RANGE': [0.95, 1.05]},
             {'NAME': 'random_world_translation', 'NOISE_TRANSLATE_STD': [0.5, 0.5, 0.5]}]
    return EasyDict({
        'DATASET': 'NuScenesDataset', 'DATA_PATH': str(data_path), 'VERSION': version, 'MAX_SWEEPS': 10,
        'PRED_VELOCITY': True, 'SET_NAN_VELOCITY_TO_ZEROS': True, 'FILTER_MIN_POINTS_IN_GT': 1,
        'BALANCED_RESAMPLING': False, 'DATA_SPLIT': {'train': 'train', 'test': 'val'},
        'INFO_PATH': {'train': [info_name], 'test': [info_name]},
        'POINT_CLOUD_RANGE': [-54.0, -54.0, -5.0, 54.0, 54.0, 3.0],
        'DATA_AUGMENTOR': {'DISABLE_AUG_LIST': ['placeholder'] if augment else [a['NAME'] for a in augs],
                           'AUG_CONFIG_LIST': augs},
        'POINT_FEATURE_ENCODING': {'encoding_type': 'absolute_coordinates_encoding',
                                   'used_feature_list': ['x', 'y', 'z', 'intensity', 'timestamp'],
                                   'src_feature_list': ['x', 'y', 'z', 'intensity', 'timestamp']},
        'DATA_PROCESSOR': [{'NAME': 'mask_points_and_boxes_outside_range', 'REMOVE_OUTSIDE_BOXES': True},
                           {'NAME': 'shuffle_points', 'SHUFFLE_ENABLED': {'train': True, 'test': True}},
                           {'NAME': 'transform_points_to_voxels', 'VOXEL_SIZE': [0.075, 0.075, 0.2],
                            'MAX_POINTS_PER_VOXEL': 10,
                            'MAX_NUMBER_OF_VOXELS': {'train': max_voxels, 'test': max_voxels}}]})
